//! Model-level parity against HF transformers reference dumps.
//!
//! For every fixture case × dtype × backend under test, our outputs are
//! compared with HF's float64 forward pass (the truth), and HF's own error at
//! the same dtype is shown beside ours. Both on-disk layouts of each model
//! (what `save_pretrained` writes, and the original hub layout) must give the
//! same numbers. Floors (the bar, not the goal):
//! - f32: relative L2 ≤ 1e-5 on every output;
//! - f16: mean token cosine ≥ 0.99999; bf16: ≥ 0.9998;
//! - f16/bf16: our relative L2 ≤ 1.2 × HF's own at that dtype.
//!
//! Run with `--nocapture` to see the table.

mod common;

use std::fmt::Write;

use common::{backend_plan, fixtures, manifest, metrics, read_all, Array, Metrics};
use vitrine::{DType, Device, Embedding, Encoder, HostTensor};

const F32_MAX_REL_L2: f64 = 1e-5;
const HALF_MAX_RATIO_TO_HF: f64 = 1.2;

fn min_mean_cos(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 0.999_999,
        DType::F16 => 0.999_99,
        DType::BF16 => 0.9998,
    }
}

struct Case {
    id: String,
    model: String,
    layouts: Vec<(String, String)>,
    tensors: std::collections::BTreeMap<String, Array>,
}

fn cases() -> Vec<Case> {
    let m = manifest();
    let mut out = Vec::new();
    for (id, case) in m["cases"].as_object().expect("cases") {
        let model = case["model"].as_str().expect("model").to_string();
        let layouts = m["models"][&model]["layouts"]
            .as_object()
            .expect("layouts")
            .iter()
            // Full-size dumps may carry only the native layout (hub: null).
            .filter_map(|(k, v)| v.as_str().map(|dir| (k.clone(), dir.to_string())))
            .collect();
        let tensors = read_all(&fixtures().join("cases").join(format!("{id}.safetensors")));
        out.push(Case {
            id: id.clone(),
            model,
            layouts,
            tensors,
        });
    }
    if std::env::var_os("VITRINE_FIXTURES").is_none() {
        assert!(
            out.len() >= 16,
            "expected the full fixture set, found {} cases",
            out.len()
        );
    }
    assert!(
        !out.is_empty(),
        "no fixture cases in {}",
        fixtures().display()
    );
    out
}

fn pixels(case: &Case) -> HostTensor {
    let p = &case.tensors["pixel_values"];
    HostTensor::from_f32(p.shape.clone(), p.data.iter().map(|&v| v as f32).collect())
        .expect("pixels")
}

/// Our outputs for one case, batched the way the fixture stores them.
fn gather(out: &[Embedding], name: &str) -> Option<Vec<f64>> {
    let mut v = Vec::new();
    for e in out {
        let t = match name {
            "last_hidden_state" => Some(&e.last_hidden_state),
            "summary" => e.summary.as_ref(),
            "features" => e.features.as_ref(),
            _ => None,
        }?;
        v.extend(t.to_f32_vec().into_iter().map(f64::from));
    }
    Some(v)
}

fn fmt_cos(c: f64) -> String {
    format!("{c:.7}")
}

#[test]
fn parity_against_hf_reference() {
    let plan = backend_plan();
    let cases = cases();
    let mut table = String::new();
    let mut failures = Vec::new();
    writeln!(
        table,
        "\n## Parity vs HF float64 truth (last_hidden_state; every output checked)"
    )
    .ok();
    writeln!(
        table,
        "| case | backend | dtype | mean cos | min cos | rel L2 | max abs | HF rel L2 | ours/HF | layouts | status |"
    )
    .ok();
    writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|").ok();
    for device in &plan.run {
        for case in &cases {
            let px = pixels(case);
            for dtype in DType::ALL {
                let mut first: Option<Vec<Embedding>> = None;
                let mut layout_note = String::from("identical");
                for (layout, dir) in &case.layouts {
                    let enc = match Encoder::from_dir(&fixtures().join(dir), *device, dtype) {
                        Ok(e) => e,
                        Err(e) => {
                            failures.push(format!(
                                "{} [{layout}] on {device} {dtype}: load failed: {e}",
                                case.id
                            ));
                            continue;
                        }
                    };
                    match enc.forward_pixels(&px) {
                        Ok(out) => match &first {
                            None => first = Some(out),
                            Some(prev) => {
                                let a = gather(prev, "last_hidden_state").unwrap_or_default();
                                let b = gather(&out, "last_hidden_state").unwrap_or_default();
                                let diff = a
                                    .iter()
                                    .zip(&b)
                                    .map(|(x, y)| (x - y).abs())
                                    .fold(0.0, f64::max);
                                if diff != 0.0 || a.len() != b.len() {
                                    layout_note = format!("DIFFER {diff:.1e}");
                                    failures.push(format!(
                                        "{} on {device} {dtype}: layouts differ by {diff:e}",
                                        case.id
                                    ));
                                }
                            }
                        },
                        Err(e) => failures.push(format!(
                            "{} [{layout}] on {device} {dtype}: forward failed: {e}",
                            case.id
                        )),
                    }
                }
                let Some(out) = first else { continue };
                let hf_key = format!("hf.{dtype}.last_hidden_state");
                let truth = &case.tensors["truth.last_hidden_state"];
                let width = *truth.shape.last().expect("width");
                let mut row_status = "ok";
                let mut lhs = Metrics::default();
                for name in ["last_hidden_state", "summary", "features"] {
                    let Some(t) = case.tensors.get(&format!("truth.{name}")) else {
                        continue;
                    };
                    let Some(ours) = gather(&out, name) else {
                        failures.push(format!("{} {dtype}: no `{name}` output", case.id));
                        row_status = "FAIL";
                        continue;
                    };
                    if ours.len() != t.data.len() {
                        failures.push(format!(
                            "{} {dtype}: `{name}` has {} values, truth {}",
                            case.id,
                            ours.len(),
                            t.data.len()
                        ));
                        row_status = "FAIL";
                        continue;
                    }
                    let m = metrics(&ours, &t.data, width);
                    let mut bad = Vec::new();
                    if m.non_finite > 0 {
                        bad.push(format!("{} non-finite values", m.non_finite));
                    }
                    if dtype == DType::F32 && m.rel_l2 > F32_MAX_REL_L2 {
                        bad.push(format!("rel L2 {:.2e} > {F32_MAX_REL_L2:e}", m.rel_l2));
                    }
                    if m.mean_cos < min_mean_cos(dtype) {
                        bad.push(format!(
                            "mean cos {:.7} < {}",
                            m.mean_cos,
                            min_mean_cos(dtype)
                        ));
                    }
                    if name == "last_hidden_state" {
                        lhs = m;
                    }
                    if !bad.is_empty() {
                        row_status = "FAIL";
                        failures.push(format!(
                            "{} on {device} {dtype} `{name}`: {}",
                            case.id,
                            bad.join("; ")
                        ));
                    }
                }
                let hf = metrics(&case.tensors[&hf_key].data, &truth.data, width);
                let ratio = lhs.rel_l2 / hf.rel_l2;
                if dtype != DType::F32 && ratio > HALF_MAX_RATIO_TO_HF {
                    row_status = "FAIL";
                    failures.push(format!(
                        "{} on {device} {dtype}: rel L2 {:.3e} is {ratio:.2}× HF's own {:.3e} (bar {HALF_MAX_RATIO_TO_HF}×)",
                        case.id, lhs.rel_l2, hf.rel_l2
                    ));
                }
                writeln!(
                    table,
                    "| {} | {device} | {dtype} | {} | {} | {:.2e} | {:.2e} | {:.2e} | {ratio:.2} | {layout_note} | {row_status} |",
                    case.id,
                    fmt_cos(lhs.mean_cos),
                    fmt_cos(lhs.min_cos),
                    lhs.rel_l2,
                    lhs.max_abs,
                    hf.rel_l2
                )
                .ok();
            }
        }
    }
    for s in &plan.skipped {
        writeln!(table, "\n**{s}**").ok();
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} parity failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Images run alone, in their fixture batch, and packed with every other size
/// of the same model must agree.
#[test]
fn batch_composition_does_not_change_results() {
    let plan = backend_plan();
    let cases = cases();
    let mut report =
        String::from("\n## Batch composition (max |batched − alone| per model, dtype, backend)\n");
    let mut failures = Vec::new();
    let mut models: Vec<&str> = cases.iter().map(|c| c.model.as_str()).collect();
    models.dedup();
    for device in &plan.run {
        for model in &models {
            let group: Vec<&Case> = cases.iter().filter(|c| c.model == *model).collect();
            let dir = fixtures().join(&group[0].layouts[0].1);
            for dtype in DType::ALL {
                let enc = Encoder::from_dir(&dir, *device, dtype).expect("load");
                let batches: Vec<HostTensor> = group.iter().map(|c| pixels(c)).collect();
                let packed = enc.forward_groups(&batches, &[]).expect("packed forward");
                let mut alone = Vec::new();
                for b in &batches {
                    let shape = b.shape().to_vec();
                    let per = shape[1..].iter().product::<usize>();
                    let values = b.to_f32_vec();
                    for i in 0..shape[0] {
                        let one = HostTensor::from_f32(
                            [1].iter().chain(&shape[1..]).copied().collect(),
                            values[i * per..(i + 1) * per].to_vec(),
                        )
                        .expect("slice");
                        alone.extend(enc.forward_pixels(&one).expect("single forward"));
                    }
                }
                let mut worst = 0.0f64;
                let mut worst_rel = 0.0f64;
                for (p, a) in packed.iter().zip(&alone) {
                    let (x, y) = (
                        p.last_hidden_state.to_f32_vec(),
                        a.last_hidden_state.to_f32_vec(),
                    );
                    let width = *p.last_hidden_state.shape().last().expect("width");
                    let m = metrics(
                        &x.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                        &y.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                        width,
                    );
                    worst = worst.max(m.max_abs);
                    worst_rel = worst_rel.max(m.rel_l2);
                }
                // One rounding step of the storage type, relative.
                let bar = match dtype {
                    DType::F32 => 1e-6,
                    DType::F16 => 1e-3,
                    DType::BF16 => 8e-3,
                };
                let ok = packed.len() == alone.len() && worst_rel <= bar;
                writeln!(
                    report,
                    "- {model} {device} {dtype}: {} images, max abs {worst:.2e}, rel L2 {worst_rel:.2e} ({})",
                    packed.len(),
                    if ok { "ok" } else { "FAIL" }
                )
                .ok();
                if !ok {
                    failures.push(format!(
                        "{model} {device} {dtype}: rel L2 {worst_rel:e} > {bar:e}"
                    ));
                }
            }
        }
    }
    println!("{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A device that is not built in is an error, never a silent CPU run.
#[test]
fn absent_devices_are_errors() {
    for device in [Device::Cuda(0), Device::Hip(0)] {
        if vitrine::probe(device).is_ok() {
            continue;
        }
        let dir = fixtures().join("models").join("radio_v4");
        match Encoder::from_dir(&dir, device, DType::F32) {
            Ok(_) => panic!("{device} is not available but loading succeeded"),
            Err(e) => assert!(
                e.to_string().contains(&device.to_string()),
                "error names the device: {e}"
            ),
        }
    }
}

/// Every GPU backend against the CPU backend at the same dtype, on every case.
///
/// f32 and f16: mean token cosine ≥ 0.99999. bf16: two correct backends are
/// each one bf16 rounding-noise draw away from the truth (rel L2 ≈ 6e-3 on
/// these fixtures, like HF itself), and different accumulation orders flip
/// roundings that then propagate, so their mutual cosine sits near 0.99998,
/// under the 0.99999 the CUDA issue asked for. The bar enforced for bf16 is
/// the one that still catches a real divergence: the GPU-vs-CPU distance may
/// not exceed 1.2 × √(e_cpu² + e_gpu²), the distance of two independent
/// draws, and the mean cosine must meet the bf16 parity floor (0.9998). The
/// table prints the cosine so the shortfall against 0.99999 stays visible.
#[test]
fn gpu_backends_agree_with_cpu() {
    const MIN_COS: f64 = 0.999_99;
    let plan = backend_plan();
    let others: Vec<&Device> = plan.run.iter().filter(|d| **d != Device::Cpu).collect();
    let mut report = String::from(
        "\n## Backends vs CPU at the same dtype (last_hidden_state)\n| case | backend | dtype | mean cos | min cos | rel L2 | bar | status |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for case in cases() {
        if others.is_empty() {
            break;
        }
        let px = pixels(&case);
        let dir = fixtures().join(&case.layouts[0].1);
        let truth = &case.tensors["truth.last_hidden_state"];
        let width = *truth.shape.last().expect("width");
        for dtype in DType::ALL {
            let cpu = Encoder::from_dir(&dir, Device::Cpu, dtype)
                .and_then(|e| e.forward_pixels(&px))
                .expect("cpu forward");
            let reference = gather(&cpu, "last_hidden_state").expect("cpu output");
            let e_cpu = metrics(&reference, &truth.data, width).rel_l2;
            for device in &others {
                let ours =
                    Encoder::from_dir(&dir, **device, dtype).and_then(|e| e.forward_pixels(&px));
                let (cells, ok) = match ours {
                    Ok(out) => {
                        let values = gather(&out, "last_hidden_state").unwrap_or_default();
                        let m = metrics(&values, &reference, width);
                        let (bar, ok) = if dtype == DType::BF16 {
                            let e_gpu = metrics(&values, &truth.data, width).rel_l2;
                            let limit = 1.2 * (e_cpu * e_cpu + e_gpu * e_gpu).sqrt();
                            let ok = m.rel_l2 <= limit && m.mean_cos >= min_mean_cos(dtype);
                            let note = if m.mean_cos < MIN_COS {
                                " (below 0.99999)"
                            } else {
                                ""
                            };
                            (format!("rel L2 ≤ {limit:.2e}, cos ≥ 0.9998{note}"), ok)
                        } else {
                            (format!("cos ≥ {MIN_COS}"), m.mean_cos >= MIN_COS)
                        };
                        let ok = ok && m.non_finite == 0;
                        (
                            format!(
                                "{} | {} | {:.2e} | {bar}",
                                fmt_cos(m.mean_cos),
                                fmt_cos(m.min_cos),
                                m.rel_l2
                            ),
                            ok,
                        )
                    }
                    Err(e) => (format!("error: {e} | | | "), false),
                };
                writeln!(
                    report,
                    "| {} | {device} | {dtype} | {cells} | {} |",
                    case.id,
                    if ok { "ok" } else { "FAIL" }
                )
                .ok();
                if !ok {
                    failures.push(format!("{} {device} {dtype}: {cells}", case.id));
                }
            }
        }
    }
    if others.is_empty() {
        report.push_str("\nno GPU backend under test: nothing to compare\n");
    }
    for s in &plan.skipped {
        writeln!(report, "**{s}**").ok();
    }
    println!("{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Small batches run from a recorded pass from their second call on (CUDA
/// graphs; see crates/vitrine/src/replay.rs). A recorded or replayed pass
/// must give exactly what a plain pass gives, for new pixels every time:
/// stale outputs, a missed input copy or a buffer freed under the recording
/// would all show here.
#[test]
fn recorded_passes_match_plain_passes_bit_for_bit() {
    let plan = backend_plan();
    let cases = cases();
    let case = &cases[0];
    let dir = fixtures().join(&case.layouts[0].1);
    let first = pixels(case);
    let shape = first.shape().to_vec();
    let per: usize = shape[1..].iter().product();
    let one: Vec<usize> = [1].iter().chain(&shape[1..]).copied().collect();
    let base = first.to_f32_vec()[..per].to_vec();
    // Three different images of one shape: the fixture's, mirrored, dimmed.
    let variants: Vec<HostTensor> = [
        base.clone(),
        base.iter().rev().copied().collect(),
        base.iter().map(|v| v * 0.5 - 0.25).collect(),
    ]
    .into_iter()
    .map(|v| HostTensor::from_f32(one.clone(), v).expect("pixels"))
    .collect();
    let out = |e: &Encoder, px: &HostTensor| -> Vec<f32> {
        let r = e.forward_pixels(px).expect("forward");
        r[0].last_hidden_state.to_f32_vec()
    };
    for device in &plan.run {
        for dtype in DType::ALL {
            let enc = Encoder::from_dir(&dir, *device, dtype).expect("load");
            // Plain, recorded, replayed, replayed again on the first image.
            let runs: Vec<Vec<f32>> = [0, 1, 2, 0]
                .iter()
                .map(|&i| out(&enc, &variants[i]))
                .collect();
            for (i, px) in variants.iter().enumerate() {
                // A fresh encoder's first pass of a shape is always plain.
                let fresh = Encoder::from_dir(&dir, *device, dtype).expect("load");
                let plain = out(&fresh, px);
                let seen: Vec<usize> = [0, 1, 2, 0]
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v == i)
                    .map(|(k, _)| k)
                    .collect();
                for k in seen {
                    let same = runs[k]
                        .iter()
                        .zip(&plain)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{device} {dtype}: pass {k} (image {i}) differs from a plain pass"
                    );
                }
            }
            assert_ne!(
                runs[0], runs[1],
                "{device} {dtype}: different images, same outputs"
            );
            // CUDA must really have replayed (else this test checked nothing
            // there); the CPU and HIP backends record nothing.
            let timing = enc.time_forward(&variants[0], 1).expect("timed pass");
            let expect = matches!(device, Device::Cuda(_));
            assert_eq!(
                (timing.replayed, timing.record_failure.as_deref()),
                (expect, None),
                "{device} {dtype}: recorded pass expected: {expect}"
            );
        }
    }
}
