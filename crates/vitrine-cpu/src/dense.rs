//! Zero-copy fp32 views of candle CPU tensors and the one GEMM entry point.
//!
//! An fp32 tensor whose rows are contiguous (a whole tensor, or a column
//! window from [`slice_cols`](crate::CpuBackend)) is read in place from
//! candle's storage; anything else (half types, other layouts) is widened
//! into a contiguous copy first, as every op did before.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType as CDType, Storage, Tensor};
use rayon::prelude::*;
use vitrine_core::Result;

use crate::f32_values;

/// A tensor seen as a row-major fp32 matrix `[rows, cols]` whose row `i`
/// starts at `data[i * stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> Rows<'a> {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.stride..i * self.stride + self.cols]
    }
}

/// `[rows, cols]` of a tensor: rank 2 as is, anything else as
/// `[numel / last, last]` (a vector is one row).
fn matrix_dims(dims: &[usize]) -> (usize, usize) {
    match dims {
        [] => (1, 1),
        [r, c] => (*r, *c),
        _ => {
            let cols = *dims.last().unwrap_or(&1);
            let n: usize = dims.iter().product();
            (n.checked_div(cols).unwrap_or(0), cols)
        }
    }
}

/// Calls `f` with the fp32 rows of `t`, borrowed from candle's storage when
/// possible (fp32, unit column stride), otherwise from a widened copy.
pub(crate) fn with_rows<R>(t: &Tensor, f: impl FnOnce(Rows<'_>) -> Result<R>) -> Result<R> {
    let (rows, cols) = matrix_dims(t.dims());
    if t.dtype() == CDType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let Storage::Cpu(CpuStorage::F32(v)) = &*storage {
            let stride = match layout.stride() {
                _ if layout.is_contiguous() => Some(cols),
                [rs, 1] if *rs >= cols => Some(*rs),
                _ => None,
            };
            if let Some(stride) = stride {
                let start = layout.start_offset();
                let len = if rows == 0 || cols == 0 {
                    0
                } else {
                    (rows - 1) * stride + cols
                };
                return f(Rows {
                    data: &v[start..start + len],
                    rows,
                    cols,
                    stride,
                });
            }
        }
    }
    let values = f32_values(t)?;
    f(Rows {
        data: &values,
        rows,
        cols,
        stride: cols,
    })
}

/// A new fp32 buffer of `len` values, filled in parallel: `fill(i, chunk)`
/// gets the `i`-th run of `chunk` elements (the last may be shorter) and
/// must write every element of it. Nothing is zeroed first (a serial memset
/// of a 20 MB activation costs as much as the op), and pages are first
/// touched by the threads that fill them.
pub(crate) fn par_build(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: `fill` wrote each of the `len` elements (its contract).
    unsafe { v.set_len(len) };
    v
}

/// A buffer of `len` fp32 values written by `write(ptr)`, which must store
/// every element (e.g. a GEMM that does not read its destination).
///
/// # Safety
/// `write` must initialise all `len` elements behind the pointer.
pub(crate) unsafe fn build_with(len: usize, write: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    write(v.as_mut_ptr());
    // SAFETY: forwarded from the caller.
    unsafe { v.set_len(len) };
    v
}

/// A strided fp32 matrix operand of [`matmul`]: element `(i, j)` at
/// `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl Operand {
    /// Row-major rows starting at `data[offset]`.
    pub fn rows(data: &[f32], offset: usize, stride: usize) -> Self {
        Operand {
            ptr: data[offset..].as_ptr(),
            rs: stride,
            cs: 1,
        }
    }

    /// The transpose of row-major rows starting at `data[offset]`.
    pub fn rows_t(data: &[f32], offset: usize, stride: usize) -> Self {
        Operand {
            ptr: data[offset..].as_ptr(),
            rs: 1,
            cs: stride,
        }
    }
}

/// `dst[m, n] = (accumulate ? dst : 0) + scale · lhs[m, k] · rhs[k, n]` in
/// fp32 on the calling thread (the gemm crate candle uses: fp32
/// accumulation, no TF32), with `dst` row-major at row stride `dst_rs`.
/// Callers parallelise over independent products ([`matmul_tiled`],
/// attention's tasks): that beat the gemm crate's own threading, which
/// forks and joins per block of the inner dimension.
///
/// # Safety
/// `lhs`, `rhs` and `dst` must address valid `m × k`, `k × n` and `m × n`
/// matrices under their strides, and `dst` must not overlap the inputs or be
/// written by anyone else during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Splits an `m × n` product (`m` activation rows, `n` weight columns) into
/// about `threads` tiles, `pm` row blocks × `pn` column blocks, one
/// single-threaded GEMM each. Every tile packs its own rows of the left and
/// columns of the right operand, so the left is packed `pn` times and the
/// right `pm` times; the grid minimises `pm·n·W + pn·m` where `W = 4`
/// weighs the weights (cold, read from memory) against the activations
/// (just written, in cache). Measured on a 16-core Xeon, ViT-B/16 batch 8:
/// this picks 2 × 8 for qkv (6.3 ms, vs 7.2 for 4 × 4 and 8.6 for 16 × 1)
/// and 4 × 4 for fc2 (8.6 ms, vs 10.0 for 8 × 2 and 15.4 for the gemm
/// crate's own threading).
fn tile_grid(m: usize, n: usize, threads: usize) -> (usize, usize) {
    const W: usize = 4;
    let mut best = (threads.max(1), 1);
    let mut best_cost = usize::MAX;
    let mut pn = 1;
    while pn <= threads.max(1) {
        let pm = threads.max(1).div_ceil(pn);
        let cost = pm * n * W + pn * m;
        if cost < best_cost && m.div_ceil(pm) >= 16 && n.div_ceil(pn) >= 16 {
            best = (pm, pn);
            best_cost = cost;
        }
        pn *= 2;
    }
    best
}

/// `dst[m, n] = (bias broadcast over rows, or 0) + lhs[m, k] · rhs[k, n]`
/// over a grid of tiles ([`tile_grid`]), one single-threaded GEMM per tile
/// on the rayon pool. Each tile writes its block of bias rows itself just
/// before its GEMM, so the block is first touched, and hot in cache, on the
/// thread that accumulates into it. Writes every element of `dst`.
///
/// # Safety
/// As [`matmul`]; `bias` has `n` values.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_tiled(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    bias: Option<&[f32]>,
    lhs: Operand,
    rhs: Operand,
) {
    #[derive(Clone, Copy)]
    struct P(*mut f32, Operand, Operand);
    // SAFETY: tiles write disjoint blocks of `dst` and only read the inputs.
    unsafe impl Send for P {}
    unsafe impl Sync for P {}
    impl P {
        /// The parts (a method, so closures capture the `Sync` wrapper).
        fn get(self) -> (*mut f32, Operand, Operand) {
            (self.0, self.1, self.2)
        }
    }
    let (pm, pn) = tile_grid(m, n, rayon::current_num_threads());
    let (tm, tn) = (m.div_ceil(pm), n.div_ceil(pn));
    let p = P(dst, lhs, rhs);
    (0..pm * pn).into_par_iter().for_each(|t| {
        let (dst, lhs, rhs) = p.get();
        let (r0, c0) = ((t / pn) * tm, (t % pn) * tn);
        if r0 >= m || c0 >= n {
            return;
        }
        let (mt, nt) = (tm.min(m - r0), tn.min(n - c0));
        let block = dst.wrapping_add(r0 * dst_rs + c0);
        if bias.is_some() || k == 0 {
            for i in 0..mt {
                // SAFETY: row i of this tile's block, nt values.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(
                        block.add(i * dst_rs) as *mut MaybeUninit<f32>,
                        nt,
                    )
                };
                match bias {
                    Some(b) => {
                        for (y, &b) in row.iter_mut().zip(&b[c0..c0 + nt]) {
                            y.write(b);
                        }
                    }
                    None => {
                        for y in row.iter_mut() {
                            y.write(0.0);
                        }
                    }
                }
            }
        }
        if k == 0 {
            return;
        }
        let lhs = Operand {
            ptr: lhs.ptr.wrapping_add(r0 * lhs.rs),
            ..lhs
        };
        let rhs = Operand {
            ptr: rhs.ptr.wrapping_add(c0 * rhs.cs),
            ..rhs
        };
        // SAFETY: the tile lies inside the caller's matrices.
        unsafe { matmul(mt, nt, k, block, dst_rs, bias.is_some(), lhs, rhs, 1.0) }
    });
}

/// `x · wᵀ (+ b)` for row-major `x [n, k]`, `w [m, k]`: one tiled GEMM whose
/// tiles start from the bias rows, so no second pass adds it.
pub(crate) fn linear(x: Rows<'_>, w: Rows<'_>, b: Option<&[f32]>) -> Vec<f32> {
    let (n, k, m) = (x.rows, x.cols, w.rows);
    let (lhs, rhs) = (
        Operand::rows(x.data, 0, x.stride),
        Operand::rows_t(w.data, 0, w.stride),
    );
    // SAFETY: `x`, `w` cover their matrices (`Rows` invariant), `b` has m
    // values (checked by the caller) and the tiles write every element of
    // the fresh n × m buffer.
    unsafe { build_with(n * m, |dst| matmul_tiled(n, m, k, dst, m, b, lhs, rhs)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_grid_prefers_splitting_weight_columns() {
        // ViT-B/16 batch 8 on 16 threads: qkv, fc1, proj, fc2.
        assert_eq!(tile_grid(1648, 2304, 16), (2, 8));
        assert_eq!(tile_grid(1648, 3072, 16), (2, 8));
        assert_eq!(tile_grid(1648, 768, 16), (4, 4));
        // Tiny problems stay whole rather than splitting below 16 × 16.
        assert_eq!(tile_grid(10, 10, 16), (16, 1));
        assert_eq!(tile_grid(1648, 2304, 1), (1, 1));
    }

    #[test]
    fn tiled_linear_matches_reference() {
        let (n, k, m) = (67, 45, 83);
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..m * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..m).map(|i| i as f32).collect();
        fn rows(data: &[f32], rows: usize, cols: usize) -> Rows<'_> {
            Rows {
                data,
                rows,
                cols,
                stride: cols,
            }
        }
        assert_eq!(linear(rows(&[], 3, 0), rows(&[], 2, 0), None), vec![0.0; 6]);
        assert_eq!(
            linear(rows(&[], 2, 0), rows(&[], 2, 0), Some(&[1.0, 2.0])),
            vec![1.0, 2.0, 1.0, 2.0]
        );
        let y = linear(rows(&x, n, k), rows(&w, m, k), Some(&b));
        for i in 0..n {
            for j in 0..m {
                let want: f32 = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum::<f32>() + b[j];
                assert_eq!(y[i * m + j], want, "({i}, {j})");
            }
        }
    }
}
