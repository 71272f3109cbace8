//! Row-wise reference kernels on fp32 slices.
//!
//! Every function reads widened fp32 inputs and writes fp32 results; the
//! caller rounds once to the storage type. Statistics accumulate in f64 so the
//! CPU backend is the most precise reference the GPU backends are held to.
//! Row inputs come as [`Rows`] (row-major with a row stride), so column
//! windows are read in place.

use rayon::prelude::*;

use crate::dense::{par_build, Rows};
use crate::interp::{bicubic_taps, bilinear_taps};
use crate::vmath;
use vitrine_core::{ResizeMode, ResizeSpec};

/// Rows per rayon task for row-wise ops: enough work to amortise a task.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// A new `[x.rows, width]` buffer built in parallel, `row(i, out)` writing
/// every element of output row `i`.
fn par_rows(
    rows: usize,
    width: usize,
    row: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    if width == 0 {
        return Vec::new();
    }
    let per = rows_per_task(width);
    par_build(rows * width, per * width, |t, chunk| {
        for (j, out) in chunk.chunks_mut(width).enumerate() {
            row(t * per + j, out);
        }
    })
}

/// f64 sum of `f(v)` over a row, in eight interleaved partial sums (so it
/// vectorises; the order differs from a serial sum only far below f32).
#[inline(always)]
fn sum_f64(row: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    acc.iter().sum::<f64>() + tail
}

/// LayerNorm of each row.
pub fn layer_norm(x: Rows<'_>, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let width = x.cols;
    par_rows(x.rows, width, |i, y| {
        let row = x.row(i);
        let n = width as f64;
        let mean = sum_f64(row, |v| v) / n;
        let var = sum_f64(row, |v| (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (((y, &v), &w), &b) in y.iter_mut().zip(row).zip(w).zip(b) {
            y.write(((v as f64 - mean) * rstd * w as f64 + b as f64) as f32);
        }
    })
}

/// RMSNorm of each row; `round` applies the storage rounding that HF performs
/// between normalising and multiplying by the weight.
pub fn rms_norm(x: Rows<'_>, w: &[f32], eps: f32, round: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let width = x.cols;
    par_rows(x.rows, width, |i, y| {
        let row = x.row(i);
        let ms = sum_f64(row, |v| v * v) / width as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        for ((y, &v), &w) in y.iter_mut().zip(row).zip(w) {
            y.write(round((v as f64 * r) as f32) * w);
        }
    })
}

/// Exact-erf GELU, evaluated in f64 ([`vmath`]: vectorised erfc, within an
/// ulp of `libm`'s f64 erfc after the f32 rounding).
pub fn gelu(x: &[f32]) -> Vec<f32> {
    const CHUNK: usize = 16_384;
    par_build(x.len(), CHUNK, |i, y| {
        vmath::gelu_into(&x[i * CHUNK..i * CHUNK + y.len()], y)
    })
}

/// `x + gamma ⊙ r`, gamma broadcast over rows.
pub fn residual(x: Rows<'_>, r: Rows<'_>, gamma: Option<&[f32]>) -> Vec<f32> {
    par_rows(x.rows, x.cols, |i, y| {
        let (xr, rr) = (x.row(i), r.row(i));
        match gamma {
            Some(g) => {
                for (((y, &a), &b), &g) in y.iter_mut().zip(xr).zip(rr).zip(g) {
                    y.write(g.mul_add(b, a));
                }
            }
            None => {
                for ((y, &a), &b) in y.iter_mut().zip(xr).zip(rr) {
                    y.write(a + b);
                }
            }
        }
    })
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
