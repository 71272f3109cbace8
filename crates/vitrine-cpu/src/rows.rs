//! Row-wise reference kernels on fp32 slices.
//!
//! Every function reads widened fp32 inputs and writes fp32 results; the
//! caller rounds once to the storage type. Statistics accumulate in f64 so the
//! CPU backend is the most precise reference the GPU backends are held to.

use rayon::prelude::*;

use crate::interp::{bicubic_taps, bilinear_taps};
use vitrine_core::{ResizeMode, ResizeSpec};

/// LayerNorm of each `width`-wide row.
pub fn layer_norm(x: &[f32], width: usize, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .for_each(|(y, row)| {
            let n = width as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for (((y, &v), &w), &b) in y.iter_mut().zip(row).zip(w).zip(b) {
                *y = ((v as f64 - mean) * rstd * w as f64 + b as f64) as f32;
            }
        });
    out
}

/// RMSNorm of each row; `round` applies the storage rounding that HF performs
/// between normalising and multiplying by the weight.
pub fn rms_norm(
    x: &[f32],
    width: usize,
    w: &[f32],
    eps: f32,
    round: impl Fn(f32) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .for_each(|(y, row)| {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
            let r = 1.0 / (ms + eps as f64).sqrt();
            for ((y, &v), &w) in y.iter_mut().zip(row).zip(w) {
                *y = round((v as f64 * r) as f32) * w;
            }
        });
    out
}

/// Exact-erf GELU, evaluated in f64.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    x.par_iter()
        .map(|&v| {
            let v = v as f64;
            (0.5 * v * (1.0 + libm::erf(v * std::f64::consts::FRAC_1_SQRT_2))) as f32
        })
        .collect()
}

/// `x + gamma ⊙ r`, gamma broadcast over rows.
pub fn residual(x: &[f32], r: &[f32], gamma: Option<&[f32]>, width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width).zip(r.par_chunks(width)))
        .for_each(|(y, (xr, rr))| match gamma {
            Some(g) => {
                for (((y, &a), &b), &g) in y.iter_mut().zip(xr).zip(rr).zip(g) {
                    *y = g.mul_add(b, a);
                }
            }
            None => {
                for ((y, &a), &b) in y.iter_mut().zip(xr).zip(rr) {
                    *y = a + b;
                }
            }
        });
    out
}

/// Resize of a channels-last grid `[in_h, in_w, c]`; returns the window
/// `[window_h, window_w, c]`.
pub fn resize(x: &[f32], c: usize, spec: &ResizeSpec) -> Vec<f32> {
    let mut out = vec![0.0f32; spec.window_h * spec.window_w * c];
    let at = |y: usize, xx: usize| &x[(y * spec.in_w + xx) * c..(y * spec.in_w + xx + 1) * c];
    out.par_chunks_mut(spec.window_w * c)
        .enumerate()
        .for_each(|(oy, row)| match spec.mode {
            ResizeMode::Bilinear => {
                let ty = bilinear_taps(spec.in_h, spec.out_h, oy, spec.align_corners);
                for ox in 0..spec.window_w {
                    let tx = bilinear_taps(spec.in_w, spec.out_w, ox, spec.align_corners);
                    let (a, b) = (at(ty.index[0], tx.index[0]), at(ty.index[0], tx.index[1]));
                    let (cc, d) = (at(ty.index[1], tx.index[0]), at(ty.index[1], tx.index[1]));
                    let [y0, y1] = ty.weight;
                    let [x0, x1] = tx.weight;
                    for ch in 0..c {
                        row[ox * c + ch] =
                            y0 * (x0 * a[ch] + x1 * b[ch]) + y1 * (x0 * cc[ch] + x1 * d[ch]);
                    }
                }
            }
            ResizeMode::Bicubic => {
                let ty = bicubic_taps(spec.in_h, spec.out_h, oy, spec.align_corners);
                for ox in 0..spec.window_w {
                    let tx = bicubic_taps(spec.in_w, spec.out_w, ox, spec.align_corners);
                    for ch in 0..c {
                        let mut acc = 0.0f32;
                        for (&iy, &wy) in ty.index.iter().zip(&ty.weight) {
                            let mut line = 0.0f32;
                            for (&ix, &wx) in tx.index.iter().zip(&tx.weight) {
                                line += wx * at(iy, ix)[ch];
                            }
                            acc += wy * line;
                        }
                        row[ox * c + ch] = acc;
                    }
                }
            }
        });
    out
}

/// Patches of `[b, c, h, w]` images as rows `[b·(h/p)·(w/p), c·p·p]`,
/// optionally normalised per channel.
pub fn patchify(
    x: &[f32],
    dims: [usize; 4],
    p: usize,
    norm: Option<([f32; 3], [f32; 3])>,
) -> Vec<f32> {
    let [b, c, h, w] = dims;
    let (gh, gw) = (h / p, w / p);
    let feat = c * p * p;
    let mut out = vec![0.0f32; b * gh * gw * feat];
    out.par_chunks_mut(feat)
        .enumerate()
        .for_each(|(token, row)| {
            let img = token / (gh * gw);
            let (py, px) = ((token % (gh * gw)) / gw, token % gw);
            for ch in 0..c {
                for dy in 0..p {
                    for dx in 0..p {
                        let v = x[((img * c + ch) * h + py * p + dy) * w + px * p + dx];
                        row[(ch * p + dy) * p + dx] = match norm {
                            Some((mean, std)) => (v - mean[ch]) / std[ch],
                            None => v,
                        };
                    }
                }
            }
        });
    out
}
