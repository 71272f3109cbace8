//! Shared by the parity and op suites: fixture access, error metrics, and
//! the list of backends under test (with the "required" rule that keeps a
//! suite from passing by skipping a platform).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use half::{bf16, f16};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use vitrine::Device;

/// The committed fixtures, `tests/fixtures`.
pub fn committed_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// The fixture set under test: `VITRINE_FIXTURES` if set (the full-size
/// dumps made on a GPU machine, same layout), else the committed one.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("VITRINE_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => committed_fixtures(),
    }
}

/// The fixture manifest.
pub fn manifest() -> serde_json::Value {
    let path = fixtures().join("MANIFEST.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("MANIFEST.json parses")
}

/// A tensor read in f64, with its shape.
#[derive(Clone, Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Reads every tensor of a safetensors file, widened to f64.
pub fn read_all(path: &Path) -> std::collections::BTreeMap<String, Array> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let b = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F64 => b
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F32 => b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::F16 => b
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
                    .collect(),
                Dtype::BF16 => b
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (
                name,
                Array {
                    shape: view.shape().to_vec(),
                    data,
                },
            )
        })
        .collect()
}

/// Error of `ours` against `truth`, both viewed as rows of `width`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    /// ‖ours − truth‖ / ‖truth‖ over finite values.
    pub rel_l2: f64,
    /// Mean over rows of the cosine between row vectors.
    pub mean_cos: f64,
    /// Smallest row cosine.
    pub min_cos: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// NaN or infinite values in `ours`, counted separately.
    pub non_finite: usize,
}

pub fn metrics(ours: &[f64], truth: &[f64], width: usize) -> Metrics {
    assert_eq!(ours.len(), truth.len(), "length mismatch");
    assert!(width > 0 && ours.len().is_multiple_of(width));
    let non_finite = ours.iter().filter(|v| !v.is_finite()).count();
    let (mut num, mut den, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &t) in ours.iter().zip(truth) {
        if a.is_finite() {
            num += (a - t) * (a - t);
            max_abs = max_abs.max((a - t).abs());
        }
        den += t * t;
    }
    let (mut sum_cos, mut min_cos, rows) = (0.0, f64::INFINITY, ours.len() / width);
    for (a, t) in ours.chunks(width).zip(truth.chunks(width)) {
        let dot: f64 = a.iter().zip(t).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nt: f64 = t.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = if na == 0.0 && nt == 0.0 {
            1.0
        } else {
            dot / (na * nt)
        };
        let cos = if cos.is_finite() { cos } else { -1.0 };
        sum_cos += cos;
        min_cos = min_cos.min(cos);
    }
    Metrics {
        rel_l2: (num / den.max(f64::MIN_POSITIVE)).sqrt(),
        mean_cos: sum_cos / rows as f64,
        min_cos,
        max_abs,
        non_finite,
    }
}

/// Backends whose results the suites produce, from what is compiled in and
/// `VITRINE_REQUIRE_BACKENDS` (comma list, e.g. `cpu,cuda`).
pub struct BackendPlan {
    /// Devices to test.
    pub run: Vec<Device>,
    /// Backends left out, with the reason, printed loudly.
    pub skipped: Vec<String>,
}

/// Decides which backends to run. A backend named in
/// `VITRINE_REQUIRE_BACKENDS` that is not compiled in or does not initialise
/// fails the suite here, with the reason.
pub fn backend_plan() -> BackendPlan {
    let required: Vec<String> = std::env::var("VITRINE_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut run = vec![Device::Cpu];
    let mut skipped = Vec::new();
    for (name, device) in [("cuda", Device::Cuda(0)), ("hip", Device::Hip(0))] {
        match vitrine::probe(device) {
            Ok(()) => run.push(device),
            Err(reason) => {
                if required.iter().any(|r| r == name) {
                    panic!("backend {name} is required (VITRINE_REQUIRE_BACKENDS) but unavailable: {reason}");
                }
                skipped.push(format!("{name}: SKIPPED ({reason})"));
            }
        }
    }
    for r in &required {
        if !["cpu", "cuda", "hip"].contains(&r.as_str()) {
            panic!("VITRINE_REQUIRE_BACKENDS names unknown backend `{r}`");
        }
    }
    // `VITRINE_ONLY_BACKENDS=cuda` runs a subset (full-size dumps are too slow
    // for the CPU); what it leaves out is still listed.
    if let Ok(only) = std::env::var("VITRINE_ONLY_BACKENDS") {
        let only: Vec<String> = only
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        run.retain(|d| {
            let kind = d.to_string().split(':').next().unwrap_or("").to_string();
            let keep = only.contains(&kind);
            if !keep {
                skipped.push(format!("{kind}: not selected (VITRINE_ONLY_BACKENDS)"));
            }
            keep
        });
    }
    BackendPlan { run, skipped }
}

/// Deterministic pseudo-random numbers (SplitMix64), so every run feeds the
/// same inputs and a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// Approximately standard normal (sum of uniforms).
    pub fn normal(&mut self) -> f32 {
        (0..6).map(|_| self.uniform(-1.0, 1.0)).sum::<f32>() / 2.0f32.sqrt()
    }

    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// Normalised mean squared error, ggml's `test-backend-ops` metric:
/// mse(ours, reference) / mse(reference, 0), over finite values; plus the
/// count of NaN/Inf in `ours`.
pub fn nmse(ours: &[f64], reference: &[f64]) -> (f64, usize) {
    let bad = ours.iter().filter(|v| !v.is_finite()).count();
    let (mut err, mut norm) = (0.0, 0.0);
    for (&a, &r) in ours.iter().zip(reference) {
        if a.is_finite() {
            err += (a - r) * (a - r);
        }
        norm += r * r;
    }
    (err / norm.max(f64::MIN_POSITIVE), bad)
}

/// Builds the example with the profile of this test binary and returns its
/// path (or takes `VITRINE_EMBED_BIN`). `cargo test --test embed_cli` alone does not rebuild examples, so
/// relying on what is in `target/` could test a stale binary.
pub fn embed_binary() -> PathBuf {
    // On a machine without cargo (the GPU test machine), the binary is given.
    if let Some(bin) = std::env::var_os("VITRINE_EMBED_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--quiet", "--example", "embed", "--manifest-path"])
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .arg("--target-dir")
                .arg(profile_dir.parent().expect("target dir"));
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build --example embed");
            assert!(status.success(), "building the embed example failed");
            profile_dir
                .join("examples")
                .join(format!("embed{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}
