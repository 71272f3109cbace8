//! Packed variable-length attention on the CPU.
//!
//! Work is split into independent tasks (sequence, head, block of query
//! rows) run on the rayon pool; each does two single-threaded fp32 GEMMs
//! (the gemm crate, as candle's matmul) straight from the q/k/v rows with
//! their strides, no per-head copies: `S = scale · Q Kᵀ`, an in-place row
//! softmax, then `P V` written into its columns of the output. Scores,
//! softmax and the weighted sum stay fp32; only the result is rounded to
//! the storage type. A task's score block is at most ~1 M floats, so a
//! 1024² RADIO image (4106 tokens) needs a few MB per thread, not a
//! gigabyte.

use rayon::prelude::*;
use vitrine_core::{checks, Result, SeqLayout, TensorInfo};

use crate::dense::{build_with, matmul, with_rows, Operand};
use crate::{from_f32, vmath, CpuTensor};

/// One unit of work: query rows `q0..q0 + qn` of head `head` in the
/// sequence at rows `start..start + len`.
struct Task {
    start: usize,
    len: usize,
    head: usize,
    q0: usize,
    qn: usize,
}

/// Splits every (sequence, head) into query blocks so there are at least
/// ~2 tasks per thread and no score block exceeds `2²⁰` floats.
fn plan(seqs: &SeqLayout, heads: usize, threads: usize) -> Vec<Task> {
    let pairs = (seqs.len() * heads).max(1);
    let split = (2 * threads).div_ceil(pairs).max(1);
    let mut tasks = Vec::new();
    for s in 0..seqs.len() {
        let r = seqs.range(s);
        let len = r.len();
        if len == 0 {
            continue;
        }
        let by_threads = len.div_ceil(split).max(16);
        let by_memory = ((1usize << 20) / len).max(1);
        let qb = by_threads.min(by_memory).min(len);
        for head in 0..heads {
            let mut q0 = 0;
            while q0 < len {
                let qn = qb.min(len - q0);
                tasks.push(Task {
                    start: r.start,
                    len,
                    head,
                    q0,
                    qn,
                });
                q0 += qn;
            }
        }
    }
    tasks
}

/// The output buffer, written by tasks at disjoint (row, column) blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint regions (see `attention`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

pub(crate) fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    seqs: &SeqLayout,
    heads: usize,
    scale: f32,
) -> Result<CpuTensor> {
    let (total, width, hd) = checks::attention(&q.dims(), &k.dims(), &v.dims(), seqs, heads)?;
    let storage = q.dtype();
    let tasks = plan(seqs, heads, rayon::current_num_threads());
    with_rows(q.inner(), |q| {
        with_rows(k.inner(), |k| {
            with_rows(v.inner(), |v| {
                let run = |out: *mut f32| {
                    let out_ptr = OutPtr(out);
                    tasks.par_iter().for_each(|t| {
                        let (col, row0) = (t.head * hd, t.start + t.q0);
                        // SAFETY: q/k/v rows `start..start + len` exist (the
                        // layout covers `total` rows, checked above) with `hd`
                        // columns from `col`; the score block is qn × len and
                        // the GEMM (not reading it) writes all of it.
                        let mut scores = unsafe {
                            build_with(t.qn * t.len, |s| {
                                matmul(
                                    t.qn,
                                    t.len,
                                    hd,
                                    s,
                                    t.len,
                                    false,
                                    Operand::rows(q.data, row0 * q.stride + col, q.stride),
                                    Operand::rows_t(k.data, t.start * k.stride + col, k.stride),
                                    scale,
                                )
                            })
                        };
                        vmath::softmax_rows(&mut scores, t.len);
                        // SAFETY: output rows `row0..row0 + qn`, columns
                        // `col..col + hd` belong to this task alone (tasks
                        // partition (rows, head)); the buffer outlives the loop.
                        unsafe {
                            matmul(
                                t.qn,
                                hd,
                                t.len,
                                out_ptr.get().add(row0 * width + col),
                                width,
                                false,
                                Operand::rows(&scores, 0, t.len),
                                Operand::rows(v.data, t.start * v.stride + col, v.stride),
                                1.0,
                            )
                        };
                    });
                };
                // SAFETY: the tasks partition every (row, head) block of the
                // output (`plan`), and each P·V GEMM writes its whole block.
                let out = if hd == 0 {
                    Vec::new()
                } else {
                    unsafe { build_with(total * width, run) }
                };
                from_f32(out, &[total, width], storage)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_row_once() {
        let seqs = SeqLayout::from_lengths(&[5, 300, 1]).unwrap();
        for threads in [1, 2, 16, 64] {
            let tasks = plan(&seqs, 3, threads);
            let mut seen = vec![0u32; 306 * 3];
            for t in &tasks {
                assert!(t.qn * t.len <= 1 << 20);
                for r in t.q0..t.q0 + t.qn {
                    seen[(t.start + r) * 3 + t.head] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "threads {threads}");
        }
    }
}
