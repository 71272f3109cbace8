//! Op-level parity, after ggml's `test-backend-ops`: every op of the backend
//! trait, on every backend under test, against a plain f64 reference written
//! here (independent of the backends), over many shapes and all three
//! dtypes; resize against values PyTorch's `F.interpolate` produced.
//!
//! Metric: NMSE = mse(out, ref) / mse(ref, 0), with NaN/Inf counted
//! separately (any is a failure). Inputs are rounded to the dtype first, so
//! the bar measures the op, not the input rounding. An op a backend lacks is
//! reported "not supported" and fails only if that backend is required.
//! Run with `--nocapture` to see the table.

mod common;

use std::fmt::Write;

use common::{backend_plan, committed_fixtures, nmse, read_all, Rng};
use vitrine::Device;
use vitrine_core::{Backend, DType, Error, HostTensor, ResizeMode, ResizeSpec, SeqLayout};
use vitrine_cpu::CpuBackend;

/// Per-dtype NMSE bars: a few units of the output rounding of the type.
fn nmse_bar(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-11,
        DType::F16 => 1e-6,
        DType::BF16 => 5e-5,
    }
}

fn round(values: &[f32], dtype: DType) -> Vec<f32> {
    HostTensor::from_f32_as(vec![values.len()], values, dtype)
        .expect("round")
        .to_f32_vec()
}

struct Report {
    backend: String,
    rows: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn record(
        &mut self,
        op: &str,
        params: &str,
        dtype: DType,
        got: Result<Vec<f64>, Error>,
        reference: &[f64],
        bar: f64,
    ) {
        let (cell, ok) = match got {
            Ok(out) if out.len() != reference.len() => (
                format!("{} values, expected {}", out.len(), reference.len()),
                false,
            ),
            Ok(out) => {
                let (e, bad) = nmse(&out, reference);
                let ok = bad == 0 && e <= bar;
                (
                    format!("nmse {e:.1e} (bar {bar:.0e}), non-finite {bad}"),
                    ok,
                )
            }
            Err(Error::NotSupported { .. }) => ("not supported".to_string(), false),
            Err(e) => (format!("error: {e}"), false),
        };
        let status = if ok { "ok" } else { "FAIL" };
        self.rows.push(format!(
            "| {} | {op} | {params} | {dtype} | {cell} | {status} |",
            self.backend
        ));
        if !ok {
            self.failures
                .push(format!("{} {op} {params} {dtype}: {cell}", self.backend));
        }
    }
}

fn up<B: Backend>(be: &B, shape: &[usize], v: &[f32], dtype: DType) -> B::Tensor {
    be.upload(
        &HostTensor::from_f32(shape.to_vec(), v.to_vec()).expect("host"),
        dtype,
    )
    .expect("upload")
}

fn down<B: Backend>(be: &B, t: Result<B::Tensor, Error>) -> Result<Vec<f64>, Error> {
    let t = t?;
    Ok(be
        .download(&t)?
        .to_f32_vec()
        .into_iter()
        .map(f64::from)
        .collect())
}

fn linear_ops<B: Backend>(be: &B, rng: &mut Rng, r: &mut Report) {
    for (n, k, m, bias) in [
        (1, 1, 1, true),
        (7, 13, 5, true),
        (33, 64, 48, false),
        (197, 96, 160, true),
        (5, 1280, 3, true),
    ] {
        for dtype in DType::ALL {
            let x = round(&rng.normals(n * k, 1.0), dtype);
            let w = round(&rng.normals(m * k, (k as f32).powf(-0.5)), dtype);
            let b = round(&rng.normals(m, 0.5), dtype);
            let mut reference = vec![0.0f64; n * m];
            for i in 0..n {
                for j in 0..m {
                    let dot: f64 = (0..k)
                        .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                        .sum();
                    reference[i * m + j] = dot + if bias { b[j] as f64 } else { 0.0 };
                }
            }
            let bt = up(be, &[m], &b, dtype);
            let got = down(
                be,
                be.linear(
                    &up(be, &[n, k], &x, dtype),
                    &up(be, &[m, k], &w, dtype),
                    bias.then_some(&bt),
                ),
            );
            r.record(
                "linear",
                &format!("n={n} k={k} m={m} bias={bias}"),
                dtype,
                got,
                &reference,
                nmse_bar(dtype),
            );
            // The same layer joining a residual stream, with and without
            // LayerScale (GPU backends fuse both into the GEMM epilogue).
            let res = round(&rng.normals(n * m, 1.0), dtype);
            let gamma = round(&rng.normals(m, 0.3), dtype);
            let gt = up(be, &[m], &gamma, dtype);
            for with_gamma in [false, true] {
                let want: Vec<f64> = (0..n * m)
                    .map(|i| {
                        let g = if with_gamma { gamma[i % m] as f64 } else { 1.0 };
                        res[i] as f64 + g * reference[i]
                    })
                    .collect();
                let got = down(
                    be,
                    be.linear_residual(
                        &up(be, &[n, k], &x, dtype),
                        &up(be, &[m, k], &w, dtype),
                        bias.then_some(&bt),
                        &up(be, &[n, m], &res, dtype),
                        with_gamma.then_some(&gt),
                    ),
                );
                r.record(
                    "linear_residual",
                    &format!("n={n} k={k} m={m} bias={bias} gamma={with_gamma}"),
                    dtype,
                    got,
                    &want,
                    nmse_bar(dtype),
                );
            }
        }
    }
}

fn norm_ops<B: Backend>(be: &B, rng: &mut Rng, r: &mut Report) {
    for (rows, width) in [(1, 1), (5, 48), (3, 1280), (2, 3200), (4, 1025)] {
        for dtype in DType::ALL {
            // An offset mean exercises the variance computation.
            let x: Vec<f32> = round(
                &rng.normals(rows * width, 2.0)
                    .iter()
                    .map(|v| v + 3.0)
                    .collect::<Vec<_>>(),
                dtype,
            );
            let w = round(
                &rng.normals(width, 0.2)
                    .iter()
                    .map(|v| v + 1.0)
                    .collect::<Vec<_>>(),
                dtype,
            );
            let b = round(&rng.normals(width, 0.1), dtype);
            let eps = 1e-6f64;
            let mut ln = vec![0.0; rows * width];
            let mut rms = vec![0.0; rows * width];
            for i in 0..rows {
                let row: Vec<f64> = x[i * width..(i + 1) * width]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let mean = row.iter().sum::<f64>() / width as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                let ms = row.iter().map(|v| v * v).sum::<f64>() / width as f64;
                for j in 0..width {
                    ln[i * width + j] =
                        (row[j] - mean) / (var + eps).sqrt() * w[j] as f64 + b[j] as f64;
                    // HF RMSNorm rounds the normalised value before the weight.
                    let n = round(&[(row[j] / (ms + eps).sqrt()) as f32], dtype)[0] as f64;
                    rms[i * width + j] = n * w[j] as f64;
                }
            }
            let xt = up(be, &[rows, width], &x, dtype);
            let (wt, bt) = (up(be, &[width], &w, dtype), up(be, &[width], &b, dtype));
            let params = format!("{rows}x{width}");
            r.record(
                "layer_norm",
                &params,
                dtype,
                down(be, be.layer_norm(&xt, &wt, &bt, 1e-6)),
                &ln,
                nmse_bar(dtype),
            );
            r.record(
                "rms_norm",
                &params,
                dtype,
                down(be, be.rms_norm(&xt, &wt, 1e-6)),
                &rms,
                nmse_bar(dtype),
            );
        }
    }
}

fn elementwise_ops<B: Backend>(be: &B, rng: &mut Rng, r: &mut Report) {
    for dtype in DType::ALL {
        let n = 4097;
        let x = round(
            &(0..n)
                .map(|i| -8.0 + 16.0 * i as f32 / (n - 1) as f32)
                .collect::<Vec<_>>(),
            dtype,
        );
        let reference: Vec<f64> = x
            .iter()
            .map(|&v| 0.5 * v as f64 * (1.0 + erf(v as f64 / 2f64.sqrt())))
            .collect();
        r.record(
            "gelu",
            &format!("n={n} in [-8, 8]"),
            dtype,
            down(be, be.gelu(&up(be, &[n], &x, dtype))),
            &reference,
            nmse_bar(dtype),
        );

        for (rows, width, with_gamma) in [
            (7, 48, true),
            (7, 48, false),
            (1, 1, true),
            (65, 1280, true),
        ] {
            let a = round(&rng.normals(rows * width, 3.0), dtype);
            let b = round(&rng.normals(rows * width, 1.0), dtype);
            let g = round(
                &(0..width)
                    .map(|_| rng.uniform(0.05, 1.5))
                    .collect::<Vec<_>>(),
                dtype,
            );
            let reference: Vec<f64> = (0..rows * width)
                .map(|i| {
                    a[i] as f64 + if with_gamma { g[i % width] as f64 } else { 1.0 } * b[i] as f64
                })
                .collect();
            let gt = up(be, &[width], &g, dtype);
            let got = down(
                be,
                be.residual(
                    &up(be, &[rows, width], &a, dtype),
                    &up(be, &[rows, width], &b, dtype),
                    with_gamma.then_some(&gt),
                ),
            );
            r.record(
                "residual",
                &format!("{rows}x{width} gamma={with_gamma}"),
                dtype,
                got,
                &reference,
                nmse_bar(dtype),
            );
        }

        // Casts must round exactly like `half` (round to nearest even).
        let x = rng.normals(1000, 100.0);
        for to in DType::ALL {
            let reference: Vec<f64> = round(&round(&x, dtype), to)
                .into_iter()
                .map(f64::from)
                .collect();
            let got = down(be, be.cast(&up(be, &[1000], &x, dtype), to));
            r.record(
                "cast",
                &format!("{dtype}->{to}"),
                dtype,
                got,
                &reference,
                0.0,
            );
        }
    }
}

fn erf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is too coarse for a reference; use the
    // series / continued fraction split with f64 accuracy.
    if x.abs() < 2.5 {
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-18 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), accurate for |x| >= 2.5.
        let z = x.abs();
        let mut f = z;
        let (mut c, mut d) = (z, 0.0f64);
        for n in 1..300 {
            let an = n as f64 / 2.0;
            d = z + an * d;
            d = 1.0 / d;
            c = z + an / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

fn attention_ops<B: Backend>(be: &B, rng: &mut Rng, r: &mut Report) {
    // Among them: sequences of 5 tiles of 64 keys at head dims 64, 80 and
    // 128, so the Hopper kernel's ring of 4 tile slots wraps around; head_dim
    // 60 with a row stride that is not a multiple of 8 elements (the
    // unaligned tile fetch); and 64 sequences of mixed lengths, enough query
    // tiles that each block of the persistent Hopper kernel (one per
    // multiprocessor) walks several, its ring running on across them, some
    // of them past the end of a short sequence.
    let many: Vec<usize> = [130, 7, 260, 64].repeat(16);
    let shapes: [(&[usize], usize, usize); 11] = [
        (&[1], 1, 8),
        (&[17, 5, 1], 2, 16),
        (&[37, 290], 3, 64),
        (&[50, 3], 4, 72),
        (&[33], 2, 80),
        (&[300, 7], 1, 128),
        (&[197], 2, 12),
        (&[300, 130], 2, 80),
        (&[70, 9], 3, 60),
        (&many, 4, 80),
        (&many, 4, 64),
    ];
    for (lengths, heads, dh) in shapes {
        let seqs = SeqLayout::from_lengths(lengths).expect("layout");
        let (t, d) = (seqs.total(), heads * dh);
        let scale = (dh as f64).powf(-0.5);
        for dtype in DType::ALL {
            let q = round(&rng.normals(t * d, 1.5), dtype);
            let k = round(&rng.normals(t * d, 1.5), dtype);
            let v = round(&rng.normals(t * d, 1.0), dtype);
            let mut reference = vec![0.0f64; t * d];
            for s in 0..seqs.len() {
                let range = seqs.range(s);
                for h in 0..heads {
                    for i in range.clone() {
                        let scores: Vec<f64> = range
                            .clone()
                            .map(|j| {
                                (0..dh)
                                    .map(|c| {
                                        q[i * d + h * dh + c] as f64 * k[j * d + h * dh + c] as f64
                                    })
                                    .sum::<f64>()
                                    * scale
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for c in 0..dh {
                            reference[i * d + h * dh + c] = range
                                .clone()
                                .zip(&e)
                                .map(|(j, p)| p / z * v[j * d + h * dh + c] as f64)
                                .sum();
                        }
                    }
                }
            }
            let got = down(
                be,
                be.attention(
                    &up(be, &[t, d], &q, dtype),
                    &up(be, &[t, d], &k, dtype),
                    &up(be, &[t, d], &v, dtype),
                    &seqs,
                    heads,
                    scale as f32,
                ),
            );
            r.record(
                "attention",
                &format!(
                    "seqs={} heads={heads} head_dim={dh}",
                    lengths_label(lengths)
                ),
                dtype,
                got,
                &reference,
                nmse_bar(dtype),
            );
        }
    }
}

/// Sequence lengths for a report row: a long list as its repeating unit
/// times the count (`[130, 7, 260, 64]×16`).
fn lengths_label(lengths: &[usize]) -> String {
    let unit = (1..=lengths.len())
        .find(|&n| lengths.len().is_multiple_of(n) && lengths.chunks(n).all(|c| c == &lengths[..n]))
        .unwrap_or(lengths.len());
    match lengths.len() / unit {
        1 => format!("{lengths:?}"),
        times => format!("{:?}×{times}", &lengths[..unit]),
    }
}

fn layout_ops<B: Backend>(be: &B, rng: &mut Rng, r: &mut Report) {
    for dtype in DType::ALL {
        let (rows, cols) = (9, 7);
        let x = round(&rng.normals(rows * cols, 1.0), dtype);
        let y = round(&rng.normals(2 * cols, 1.0), dtype);
        let xt = up(be, &[rows, cols], &x, dtype);
        let yt = up(be, &[2, cols], &y, dtype);
        let cat: Vec<f64> = x.iter().chain(&y).map(|&v| v as f64).collect();
        r.record(
            "concat_rows",
            "9x7 + 2x7",
            dtype,
            down(be, be.concat_rows(&[&xt, &yt])),
            &cat,
            0.0,
        );
        let rows_ref: Vec<f64> = x[2 * cols..6 * cols].iter().map(|&v| v as f64).collect();
        r.record(
            "slice_rows",
            "9x7 [2..6)",
            dtype,
            down(be, be.slice_rows(&xt, 2, 4)),
            &rows_ref,
            0.0,
        );
        let cols_ref: Vec<f64> = (0..rows)
            .flat_map(|i| x[i * cols + 3..i * cols + 5].to_vec())
            .map(f64::from)
            .collect();
        r.record(
            "slice_cols",
            "9x7 [3..5)",
            dtype,
            down(be, be.slice_cols(&xt, 3, 2)),
            &cols_ref,
            0.0,
        );

        for (b, h, w, p, normalise) in [
            (1, 8, 12, 4, true),
            (2, 28, 14, 14, false),
            (1, 4, 4, 4, true),
        ] {
            let px = round(
                &(0..b * 3 * h * w)
                    .map(|_| rng.uniform(0.0, 1.0))
                    .collect::<Vec<_>>(),
                dtype,
            );
            let (mean, std) = ([0.48f32, 0.46, 0.41], [0.27f32, 0.26, 0.28]);
            let (gh, gw) = (h / p, w / p);
            let mut reference = Vec::new();
            for img in 0..b {
                for py in 0..gh {
                    for pxx in 0..gw {
                        for c in 0..3 {
                            for dy in 0..p {
                                for dx in 0..p {
                                    let v = px[((img * 3 + c) * h + py * p + dy) * w + pxx * p + dx]
                                        as f64;
                                    reference.push(if normalise {
                                        (v - mean[c] as f64) / std[c] as f64
                                    } else {
                                        v
                                    });
                                }
                            }
                        }
                    }
                }
            }
            let got = down(
                be,
                be.patchify(
                    &up(be, &[b, 3, h, w], &px, dtype),
                    p,
                    normalise.then_some((mean, std)),
                ),
            );
            let bar = if normalise { nmse_bar(dtype) } else { 0.0 };
            r.record(
                "patchify",
                &format!("[{b},3,{h},{w}] p={p} norm={normalise}"),
                dtype,
                got,
                &reference,
                bar,
            );
        }
    }
}

/// Resize against PyTorch's own outputs, and the window against the full resize.
fn resize_ops<B: Backend>(be: &B, rng: &mut Rng, r: &mut Report) {
    let interp = read_all(&committed_fixtures().join("interp.safetensors"));
    let names: Vec<String> = interp
        .keys()
        .filter_map(|k| k.strip_suffix(".input").map(str::to_string))
        .collect();
    assert!(names.len() >= 24, "interp fixtures missing");
    for name in names {
        let (input, output) = (
            &interp[&format!("{name}.input")],
            &interp[&format!("{name}.output")],
        );
        let (c, hi, wi) = (input.shape[0], input.shape[1], input.shape[2]);
        let (ho, wo) = (output.shape[1], output.shape[2]);
        let mode = if name.starts_with("bicubic") {
            ResizeMode::Bicubic
        } else {
            ResizeMode::Bilinear
        };
        let align = name.ends_with("ac1");
        // Channels-first fixture → channels-last grid rows.
        let grid: Vec<f32> = (0..hi * wi)
            .flat_map(|p| (0..c).map(move |ch| (ch, p)))
            .map(|(ch, p)| input.data[ch * hi * wi + p] as f32)
            .collect();
        let reference: Vec<f64> = (0..ho * wo)
            .flat_map(|p| (0..c).map(move |ch| output.data[ch * ho * wo + p]))
            .collect();
        let spec = ResizeSpec::full(mode, align, (hi, wi), (ho, wo));
        let got = down(
            be,
            be.resize(&up(be, &[hi * wi, c], &grid, DType::F32), &spec),
        );
        r.record(
            "resize vs F.interpolate",
            &name,
            DType::F32,
            got,
            &reference,
            1e-12,
        );
    }
    for mode in [ResizeMode::Bilinear, ResizeMode::Bicubic] {
        for dtype in DType::ALL {
            let (c, n, m, h, w) = (6, 8, 11, 7, 10);
            let grid = round(&rng.normals(n * n * c, 1.0), dtype);
            let t = up(be, &[n * n, c], &grid, dtype);
            let full = be
                .resize(&t, &ResizeSpec::full(mode, false, (n, n), (m, m)))
                .and_then(|f| be.download(&f))
                .expect("full resize");
            let full = full.to_f32_vec();
            let reference: Vec<f64> = (0..h)
                .flat_map(|y| (0..w * c).map(move |i| (y, i)))
                .map(|(y, i)| full[y * m * c + i] as f64)
                .collect();
            let spec = ResizeSpec {
                window_h: h,
                window_w: w,
                ..ResizeSpec::full(mode, false, (n, n), (m, m))
            };
            r.record(
                "resize window",
                &format!("{mode:?} {n}²→{m}², top-left {h}x{w}"),
                dtype,
                down(be, be.resize(&t, &spec)),
                &reference,
                0.0,
            );
        }
    }
}

fn run_all<B: Backend>(be: &B) -> Report {
    let mut r = Report {
        backend: be.name(),
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let mut rng = Rng::new(0x005E_EDF0_0905);
    linear_ops(be, &mut rng, &mut r);
    norm_ops(be, &mut rng, &mut r);
    elementwise_ops(be, &mut rng, &mut r);
    attention_ops(be, &mut rng, &mut r);
    layout_ops(be, &mut rng, &mut r);
    resize_ops(be, &mut rng, &mut r);
    r
}

#[test]
fn every_op_matches_its_reference() {
    let plan = backend_plan();
    let mut reports = Vec::new();
    for device in &plan.run {
        match device {
            Device::Cpu => reports.push(run_all(&CpuBackend::new())),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => reports.push(run_all(
                &vitrine::backends::cuda::CudaBackend::new(*i).expect("probed CUDA device"),
            )),
            #[cfg(feature = "hip")]
            Device::Hip(i) => reports.push(run_all(
                &vitrine::backends::hip::HipBackend::new(*i).expect("probed HIP device"),
            )),
            #[allow(unreachable_patterns)]
            other => panic!("{other} is listed as available but this suite has no driver for it"),
        }
    }
    let mut table = String::from("\n## Op-level parity (NMSE vs f64 reference / PyTorch)\n| backend | op | params | dtype | result | status |\n|---|---|---|---|---|---|\n");
    let mut failures = Vec::new();
    for rep in &reports {
        for row in &rep.rows {
            writeln!(table, "{row}").ok();
        }
        failures.extend(rep.failures.iter().cloned());
    }
    let total: usize = reports.iter().map(|r| r.rows.len()).sum();
    writeln!(table, "\n{} checks, {} failed", total, failures.len()).ok();
    for s in &plan.skipped {
        writeln!(table, "**{s}**").ok();
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} op failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
