//! vitrine's CPU backend.
//!
//! Tensors are candle CPU tensors stored in the requested [`DType`]. GEMMs and
//! attention products run in fp32 through the gemm crate (candle's CPU matmul
//! engine), called directly so fp32 operands are read in place and a bias is
//! folded into the product; the other ops are plain Rust reference kernels
//! with f64 statistics. Half-precision tensors are widened to fp32 for every
//! op and rounded once on the way out, so fp16/bf16 runs round between ops
//! exactly where a GPU would, no more and no less.
#![warn(missing_docs)]

mod attention;
mod dense;
pub mod interp;
mod rows;
mod vmath;

use dense::with_rows;

use candle_core::{DType as CDType, Device, Tensor};
use vitrine_core::{
    checks, Backend, DType, Error, HostData, HostTensor, ResizeSpec, Result, SeqLayout, TensorInfo,
};

/// A tensor of the CPU backend.
#[derive(Clone, Debug)]
pub struct CpuTensor(Tensor);

impl CpuTensor {
    /// The underlying candle tensor.
    pub fn inner(&self) -> &Tensor {
        &self.0
    }
}

impl TensorInfo for CpuTensor {
    fn dims(&self) -> Vec<usize> {
        self.0.dims().to_vec()
    }

    fn dtype(&self) -> DType {
        from_candle_dtype(self.0.dtype())
    }
}

/// The CPU backend. Threads come from rayon's global pool (`RAYON_NUM_THREADS`);
/// every op, GEMMs included, uses as many threads as that pool has.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// Creates the backend; it has no state.
    pub fn new() -> Self {
        CpuBackend
    }
}

fn to_candle_dtype(d: DType) -> CDType {
    match d {
        DType::F32 => CDType::F32,
        DType::F16 => CDType::F16,
        DType::BF16 => CDType::BF16,
    }
}

fn from_candle_dtype(d: CDType) -> DType {
    match d {
        CDType::F16 => DType::F16,
        CDType::BF16 => DType::BF16,
        _ => DType::F32,
    }
}

/// candle errors on the CPU are bugs in how we call it, not user errors;
/// keep their text for the report.
pub(crate) fn ce(e: candle_core::Error) -> Error {
    Error::Backend(format!("candle: {e}"))
}

/// Widens a tensor to fp32 values in row-major order.
pub(crate) fn f32_values(x: &Tensor) -> Result<Vec<f32>> {
    x.to_dtype(CDType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(ce)
}

/// Builds a tensor of `dtype` from fp32 values: the one rounding of an op.
pub(crate) fn from_f32(values: Vec<f32>, dims: &[usize], dtype: DType) -> Result<CpuTensor> {
    Tensor::from_vec(values, dims, &Device::Cpu)
        .and_then(|t| t.to_dtype(to_candle_dtype(dtype)))
        .map(CpuTensor)
        .map_err(ce)
}

fn expect_rank2(op: &str, x: &CpuTensor) -> Result<(usize, usize)> {
    checks::rank2(op, x.0.dims())
}

fn expect_vector(op: &str, v: &CpuTensor, len: usize) -> Result<()> {
    if v.0.dims() != [len] {
        return Err(Error::shape(
            op,
            format!("expected a vector of {len}, got {:?}", v.0.dims()),
        ));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn upload(&self, host: &HostTensor, dtype: DType) -> Result<CpuTensor> {
        let dims = host.shape().to_vec();
        let t = match host.data() {
            HostData::F32(v) => Tensor::from_slice(v, dims, &Device::Cpu),
            HostData::F16(v) => Tensor::from_slice(v, dims, &Device::Cpu),
            HostData::BF16(v) => Tensor::from_slice(v, dims, &Device::Cpu),
        };
        t.and_then(|t| t.to_dtype(to_candle_dtype(dtype)))
            .map(CpuTensor)
            .map_err(ce)
    }

    fn download(&self, x: &CpuTensor) -> Result<HostTensor> {
        let dims = x.0.dims().to_vec();
        let flat = x.0.flatten_all().map_err(ce)?;
        let data = match x.dtype() {
            DType::F32 => HostData::F32(flat.to_vec1().map_err(ce)?),
            DType::F16 => HostData::F16(flat.to_vec1().map_err(ce)?),
            DType::BF16 => HostData::BF16(flat.to_vec1().map_err(ce)?),
        };
        HostTensor::new(dims, data)
    }

    fn cast(&self, x: &CpuTensor, dtype: DType) -> Result<CpuTensor> {
        x.0.to_dtype(to_candle_dtype(dtype))
            .map(CpuTensor)
            .map_err(ce)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, b: Option<&CpuTensor>) -> Result<CpuTensor> {
        let (n, k) = expect_rank2("linear input", x)?;
        let (m, kw) = expect_rank2("linear weight", w)?;
        if k != kw {
            return Err(Error::shape(
                "linear",
                format!("input [{n}, {k}] vs weight [{m}, {kw}]"),
            ));
        }
        if let Some(b) = b {
            expect_vector("linear bias", b, m)?;
        }
        let y = with_rows(&x.0, |xr| {
            with_rows(&w.0, |wr| match b {
                Some(b) => with_rows(&b.0, |br| Ok(dense::linear(xr, wr, Some(br.data)))),
                None => Ok(dense::linear(xr, wr, None)),
            })
        })?;
        from_f32(y, &[n, m], x.dtype())
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        let (r, c) = expect_rank2("layer_norm", x)?;
        expect_vector("layer_norm weight", w, c)?;
        expect_vector("layer_norm bias", b, c)?;
        let y = with_rows(&x.0, |xr| {
            with_rows(&w.0, |wr| {
                with_rows(&b.0, |br| Ok(rows::layer_norm(xr, wr.data, br.data, eps)))
            })
        })?;
        from_f32(y, &[r, c], x.dtype())
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        let (r, c) = expect_rank2("rms_norm", x)?;
        expect_vector("rms_norm weight", w, c)?;
        let dtype = x.dtype();
        let round = move |v: f32| match dtype {
            DType::F32 => v,
            DType::F16 => half::f16::from_f32(v).to_f32(),
            DType::BF16 => half::bf16::from_f32(v).to_f32(),
        };
        let y = with_rows(&x.0, |xr| {
            with_rows(&w.0, |wr| Ok(rows::rms_norm(xr, wr.data, eps, round)))
        })?;
        from_f32(y, &[r, c], dtype)
    }

    fn gelu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let y = with_rows(&x.0, |xr| {
            Ok(if xr.stride == xr.cols {
                rows::gelu(xr.data)
            } else {
                rows::gelu(&f32_values(&x.0)?)
            })
        })?;
        from_f32(y, x.0.dims(), x.dtype())
    }

    fn residual(
        &self,
        x: &CpuTensor,
        r: &CpuTensor,
        gamma: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let (n, c) = expect_rank2("residual", x)?;
        if r.0.dims() != [n, c] {
            return Err(Error::shape(
                "residual",
                format!("[{n}, {c}] + {:?}", r.0.dims()),
            ));
        }
        if let Some(g) = gamma {
            expect_vector("residual gamma", g, c)?;
        }
        let y = with_rows(&x.0, |xr| {
            with_rows(&r.0, |rr| match gamma {
                Some(g) => with_rows(&g.0, |gr| Ok(rows::residual(xr, rr, Some(gr.data)))),
                None => Ok(rows::residual(xr, rr, None)),
            })
        })?;
        from_f32(y, &[n, c], x.dtype())
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        seqs: &SeqLayout,
        heads: usize,
        scale: f32,
    ) -> Result<CpuTensor> {
        attention::attention(q, k, v, seqs, heads, scale)
    }

    fn resize(&self, grid: &CpuTensor, spec: &ResizeSpec) -> Result<CpuTensor> {
        let (n, c) = expect_rank2("resize", grid)?;
        if !spec.is_valid() || n != spec.in_h * spec.in_w {
            return Err(Error::shape(
                "resize",
                format!("grid [{n}, {c}] with {spec:?}"),
            ));
        }
        let y = rows::resize(&f32_values(&grid.0)?, c, spec);
        from_f32(y, &[spec.window_h * spec.window_w, c], grid.dtype())
    }

    fn patchify(
        &self,
        pixels: &CpuTensor,
        patch: usize,
        norm: Option<([f32; 3], [f32; 3])>,
    ) -> Result<CpuTensor> {
        let dims = checks::patchify(pixels.0.dims(), patch, norm.is_some())?;
        let [b, c, h, w] = dims;
        let y = rows::patchify(&f32_values(&pixels.0)?, dims, patch, norm);
        from_f32(
            y,
            &[b * (h / patch) * (w / patch), c * patch * patch],
            pixels.dtype(),
        )
    }

    fn concat_rows(&self, parts: &[&CpuTensor]) -> Result<CpuTensor> {
        let tensors: Vec<&Tensor> = parts.iter().map(|p| &p.0).collect();
        Tensor::cat(&tensors, 0).map(CpuTensor).map_err(ce)
    }

    fn slice_rows(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let (r, _) = expect_rank2("slice_rows", x)?;
        if start + len > r {
            return Err(Error::shape(
                "slice_rows",
                format!("rows {start}..{} of {r}", start + len),
            ));
        }
        x.0.narrow(0, start, len)
            .and_then(|t| t.contiguous())
            .map(CpuTensor)
            .map_err(ce)
    }

    /// A view of the columns, not a copy: every op of this backend reads
    /// strided rows in place (and candle copies where it needs to).
    fn slice_cols(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let (_, c) = expect_rank2("slice_cols", x)?;
        if start + len > c {
            return Err(Error::shape(
                "slice_cols",
                format!("columns {start}..{} of {c}", start + len),
            ));
        }
        x.0.narrow(1, start, len).map(CpuTensor).map_err(ce)
    }
}
