//! f16 overflow in activations: with the default policy each affected image
//! is an error naming it and the first non-finite block; with
//! `OverflowPolicy::Retry(bf16 | f32)` the affected images (only) are run
//! again in that dtype, the result says so, and a retry that fails too names
//! both attempts. Through the library and through `embed --on-f16-overflow`.
//!
//! The model: the tiny InternViT fixture with block 0's `fc2` weight scaled
//! by 18500, so the residual stream reaches ~30k..75k depending on the image:
//! past f16's 65504 for some of the sample images, finite in bf16 and f32.
//! Which images overflow is predicted from an f32 run (with a margin around
//! 65504), not hard-coded.

mod common;
mod robust_util;

use std::path::PathBuf;
use std::process::Command;

use robust_util::*;
use safetensors::SafeTensors;
use vitrine::numerics::{max_abs, non_finite, F16_MAX};
use vitrine::{DType, Device, Embedding, EncodeOptions, Encoder, HostTensor, OverflowPolicy};

const FC2_0: &str = "encoder.layer.0.mlp.fc2.weight";
const FC2_1: &str = "encoder.layer.1.mlp.fc2.weight";
const SCALE: f32 = 18_500.0;

/// The error of a result that must have failed (without printing a whole
/// embedding when it did not).
fn err<T, E>(r: Result<T, E>) -> E {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error, got outputs"),
    }
}

fn scaled_model(test: &str) -> PathBuf {
    edited_model(test, "internvit_300m", |t| {
        let x = t.iter_mut().find(|x| x.name == FC2_0).unwrap();
        let v: Vec<f32> = x.f32s().iter().map(|v| v * SCALE).collect();
        x.set_f32s(&v);
    })
}

fn images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("assets/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn load(dir: &std::path::Path, dtype: DType) -> Encoder {
    Encoder::from_dir(dir, Device::Cpu, dtype).unwrap()
}

/// Every image in one batch (so overflowing and fine images share it).
fn opts() -> EncodeOptions {
    EncodeOptions {
        batch_size: 64,
        intermediates: vec![0, 1],
        ..Default::default()
    }
}

fn tensors(e: &Embedding) -> Vec<&HostTensor> {
    std::iter::once(&e.last_hidden_state)
        .chain(e.summary.iter())
        .chain(e.features.iter())
        .chain(e.intermediates.iter())
        .collect()
}

fn finite(e: &Embedding) -> bool {
    tensors(e).iter().all(|t| non_finite(t).is_none())
}

/// Which images overflow f16, from the largest activation of an f32 run;
/// every image is at least 3% away from 65504 so f16 rounding cannot flip it.
fn predicted_overflow(dir: &std::path::Path) -> Vec<bool> {
    let f32_run = load(dir, DType::F32).encode_images_with(images(), &opts());
    let over: Vec<bool> = f32_run
        .iter()
        .zip(images())
        .map(|(r, p)| {
            let e = r.as_ref().unwrap();
            let m = tensors(e).iter().map(|t| max_abs(t)).fold(0.0, f32::max);
            assert!(
                !(0.97 * F16_MAX..=1.03 * F16_MAX).contains(&m),
                "{}: max {m} too close to the f16 limit for a stable test",
                p.display()
            );
            m > F16_MAX
        })
        .collect();
    assert!(
        over.iter().any(|&o| o) && !over.iter().all(|&o| o),
        "{over:?}"
    );
    over
}

#[test]
fn f16_overflow_is_an_error_naming_the_image_and_block_by_default() {
    let dir = scaled_model("ovf-default");
    let over = predicted_overflow(&dir);
    let enc = load(&dir, DType::F16);
    assert_eq!(enc.overflow_policy(), OverflowPolicy::Error);
    let out = enc.encode_images_with(images(), &opts());
    for ((r, p), &o) in out.iter().zip(images()).zip(&over) {
        match r {
            Err(e) => {
                assert!(o, "{} failed but should not overflow: {e}", p.display());
                let m = e.to_string();
                assert!(
                    m.contains(&p.display().to_string())
                        && m.contains("first non-finite after block 0 of 2")
                        && m.contains("f16 activations overflow past 65504")
                        && m.contains("--on-f16-overflow"),
                    "{m}"
                );
            }
            Ok(e) => {
                assert!(!o, "{} should overflow", p.display());
                assert!(finite(e));
                assert_eq!((e.dtype, &e.overflow), (DType::F16, &None));
            }
        }
    }
    // The all-or-nothing pixel API fails with the first affected image.
    let pixels: Vec<HostTensor> = images()
        .iter()
        .map(|p| enc.preprocess(&vitrine::images::load_image(p, &Default::default()).unwrap()))
        .collect::<Result<_, _>>()
        .unwrap();
    let first = over.iter().position(|&o| o).unwrap();
    let m = err(enc.forward_images(&pixels, &[])).to_string();
    assert!(
        m.contains(&format!("image {first}: the output has"))
            && m.contains("first non-finite after block 0 of 2"),
        "{m}"
    );
}

#[test]
fn f16_overflow_retried_in_bf16_and_f32_only_for_the_affected_images() {
    let dir = scaled_model("ovf-retry");
    let over = predicted_overflow(&dir);
    let f16_plain = load(&dir, DType::F16).encode_images_with(images(), &opts());
    for retry in [DType::BF16, DType::F32] {
        let mut enc = load(&dir, DType::F16);
        enc.set_overflow_policy(OverflowPolicy::Retry(retry))
            .unwrap();
        let plain = load(&dir, retry).encode_images_with(images(), &opts());
        let out = enc.encode_images_with(images(), &opts());
        for (k, r) in out.iter().enumerate() {
            let e = r.as_ref().unwrap_or_else(|e| panic!("image {k}: {e}"));
            assert!(finite(e), "image {k}");
            if over[k] {
                // Retried: recorded, and bit-identical to a plain run in that dtype.
                assert_eq!(e.dtype, retry);
                let why = e.overflow.as_ref().expect("the retry is recorded");
                assert_eq!((why.from, why.block, why.depth), (DType::F16, Some(0), 2));
                assert!(why.non_finite.contains("non-finite value"), "{why}");
                assert!(
                    why.to_string()
                        .starts_with("f16 overflow after block 0 of 2 ("),
                    "{why}"
                );
                let p = plain[k].as_ref().unwrap();
                assert!(tensors(e) == tensors(p), "image {k} vs a plain {retry} run");
            } else {
                // The others of the same batch keep their f16 results.
                assert!(e == f16_plain[k].as_ref().unwrap(), "image {k}");
                assert_eq!((e.dtype, &e.overflow), (DType::F16, &None));
            }
        }
        // The same through the pixel API, and again (the retry model is kept).
        let pixels: Vec<HostTensor> = images()
            .iter()
            .map(|p| enc.preprocess(&vitrine::images::load_image(p, &Default::default()).unwrap()))
            .collect::<Result<_, _>>()
            .unwrap();
        for _ in 0..2 {
            let again = enc.forward_images(&pixels, &[0, 1]).unwrap();
            for (k, e) in again.iter().enumerate() {
                assert!(e == out[k].as_ref().unwrap(), "image {k}");
            }
        }
    }
}

#[test]
fn a_retry_that_fails_too_names_both_attempts() {
    // A NaN weight in block 1: non-finite in every dtype.
    let dir = edited_model("ovf-both", "internvit_300m", |t| {
        let x = t.iter_mut().find(|x| x.name == FC2_1).unwrap();
        let mut v = x.f32s();
        v[7] = f32::NAN;
        x.set_f32s(&v);
    });
    let img = root().join("assets/images/photo.jpg");
    for retry in [DType::BF16, DType::F32] {
        let mut enc = load(&dir, DType::F16);
        enc.set_overflow_policy(OverflowPolicy::Retry(retry))
            .unwrap();
        let out = enc.encode_images([&img]);
        let m = err(out[0].as_ref()).to_string();
        assert!(
            m.contains("photo.jpg: the f16 output has")
                && m.contains(&format!("the retry in {retry} failed too: the output has"))
                && m.matches("first non-finite after block 1 of 2").count() == 2,
            "{m}"
        );
    }
    // An f32 encoder never retries: the plain error.
    let mut enc = load(&dir, DType::F32);
    enc.set_overflow_policy(OverflowPolicy::Retry(DType::BF16))
        .unwrap();
    let m = err(enc.encode_images([&img])[0].as_ref()).to_string();
    assert!(
        m.contains("the output has") && !m.contains("retry") && !m.contains("65504"),
        "{m}"
    );
}

#[test]
fn overflow_policy_values() {
    for (s, p) in [
        ("error", OverflowPolicy::Error),
        ("retry-bf16", OverflowPolicy::Retry(DType::BF16)),
        ("retry-f32", OverflowPolicy::Retry(DType::F32)),
    ] {
        assert_eq!(s.parse::<OverflowPolicy>().unwrap(), p);
        assert_eq!(p.to_string(), s);
    }
    let e = "retry-f16".parse::<OverflowPolicy>().unwrap_err();
    assert!(
        e.to_string()
            .contains("expected error, retry-bf16 or retry-f32"),
        "{e}"
    );
    let mut enc = load(&fixture("internvit_300m"), DType::F16);
    let e = enc
        .set_overflow_policy(OverflowPolicy::Retry(DType::F16))
        .unwrap_err();
    assert!(e.to_string().contains("cannot be retried in f16"), "{e}");
    assert_eq!(enc.overflow_policy(), OverflowPolicy::Error);
}

/// The `summary` values and the metadata of an `embed` safetensors output.
fn read_output(path: &std::path::Path) -> (Vec<f32>, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("summary").unwrap();
    let data = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (data, meta.metadata().clone().unwrap_or_default())
}

#[test]
fn embed_cli_on_f16_overflow() {
    let dir = scaled_model("ovf-cli");
    let over = predicted_overflow(&dir);
    let all = images();
    let bad = all[over.iter().position(|&o| o).unwrap()].clone();
    let good = all[over.iter().position(|&o| !o).unwrap()].clone();
    let bad_name = bad.file_name().unwrap().to_str().unwrap().to_string();
    let out_dir = temp_dir("ovf-cli-out");
    let bin = common::embed_binary();
    let run = |dtype: &str, extra: &[&str], out: &std::path::Path| {
        let o = Command::new(&bin)
            .args(["--model", dir.to_str().unwrap(), "--device", "cpu"])
            .args(["--dtype", dtype])
            .arg(&bad)
            .arg(&good)
            .arg("--output")
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };

    // Default: the overflowing image is skipped by name, the other written.
    let out = out_dir.join("default.safetensors");
    let (code, e) = run("f16", &[], &out);
    assert_eq!(code, Some(2), "{e}");
    assert!(
        e.contains(&format!("skipped {}", bad.display()))
            && e.contains("first non-finite after block 0 of 2")
            && !e.contains("retried")
            && !e.contains("panicked"),
        "{e}"
    );
    assert!(e.contains("embedded 1/2 images"), "{e}");

    // Retried: a warning per retried image, both written, finite.
    let plain32 = out_dir.join("plain32.safetensors");
    let (code, e) = run("f32", &[], &plain32);
    assert_eq!(code, Some(0), "{e}");
    let (p32, _) = read_output(&plain32);
    for (policy, dtype) in [("retry-bf16", "bf16"), ("retry-f32", "f32")] {
        let out = out_dir.join(format!("{policy}.safetensors"));
        let (code, e) = run("f16", &["--on-f16-overflow", policy], &out);
        assert_eq!(code, Some(0), "{e}");
        let warning = format!(
            "warning: {}: f16 overflow after block 0 of 2 (",
            bad.display()
        );
        assert!(e.contains(&warning), "{e}");
        assert!(e.contains(&format!("; retried in {dtype}")), "{e}");
        assert_eq!(e.matches("retried in").count(), 1, "{e}");
        assert!(e.contains("embedded 2/2 images"), "{e}");
        let (summary, meta) = read_output(&out);
        assert!(summary.iter().all(|v| v.is_finite()));
        let retries = &meta["f16_overflow_retries"];
        assert!(
            retries.contains(&bad_name) && retries.contains(&format!("({dtype})")),
            "{retries}"
        );
        if dtype == "f32" {
            // The retried row is exactly what a plain f32 run writes.
            let paths: Vec<String> = serde_json::from_str(&meta["paths"]).unwrap();
            let row = paths.iter().position(|p| p.ends_with(&bad_name)).unwrap();
            let d = summary.len() / 2;
            assert_eq!(summary[row * d..(row + 1) * d], p32[row * d..(row + 1) * d]);
        }
    }

    // The policy does nothing outside f16, and says so.
    let (code, e) = run(
        "bf16",
        &["--on-f16-overflow", "retry-f32"],
        &out_dir.join("n.safetensors"),
    );
    assert_eq!(code, Some(0), "{e}");
    assert!(e.contains("has no effect with --dtype bf16"), "{e}");
    let (code, e) = run(
        "f16",
        &["--on-f16-overflow", "retry-f16"],
        &out_dir.join("x.safetensors"),
    );
    assert_eq!(code, Some(2), "clap usage error: {e}");
    assert!(e.contains("expected error, retry-bf16 or retry-f32"), "{e}");
}
