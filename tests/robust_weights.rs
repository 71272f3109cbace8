//! A table of corrupt checkpoints and configs (in the spirit of llama.cpp's
//! test-gguf), built from the tiny fixtures in temp directories: each one is
//! an error of the right kind with a message naming the problem, or (for
//! unused tensors) a load that reports them.

mod robust_util;

use std::path::Path;
use std::time::{Duration, Instant};

use robust_util::*;
use vitrine::{DType, Device, Encoder, Error, HostTensor};

const FC2_1: &str = "radio_model.model.blocks.1.mlp.fc2.weight";

fn load(dir: &Path) -> Result<Encoder, Error> {
    Encoder::from_dir(dir, Device::Cpu, DType::F32)
}

/// Loads and expects a `Checkpoint` error whose message holds every `parts`.
fn expect_checkpoint_err(dir: &Path, parts: &[&str]) {
    let t = Instant::now();
    let e = load(dir).err().expect("a corrupt checkpoint must not load");
    assert!(t.elapsed() < Duration::from_secs(5), "bounded time");
    assert!(matches!(e, Error::Checkpoint { .. }), "kind: {e:?}");
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "`{msg}` should mention `{p}`");
    }
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture("radio_v4").join("model.safetensors")).unwrap()
}

fn pixels() -> HostTensor {
    let v: Vec<f32> = (0..3 * 32 * 32).map(|i| (i % 97) as f32 / 97.0).collect();
    HostTensor::from_f32(vec![1, 3, 32, 32], v).unwrap()
}

#[test]
fn truncated_file() {
    let b = fixture_bytes();
    let dir = model_dir("trunc", "radio_v4", Some(b[..b.len() - 100].to_vec()), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file", "model.safetensors"]);
}

#[test]
fn empty_and_tiny_files() {
    for (name, bytes) in [("empty", vec![]), ("tiny", vec![1u8, 2, 3])] {
        let dir = model_dir(name, "radio_v4", Some(bytes), None);
        expect_checkpoint_err(&dir, &["invalid safetensors file"]);
    }
}

#[test]
fn header_length_past_the_end_of_the_file() {
    let mut b = fixture_bytes();
    let n = b.len() as u64 + 1000;
    b[..8].copy_from_slice(&n.to_le_bytes());
    let dir = model_dir("hdrlen", "radio_v4", Some(b.clone()), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file"]);
    // An absurd header length is refused without allocating it.
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let dir = model_dir("hdrmax", "radio_v4", Some(b), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file"]);
}

#[test]
fn header_that_is_not_json() {
    let mut b = fixture_bytes();
    b[8] = b'#';
    let dir = model_dir("hdrjson", "radio_v4", Some(b), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file"]);
}

#[test]
fn overlapping_and_gapped_offsets() {
    let t = read_tensors(&fixture("radio_v4").join("model.safetensors"));
    let (mut h, d) = layout(&t);
    // The second tensor starts inside the first one.
    let second = &t[1].name;
    let o = h[second]["data_offsets"].as_array().unwrap().clone();
    let (s, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
    h[second]["data_offsets"] = serde_json::json!([s - 4, e - 4]);
    let dir = model_dir("overlap", "radio_v4", Some(encode(&h, &d)), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file"]);
    // A gap between tensors.
    let (mut h, mut d) = layout(&t);
    for (_, v) in h.iter_mut().filter(|(k, _)| *k != &t[0].name) {
        let o = v["data_offsets"].as_array().unwrap().clone();
        v["data_offsets"] =
            serde_json::json!([o[0].as_u64().unwrap() + 8, o[1].as_u64().unwrap() + 8]);
    }
    d.extend_from_slice(&[0; 8]);
    let dir = model_dir("gap", "radio_v4", Some(encode(&h, &d)), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file"]);
}

#[test]
fn declared_size_disagrees_with_the_offsets() {
    let t = read_tensors(&fixture("radio_v4").join("model.safetensors"));
    let (mut h, d) = layout(&t);
    h[FC2_1]["shape"] = serde_json::json!([48, 193]);
    let dir = model_dir("sizeinfo", "radio_v4", Some(encode(&h, &d)), None);
    expect_checkpoint_err(&dir, &["invalid safetensors file"]);
}

#[test]
fn integer_dtype_where_a_float_is_expected() {
    let dir = edited_model("dtype", "radio_v4", |t| {
        let x = t.iter_mut().find(|x| x.name == FC2_1).unwrap();
        x.dtype = "I32".into();
    });
    expect_checkpoint_err(&dir, &[FC2_1, "dtype I32", "floating-point"]);
}

#[test]
fn shape_that_disagrees_with_the_config() {
    let name = "radio_model.model.blocks.0.norm1.weight";
    let dir = edited_model("shape", "radio_v4", |t| {
        t.iter_mut().find(|x| x.name == name).unwrap().shape = vec![24, 2];
    });
    expect_checkpoint_err(
        &dir,
        &[
            "blocks.0.norm1.weight",
            "[24, 2]",
            "the config implies [48]",
        ],
    );
}

#[test]
fn scalar_where_a_matrix_is_expected() {
    // The MLP width is read from fc1's first axis before any shape check.
    let fc1 = "radio_model.model.blocks.0.mlp.fc1.weight";
    let dir = edited_model("scalar_fc1", "radio_v4", |t| {
        let x = t.iter_mut().find(|x| x.name == fc1).unwrap();
        x.shape = vec![];
        x.bytes.truncate(4);
    });
    expect_checkpoint_err(&dir, &["blocks.0.mlp.fc1.weight", "expected a matrix"]);
    // InternViT (HF layout) stacks q, k and v by rows.
    let k = "encoder.layer.0.attention.k_proj.weight";
    let dir = edited_model("scalar_k", "internvit_300m", |t| {
        let x = t.iter_mut().find(|x| x.name == k).unwrap();
        x.shape = vec![];
        x.bytes.truncate(4);
    });
    expect_checkpoint_err(&dir, &["k_proj.weight", "scalar, not rows"]);
}

#[test]
fn negative_summary_index() {
    let dir = edited_model("neg_summary", "radio_v4", |t| {
        let x = t
            .iter_mut()
            .find(|x| x.name == "radio_model.summary_idxs")
            .unwrap();
        x.bytes = [-1i64, 1].iter().flat_map(|i| i.to_le_bytes()).collect();
    });
    expect_checkpoint_err(&dir, &["summary_idxs [-1, 1] hold a negative index"]);
}

#[test]
fn missing_tensor() {
    let name = "radio_model.model.blocks.1.attn.proj.weight";
    let dir = edited_model("missing", "radio_v4", |t| t.retain(|x| x.name != name));
    expect_checkpoint_err(&dir, &["missing tensor", "blocks.1.attn.proj.weight"]);
}

#[test]
fn extra_tensors_are_reported_not_fatal() {
    let dir = edited_model("extra", "radio_v4", |t| {
        t.push(Raw {
            name: "adaptor.head.weight".into(),
            dtype: "F32".into(),
            shape: vec![2, 2],
            bytes: vec![0; 16],
        });
    });
    let enc = load(&dir).expect("extra tensors load");
    assert_eq!(
        enc.load_report().unused_tensors,
        vec!["adaptor.head.weight".to_string()]
    );
    let reference = load(&fixture("radio_v4")).unwrap();
    assert_eq!(
        enc.forward_pixels(&pixels()).unwrap(),
        reference.forward_pixels(&pixels()).unwrap()
    );
}

#[test]
fn duplicate_tensor_across_shards_and_escaping_shard_names() {
    let dir = temp_dir("shards");
    let src = fixture("radio_v4");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("a.safetensors")).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("b.safetensors")).unwrap();
    let index = serde_json::json!({"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    expect_checkpoint_err(&dir, &["appears in two shards"]);
    let index = serde_json::json!({"weight_map": {"x": "../a.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    expect_checkpoint_err(&dir, &["must be a plain file name"]);
    std::fs::write(dir.join("model.safetensors.index.json"), "{not json").unwrap();
    expect_checkpoint_err(&dir, &["invalid index"]);
}

#[test]
fn non_finite_weights_are_found_by_the_opt_in_check_and_by_the_output_check() {
    let dir = edited_model("nan", "radio_v4", |t| {
        let x = t.iter_mut().find(|x| x.name == FC2_1).unwrap();
        let mut v = x.f32s();
        v[5] = f32::NAN;
        v[9] = f32::INFINITY;
        x.set_f32s(&v);
    });
    // Loading does not scan values (that costs a pass over the weights)...
    let enc = load(&dir).expect("loads");
    // ...the opt-in check does, and names the tensor.
    let e = enc.check_weights().unwrap_err();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(FC2_1) && msg.contains("2 non-finite values") && msg.contains("flat index 5"),
        "{msg}"
    );
    // The fixture itself passes.
    load(&fixture("radio_v4")).unwrap().check_weights().unwrap();
    // Outputs are checked anyway: the error names the image and block 1.
    let e = enc.forward_pixels(&pixels()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("image 0") && msg.contains("first non-finite after block 1 of 2"),
        "{msg}"
    );
}

#[test]
fn weights_past_the_f16_range_are_flagged_when_loading_as_f16() {
    let dir = edited_model("f16range", "radio_v4", |t| {
        let x = t.iter_mut().find(|x| x.name == FC2_1).unwrap();
        let mut v = x.f32s();
        v[0] = 1.0e5;
        x.set_f32s(&v);
    });
    load(&dir).unwrap().check_weights().expect("fine in f32");
    let e = Encoder::from_dir(&dir, Device::Cpu, DType::F16)
        .unwrap()
        .check_weights()
        .unwrap_err();
    assert!(e.to_string().contains("past the f16 range"), "{e}");
}

fn expect_config_err(dir: &Path, unsupported: bool, parts: &[&str]) {
    let e = load(dir).err().expect("a bad config must not load");
    if unsupported {
        assert!(matches!(e, Error::UnsupportedModel(_)), "kind: {e:?}");
    } else {
        assert!(matches!(e, Error::Checkpoint { .. }), "kind: {e:?}");
    }
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "`{msg}` should mention `{p}`");
    }
}

#[test]
fn inconsistent_or_unknown_configs() {
    use serde_json::json;
    let cases: Vec<(&str, &str, serde_json::Value, bool, Vec<&str>)> = vec![
        (
            "heads",
            "num_attention_heads",
            json!(5),
            false,
            vec!["hidden size 48 is not divisible by 5 heads"],
        ),
        (
            "heads0",
            "num_attention_heads",
            json!(0),
            false,
            vec!["not divisible by 0 heads"],
        ),
        (
            "patch0",
            "patch_size",
            json!(0),
            false,
            vec!["`patch_size` must be at least 1"],
        ),
        (
            "patchneg",
            "patch_size",
            json!(-4),
            false,
            vec!["`patch_size` must be a non-negative integer"],
        ),
        (
            "hiddenstr",
            "hidden_size",
            json!("48"),
            false,
            vec!["`hidden_size` must be a non-negative integer"],
        ),
        (
            "depth0",
            "num_hidden_layers",
            json!(0),
            false,
            vec!["`num_hidden_layers` is 0"],
        ),
        (
            "patchhuge",
            "patch_size",
            json!(4_294_967_296u64),
            false,
            vec!["`patch_size` = 4294967296 is out of range"],
        ),
        (
            "mtype",
            "model_type",
            json!("llama"),
            true,
            vec!["model_type `llama`"],
        ),
        (
            "act",
            "hidden_act",
            json!("relu"),
            true,
            vec!["hidden_act `relu`"],
        ),
        (
            "width",
            "hidden_size",
            json!(60),
            false,
            vec!["has shape", "the config implies"],
        ),
    ];
    for (name, key, value, unsupported, parts) in cases {
        let dir = edited_config(name, "radio_v4", |c| {
            c.insert(key.into(), value);
        });
        expect_config_err(&dir, unsupported, &parts);
    }
    let dir = edited_config("nomtype", "radio_v4", |c| {
        c.remove("model_type");
    });
    expect_config_err(&dir, true, &["neither `model_type` nor RADIO `args`"]);
    // InternViT: an image size off the patch grid.
    let dir = edited_config("ivimg", "internvit_300m", |c| {
        c.insert("image_size".into(), json!(30));
    });
    expect_config_err(
        &dir,
        false,
        &["image_size 30 is not a multiple of patch_size 4"],
    );
    // Not JSON, and absent.
    let dir = model_dir(
        "cfgjson",
        "radio_v4",
        None,
        Some("{\"model_type\": ".into()),
    );
    expect_config_err(&dir, false, &["config.json is not valid JSON"]);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = load(&dir).err().unwrap();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("config.json"),
        "{e:?}"
    );
}
