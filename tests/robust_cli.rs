//! `embed --check-weights` and the output check through the CLI: a model
//! with a NaN weight is refused up front with the tensor named, and without
//! the flag every image fails by name (exit 2) instead of writing NaNs.

mod common;
mod robust_util;

use std::process::Command;

use robust_util::*;

#[test]
fn check_weights_flag_and_non_finite_outputs() {
    let name = "radio_model.model.blocks.1.mlp.fc2.weight";
    let dir = edited_model("cli-nan", "radio_v4", |t| {
        let x = t.iter_mut().find(|x| x.name == name).unwrap();
        let mut v = x.f32s();
        v[3] = f32::NAN;
        x.set_f32s(&v);
    });
    let img = root().join("assets/images/photo.jpg");
    let out = temp_dir("cli-out").join("o.safetensors");
    let bin = common::embed_binary();
    let run = |extra: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(["--model", dir.to_str().unwrap(), "--device", "cpu"])
            .arg(&img)
            .arg("--output")
            .arg(&out)
            .args(extra);
        c.output().unwrap()
    };
    let o = run(&["--check-weights"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains(name) && e.contains("non-finite") && !e.contains("panicked"),
        "{e}"
    );
    assert!(!out.exists());
    let o = run(&[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("photo.jpg") && e.contains("first non-finite after block 1"),
        "{e}"
    );
    assert!(!out.exists());
}
