//! The `embed` example reproduces a fixture from the command line, and bad
//! invocations fail with a message and a non-zero exit, never a panic.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{committed_fixtures, embed_binary, metrics, read_all};

fn embed(args: &[&str]) -> Output {
    Command::new(embed_binary())
        .args(args)
        // Parallel tests each start a child: one thread apiece keeps the
        // 2-core CI machine from thrashing.
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("run embed")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vitrine-embed-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn embed_reproduces_a_radio_fixture() {
    let case = committed_fixtures()
        .join("cases")
        .join("radio_v2__16x16_b2.safetensors");
    for layout in ["radio_v2", "radio_v2_hub"] {
        let model = committed_fixtures().join("models").join(layout);
        let out = out_path(&format!("{layout}.safetensors"));
        let o = embed(&[
            "--model",
            model.to_str().unwrap(),
            "--pixels",
            case.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "embed failed: {}", stderr(&o));
        let ours = read_all(&out);
        let truth = read_all(&case);
        for name in ["last_hidden_state", "summary", "features"] {
            let (a, t) = (&ours[name], &truth[&format!("truth.{name}")]);
            assert_eq!(a.shape, t.shape, "{name} shape");
            let width = *t.shape.last().unwrap();
            let m = metrics(&a.data, &t.data, width);
            assert!(m.rel_l2 <= 1e-5, "{layout} {name}: rel L2 {:e}", m.rel_l2);
        }
    }
}

#[test]
fn embed_runs_half_precision_internvit() {
    let case = committed_fixtures()
        .join("cases")
        .join("internvit_6b__16x32_b1.safetensors");
    let model = committed_fixtures().join("models").join("internvit_6b_hub");
    let out = out_path("internvit_6b_bf16.safetensors");
    let o = embed(&[
        "--model",
        model.to_str().unwrap(),
        "--pixels",
        case.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert!(o.status.success(), "embed failed: {}", stderr(&o));
    let (ours, truth) = (read_all(&out), read_all(&case));
    let t = &truth["truth.last_hidden_state"];
    let m = metrics(
        &ours["last_hidden_state"].data,
        &t.data,
        *t.shape.last().unwrap(),
    );
    assert!(m.mean_cos >= 0.9998, "bf16 mean cos {}", m.mean_cos);
    assert!(
        !ours.contains_key("summary"),
        "InternViT has no summary output"
    );
}

#[test]
fn embed_errors_are_messages_not_panics() {
    let case = committed_fixtures()
        .join("cases")
        .join("radio_v4__24x40_b1.safetensors");
    let model = committed_fixtures().join("models").join("radio_v4");
    let out = out_path("never.safetensors");
    let (m, c, o) = (
        model.to_str().unwrap(),
        case.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let expectations: [(Vec<&str>, &str); 5] = [
        (
            vec![
                "--model", m, "--pixels", c, "--output", o, "--device", "cuda:99",
            ],
            "cuda",
        ),
        (
            vec![
                "--model", m, "--pixels", c, "--output", o, "--device", "hip:99",
            ],
            "hip",
        ),
        (
            vec![
                "--model",
                "/nonexistent/model",
                "--pixels",
                c,
                "--output",
                o,
            ],
            "nonexistent",
        ),
        (
            vec![
                "--model",
                m,
                "--pixels",
                "/nonexistent.safetensors",
                "--output",
                o,
            ],
            "nonexistent",
        ),
        (
            vec!["--model", m, "--pixels", c, "--output", o, "--dtype", "f8"],
            "f8",
        ),
    ];
    for (args, needle) in expectations {
        let o = embed(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: message should mention `{needle}`: {err}"
        );
    }
    assert!(!out.exists(), "a failed run must not leave an output file");
}

#[test]
fn embed_rejects_sizes_off_the_patch_grid() {
    // 30x30 pixels with patch 4: the error names the nearest valid size.
    let px = out_path("odd_pixels.safetensors");
    let values = vec![0.5f32; 3 * 30 * 30];
    let t = vitrine::HostTensor::from_f32(vec![1, 3, 30, 30], values).unwrap();
    vitrine::io::write_tensors(&px, &[("pixel_values".to_string(), t)], Default::default())
        .unwrap();
    let model = committed_fixtures().join("models").join("radio_v4");
    let out = out_path("odd_out.safetensors");
    let o = embed(&[
        "--model",
        model.to_str().unwrap(),
        "--pixels",
        px.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("not a multiple of the patch size 4") && err.contains("32x32"),
        "{err}"
    );
}
