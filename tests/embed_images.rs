//! `embed` in image mode: every output format read back and checked, mixed
//! sizes, batch-composition invariance, the bad-image path, hub ids through
//! an offline cache, and clean errors.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use vitrine::{DType, Device, Encoder};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn model(name: &str) -> String {
    root()
        .join("tests/fixtures/models")
        .join(name)
        .display()
        .to_string()
}

fn images_dir() -> String {
    root().join("assets/images").display().to_string()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::embed_binary());
    c.args(args);
    // The tests run in parallel: one compute thread per child keeps the
    // children's thread pools from spinning against each other on small CPUs.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        c.env("RAYON_NUM_THREADS", "1");
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vitrine-embed-images-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[derive(Debug)]
enum Arr {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

impl Arr {
    fn f32(&self) -> (&[usize], &[f32]) {
        match self {
            Arr::F32(s, v) => (s, v),
            other => panic!("expected f32, got {other:?}"),
        }
    }
    fn i64(&self) -> (&[usize], &[i64]) {
        match self {
            Arr::I64(s, v) => (s, v),
            other => panic!("expected i64, got {other:?}"),
        }
    }
}

fn read_safetensors(path: &Path) -> (BTreeMap<String, Arr>, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, v) in st.tensors() {
        let shape = v.shape().to_vec();
        let a = match v.dtype() {
            Dtype::F32 => Arr::F32(
                shape,
                v.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I64 => Arr::I64(
                shape,
                v.data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            d => panic!("{name}: {d:?}"),
        };
        out.insert(name, a);
    }
    (
        out,
        meta.metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    )
}

/// Parses a `.npy` (version 1.0, little-endian f4 / i8 / U): (descr, shape, payload).
fn parse_npy(bytes: &[u8]) -> (String, Vec<usize>, Vec<u8>) {
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "npy magic");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "npy header alignment");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let dims = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, shape, bytes[10 + hlen..].to_vec())
}

fn npy_to_arr(bytes: &[u8]) -> Arr {
    let (descr, shape, data) = parse_npy(bytes);
    match descr.as_str() {
        "<f4" => Arr::F32(
            shape,
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        "<i8" => Arr::I64(
            shape,
            data.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        d => panic!("unexpected npy dtype {d}"),
    }
}

fn npy_strings(bytes: &[u8]) -> Vec<String> {
    let (descr, shape, data) = parse_npy(bytes);
    let width: usize = descr.strip_prefix("<U").unwrap().parse().unwrap();
    let n = shape.first().copied().unwrap_or(1);
    (0..n)
        .map(|i| {
            data[i * width * 4..(i + 1) * width * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .take_while(|&c| c != 0)
                .map(|c| char::from_u32(c).unwrap())
                .collect()
        })
        .collect()
}

fn sample_paths() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("assets/images"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    v.sort();
    v
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn embeds_the_sample_images_in_every_format() {
    let paths = sample_paths();
    let n = paths.len();
    let enc = Encoder::from_dir(Path::new(&model("radio_v4")), Device::Cpu, DType::F32).unwrap();
    // Library results, one image at a time: the reference for every file.
    let single: Vec<vitrine::Embedding> = paths
        .iter()
        .map(|p| enc.encode_images([p.as_str()]).remove(0).unwrap())
        .collect();

    // safetensors: summary, features (packed: sizes differ), last_hidden_state, intermediates.
    let st = temp("all.safetensors");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            &images_dir(),
            "--output",
            st.to_str().unwrap(),
            "--outputs",
            "summary,features,last_hidden_state",
            "--intermediates",
            "0,1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("embedded {n}/{n} images")),
        "{}",
        err(&o)
    );
    let (t, meta) = read_safetensors(&st);
    let listed: Vec<String> = serde_json::from_str(&meta["paths"]).unwrap();
    assert_eq!(listed, paths, "paths recorded, sorted, in row order");
    assert_eq!(meta["token_layout"], "packed");
    assert_eq!(meta["family"], "radio");
    let (gs, grid) = t["grid"].i64();
    assert_eq!(gs, &[n, 2]);
    let (ss, summary) = t["summary"].f32();
    assert_eq!(ss, &[n, 96]);
    let (_, feats) = t["features"].f32();
    let (_, foff) = t["features_offsets"].i64();
    let (_, lhs) = t["last_hidden_state"].f32();
    let (_, loff) = t["last_hidden_state_offsets"].i64();
    let (_, inter1) = t["intermediate_1"].f32();
    assert!(t.contains_key("intermediate_0_offsets"));
    for i in 0..n {
        let e = &single[i];
        assert_eq!(
            (grid[2 * i] as usize, grid[2 * i + 1] as usize),
            e.grid,
            "{}",
            paths[i]
        );
        let hw = (grid[2 * i] * grid[2 * i + 1]) as usize;
        assert_eq!((foff[i + 1] - foff[i]) as usize, hw);
        assert_eq!(
            (loff[i + 1] - loff[i]) as usize,
            hw + 10,
            "3 cls + 7 registers"
        );
        close(
            &summary[i * 96..(i + 1) * 96],
            &enc.summary_of(e).to_f32_vec(),
            1e-5,
            "summary",
        );
        let f = &feats[foff[i] as usize * 48..foff[i + 1] as usize * 48];
        close(f, &enc.features_of(e).to_f32_vec(), 1e-5, "features");
        let l = &lhs[loff[i] as usize * 48..loff[i + 1] as usize * 48];
        close(
            l,
            &e.last_hidden_state.to_f32_vec(),
            1e-5,
            "last_hidden_state",
        );
        // The last block's output is last_hidden_state (no final norm).
        let b = &inter1[loff[i] as usize * 48..loff[i + 1] as usize * 48];
        close(b, l, 1e-6, "intermediate_1 == last_hidden_state");
    }

    // npz: the same arrays plus paths and metadata.
    let npz = temp("all.npz");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            &images_dir(),
            "--output",
            npz.to_str().unwrap(),
            "--outputs",
            "summary,features",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&npz).unwrap()).unwrap();
    let mut members = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        members.insert(f.name().unwrap().to_string(), b);
    }
    let names: Vec<&str> = members.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "features.npy",
            "features_offsets.npy",
            "grid.npy",
            "metadata.npy",
            "paths.npy",
            "summary.npy"
        ]
    );
    assert_eq!(npy_strings(&members["paths.npy"]), paths);
    let z = npy_to_arr(&members["summary.npy"]);
    let (zs, zsum) = z.f32();
    assert_eq!(zs, &[n, 96]);
    close(zsum, summary, 0.0, "npz summary == safetensors summary");
    assert_eq!(npy_to_arr(&members["features_offsets.npy"]).i64().1, foff);
    let meta_json: serde_json::Value =
        serde_json::from_str(&npy_strings(&members["metadata.npy"])[0]).unwrap();
    assert_eq!(meta_json["token_layout"], "packed");

    // npy: one array, paths in a sidecar.
    let npy = temp("summary.npy");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            &images_dir(),
            "--output",
            npy.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    let a = npy_to_arr(&std::fs::read(&npy).unwrap());
    assert_eq!(a.f32().0, &[n, 96]);
    close(a.f32().1, summary, 0.0, "npy summary");
    let side = std::fs::read_to_string(temp("summary.paths.txt")).unwrap();
    assert_eq!(side.lines().collect::<Vec<_>>(), paths);

    // JSON Lines: path + summary; features only on request.
    let jl = temp("out.jsonl");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            &images_dir(),
            "--output",
            jl.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    let text = std::fs::read_to_string(&jl).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), n);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["path"], paths[i]);
        assert!(r.get("features").is_none());
        let s: Vec<f32> = r["summary"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        close(&s, &summary[i * 96..(i + 1) * 96], 0.0, "jsonl summary");
    }
    let jl2 = temp("feats.jsonl");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            &paths[0],
            "--output",
            jl2.to_str().unwrap(),
            "--outputs",
            "features",
            "--format",
            "jsonl",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    let r: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&jl2).unwrap().trim()).unwrap();
    let g = single[0].grid.0 * single[0].grid.1;
    assert_eq!(r["features"].as_array().unwrap().len(), g);
    assert!(r.get("summary").is_none());
}

#[test]
fn uniform_sizes_are_stacked_and_normalize_gives_unit_vectors() {
    // InternViT: every image becomes 32x32, so token outputs stack to [N, T, D].
    let out = temp("intern.safetensors");
    let o = run(
        &[
            "--model",
            &model("internvit_300m"),
            &images_dir(),
            "--output",
            out.to_str().unwrap(),
            "--outputs",
            "summary,features",
            "--normalize",
            "--batch-size",
            "4",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    let (t, meta) = read_safetensors(&out);
    assert_eq!(meta["token_layout"], "stacked");
    let n = sample_paths().len();
    let (fs, f) = t["features"].f32();
    assert_eq!(fs, &[n, 64, 48], "8x8 patches of width 48");
    let (ss, s) = t["summary"].f32();
    assert_eq!(ss, &[n, 48], "InternViT summary = cls token");
    for row in s.chunks(48).chain(f.chunks(48)) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn results_do_not_depend_on_batch_composition() {
    let run_with = |extra: &[&str], name: &str| {
        let out = temp(name);
        let mut args: Vec<String> = vec![
            "--model".into(),
            model("radio_v2"),
            images_dir(),
            "--output".into(),
            out.display().to_string(),
            "--outputs".into(),
            "summary,features".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args, &[]);
        assert!(o.status.success(), "{extra:?}: {}", err(&o));
        read_safetensors(&out).0
    };
    let one = run_with(&["--batch-size", "1"], "b1.safetensors");
    let packed = run_with(&["--batch-size", "16"], "b16.safetensors");
    let packed3 = run_with(&["--batch-size", "3"], "b3.safetensors");
    let grouped = run_with(
        &["--batch-size", "16", "--group-by-size"],
        "g16.safetensors",
    );
    for (name, other) in [
        ("packed 16", &packed),
        ("packed 3", &packed3),
        ("grouped", &grouped),
    ] {
        for key in ["summary", "features", "features_offsets", "grid"] {
            match (&one[key], &other[key]) {
                (Arr::F32(s1, a), Arr::F32(s2, b)) => {
                    assert_eq!(s1, s2, "{name} {key}");
                    close(b, a, 1e-5, &format!("{name} {key}"));
                }
                (Arr::I64(_, a), Arr::I64(_, b)) => assert_eq!(a, b, "{name} {key}"),
                _ => panic!("{key}: dtype differs"),
            }
        }
    }
}

#[test]
fn a_corrupt_image_is_reported_and_the_rest_are_embedded() {
    let dir = temp("mixed-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["gradient.png", "photo.jpg"] {
        std::fs::copy(root().join("assets/images").join(name), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("broken.jpg"),
        b"\xff\xd8\xff\xe0 this is not really a jpeg",
    )
    .unwrap();
    let png = std::fs::read(root().join("assets/images/gradient.png")).unwrap();
    std::fs::write(dir.join("truncated.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored: not an image extension").unwrap();
    let out = temp("partial.safetensors");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            dir.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let e = err(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        e.contains("broken.jpg") && e.contains("truncated.png"),
        "{e}"
    );
    assert!(
        e.contains("embedded 2/4 images") && e.contains("(2 failed)"),
        "{e}"
    );
    let (t, meta) = read_safetensors(&out);
    let listed: Vec<String> = serde_json::from_str(&meta["paths"]).unwrap();
    let names: Vec<&str> = listed
        .iter()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["gradient.png", "photo.jpg"]);
    assert_eq!(t["summary"].f32().0, &[2, 96]);

    // Every input bad: nothing written, still exit code 2.
    let none = temp("none.safetensors");
    let o = run(
        &[
            "--model",
            &model("radio_v4"),
            dir.join("broken.jpg").to_str().unwrap(),
            "--output",
            none.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(!none.exists());
}

#[test]
fn hub_ids_load_from_an_offline_cache_given_by_environment() {
    let cache = temp("hf-cache");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let root_dir = cache.join("models--test-org--tiny-internvit");
    let snap = root_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root_dir.join("refs")).unwrap();
    std::fs::write(root_dir.join("refs/main"), commit).unwrap();
    for f in [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ] {
        std::fs::copy(
            root()
                .join("tests/fixtures/models/internvit_6b_hub")
                .join(f),
            snap.join(f),
        )
        .unwrap();
    }
    let out = temp("hub.safetensors");
    let env = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_TOKEN", "hf_not_needed_offline"),
    ];
    let o = run(
        &[
            "--model",
            "test-org/tiny-internvit",
            &images_dir(),
            "--output",
            out.to_str().unwrap(),
        ],
        &env,
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("from the hub cache"), "{}", err(&o));
    let (_, meta) = read_safetensors(&out);
    assert_eq!(meta["commit"], commit);
    assert_eq!(meta["revision"], "main");

    let o = run(
        &[
            "--model",
            "test-org/not-there",
            &images_dir(),
            "--output",
            out.to_str().unwrap(),
            "--revision",
            "v2",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("test-org/not-there@v2") && err(&o).contains("offline"),
        "{}",
        err(&o)
    );
}

#[test]
fn bad_options_are_messages_not_panics() {
    let out = temp("never.safetensors");
    let o_s = out.to_str().unwrap().to_string();
    let m = model("radio_v4");
    let iv = model("internvit_300m");
    let imgs = images_dir();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", &m, &imgs, "--output", &o_s, "--device", "cuda:0"],
            "cuda",
        ),
        (
            vec!["--model", &m, &imgs, "--output", &o_s, "--resolution", "64"],
            "outside",
        ),
        (
            vec![
                "--model",
                &iv,
                &imgs,
                "--output",
                &o_s,
                "--resolution",
                "64",
            ],
            "fixed",
        ),
        (
            vec![
                "--model",
                &m,
                &imgs,
                "--output",
                &o_s,
                "--outputs",
                "logits",
            ],
            "logits",
        ),
        (
            vec![
                "--model",
                &m,
                &imgs,
                "--output",
                &o_s,
                "--intermediates",
                "7",
            ],
            "blocks",
        ),
        (
            vec!["--model", &m, "/nonexistent/dir", "--output", &o_s],
            "nonexistent",
        ),
        (
            vec![
                "--model", &m, &imgs, "--output", &o_s, "--format", "parquet",
            ],
            "parquet",
        ),
        (vec!["--model", &m, "--output", &o_s], "no images"),
    ];
    for (args, needle) in cases {
        let o = run(&args, &[]);
        let e = err(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: expected `{needle}` in: {e}");
    }
    // .npy holds one array: mixed sizes or several outputs need .npz/.safetensors.
    let npy = temp("never.npy");
    let o = run(
        &[
            "--model",
            &m,
            &imgs,
            "--output",
            npy.to_str().unwrap(),
            "--outputs",
            "features",
        ],
        &[],
    );
    assert!(
        !o.status.success() && err(&o).contains(".npz"),
        "{}",
        err(&o)
    );
    assert!(!out.exists() && !npy.exists(), "failed runs write nothing");
    // `auto` says what it picked and why.
    let ok = temp("auto.safetensors");
    let o = run(
        &[
            "--model",
            &m,
            &imgs,
            "--output",
            ok.to_str().unwrap(),
            "--device",
            "auto",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("device: auto picked"), "{}", err(&o));
}
