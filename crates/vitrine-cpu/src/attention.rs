//! Packed variable-length attention on the CPU, one head at a time.
//!
//! Scores, softmax and the weighted sum run in fp32 (candle GEMMs); only the
//! result is rounded to the storage type. Working per head keeps the score
//! matrix at `len²` floats, so a 1024² RADIO image (4106 tokens) needs 67 MB,
//! not a gigabyte.

use candle_core::{DType as CDType, Tensor, D};
use vitrine_core::{checks, Result, SeqLayout, TensorInfo};

use crate::{ce, CpuTensor};

pub(crate) fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    seqs: &SeqLayout,
    heads: usize,
    scale: f32,
) -> Result<CpuTensor> {
    let (_, _, head_dim) = checks::attention(&q.dims(), &k.dims(), &v.dims(), seqs, heads)?;
    let storage = q.inner().dtype();
    let f32_of = |t: &CpuTensor| t.inner().to_dtype(CDType::F32).map_err(ce);
    let (q, k, v) = (f32_of(q)?, f32_of(k)?, f32_of(v)?);

    let mut outputs = Vec::with_capacity(seqs.len());
    for s in 0..seqs.len() {
        let range = seqs.range(s);
        let rows = |t: &Tensor| t.narrow(0, range.start, range.len()).map_err(ce);
        let (qs, ks, vs) = (rows(&q)?, rows(&k)?, rows(&v)?);
        let mut per_head = Vec::with_capacity(heads);
        for h in 0..heads {
            let cols = |t: &Tensor| {
                t.narrow(1, h * head_dim, head_dim)
                    .and_then(|t| t.contiguous())
                    .map_err(ce)
            };
            let (qh, kh, vh) = (cols(&qs)?, cols(&ks)?, cols(&vs)?);
            let scores = qh.matmul(&kh.t().map_err(ce)?).map_err(ce)?;
            let scores = (scores * scale as f64).map_err(ce)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores).map_err(ce)?;
            per_head.push(probs.matmul(&vh).map_err(ce)?);
        }
        outputs.push(Tensor::cat(&per_head, D::Minus1).map_err(ce)?);
    }
    let out = Tensor::cat(&outputs, 0).map_err(ce)?;
    out.to_dtype(storage).map(CpuTensor).map_err(ce)
}
