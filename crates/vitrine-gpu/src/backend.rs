use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vitrine_core::{
    checks, touched_vec, Backend, DType, Error, HostData, HostTensor, MemoryStats, Replay,
    ResizeMode, ResizeSpec, Result, SeqLayout, TensorInfo,
};

use crate::attention::{self, AttentionKernel, Plan};
use crate::profile::{OpProfile, Timed};
use crate::runtime::{ColumnBlockMap, DeviceBuffer, Gemm, GpuRuntime, KernelArg, KernelModule};

/// A device tensor: a shared allocation, a byte offset into it, dims, dtype
/// and, for 2-D tensors, a row stride. Row and column slices are views, never
/// copies (a column slice keeps its parent's row stride, which is how q, k
/// and v reach attention straight out of the fused qkv buffer). Ops never
/// write into their inputs, so sharing an allocation is safe.
pub struct GpuTensor<R: GpuRuntime> {
    buf: Arc<Tracked<R>>,
    offset: usize,
    dims: Vec<usize>,
    dtype: DType,
    /// Elements between the starts of consecutive rows (2-D tensors); equal
    /// to the last dim for a dense tensor.
    ld: usize,
}

/// Live and high-water device bytes allocated through one backend.
#[derive(Default)]
struct MemCounter {
    live: AtomicU64,
    peak: AtomicU64,
}

/// A runtime buffer that reports its size to the backend's counter.
struct Tracked<R: GpuRuntime> {
    buf: R::Buffer,
    counter: Arc<MemCounter>,
}

impl<R: GpuRuntime> Tracked<R> {
    fn new(buf: R::Buffer, counter: &Arc<MemCounter>) -> Self {
        let bytes = buf.len_bytes() as u64;
        let live = counter.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        counter.peak.fetch_max(live, Ordering::Relaxed);
        Self {
            buf,
            counter: counter.clone(),
        }
    }

    fn device_ptr(&self) -> u64 {
        self.buf.device_ptr()
    }
}

impl<R: GpuRuntime> Drop for Tracked<R> {
    fn drop(&mut self) {
        let bytes = self.buf.len_bytes() as u64;
        self.counter.live.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl<R: GpuRuntime> Clone for GpuTensor<R> {
    fn clone(&self) -> Self {
        Self {
            buf: self.buf.clone(),
            offset: self.offset,
            dims: self.dims.clone(),
            dtype: self.dtype,
            ld: self.ld,
        }
    }
}

impl<R: GpuRuntime> TensorInfo for GpuTensor<R> {
    fn dims(&self) -> Vec<usize> {
        self.dims.clone()
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

impl<R: GpuRuntime> GpuTensor<R> {
    fn ptr(&self) -> u64 {
        self.buf.device_ptr() + self.offset as u64
    }

    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    fn arg(&self) -> KernelArg {
        KernelArg::Ptr(self.ptr())
    }

    /// Whether rows are packed back to back (always true below rank 2).
    fn is_dense(&self) -> bool {
        self.dims.len() != 2 || self.ld == self.dims[1]
    }
}

/// The row stride of a dense tensor of these dims.
fn dense_ld(dims: &[usize]) -> usize {
    dims.last().copied().unwrap_or(1)
}

/// One small device buffer kept with the host value it was made from.
type Cached<K, R> = Mutex<Option<(K, Arc<Tracked<R>>)>>;

/// A [`Backend`] on any [`GpuRuntime`].
pub struct GpuBackend<R: GpuRuntime> {
    rt: R,
    memory: Arc<MemCounter>,
    attention: AttentionKernel,
    profile: Option<OpProfile>,
    /// The last packed layout's `cu_seqlens` on the device: every block of a
    /// forward pass uses the same one, so it is uploaded once per pass.
    seqs: Cached<SeqLayout, R>,
    /// The last pixel normalisation constants on the device (mean, std).
    stats: Cached<Vec<u32>, R>,
    /// While a pass is being recorded: the backend-owned buffers it reads
    /// (the two caches above), kept alive for as long as the recording,
    /// since the cache may move on to another layout in the meantime.
    pins: Mutex<Option<Vec<Arc<Tracked<R>>>>>,
}

/// A recorded pass and the backend-owned buffers its kernels read.
struct GpuReplay<R: GpuRuntime> {
    graph: Box<dyn Replay>,
    _pins: Vec<Arc<Tracked<R>>>,
}

impl<R: GpuRuntime> Replay for GpuReplay<R> {
    fn replay(&self) -> Result<()> {
        self.graph.replay()
    }
}

fn suffix(d: DType) -> &'static str {
    d.as_str()
}

fn int(v: usize, what: &str) -> Result<KernelArg> {
    i32::try_from(v).map(KernelArg::I32).map_err(|_| {
        Error::InvalidArgument(format!("{what} = {v} exceeds the kernels' 32-bit range"))
    })
}

fn rank2<R: GpuRuntime>(op: &str, x: &GpuTensor<R>) -> Result<(usize, usize)> {
    checks::rank2(op, &x.dims)
}

fn vector<R: GpuRuntime>(op: &str, v: &GpuTensor<R>, len: usize, dtype: DType) -> Result<()> {
    if v.dims != [len] || v.dtype != dtype {
        return Err(Error::shape(
            op,
            format!(
                "expected a {dtype} vector of {len}, got {} {:?}",
                v.dtype, v.dims
            ),
        ));
    }
    Ok(())
}

fn same_dtype<R: GpuRuntime>(op: &str, a: &GpuTensor<R>, b: &GpuTensor<R>) -> Result<()> {
    if a.dtype != b.dtype {
        return Err(Error::shape(
            op,
            format!("dtypes {} and {} differ", a.dtype, b.dtype),
        ));
    }
    Ok(())
}

impl<R: GpuRuntime> GpuBackend<R> {
    /// Opens device `ordinal` of this runtime.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(Self {
            rt: R::open(ordinal)?,
            memory: Arc::default(),
            attention: AttentionKernel::from_env()?,
            profile: OpProfile::from_env(),
            seqs: Mutex::new(None),
            stats: Mutex::new(None),
            pins: Mutex::new(None),
        })
    }

    /// Times `op` when profiling is on (see [`crate::profile`]).
    fn timed(&self, op: &'static str) -> Option<Timed<'_, R>> {
        self.profile.as_ref().map(|p| p.start(&self.rt, op))
    }

    /// A dense copy of a strided view (or the tensor itself when dense), for
    /// the ops whose kernels assume packed rows.
    fn dense(&self, x: &GpuTensor<R>) -> Result<GpuTensor<R>> {
        if x.is_dense() {
            return Ok(x.clone());
        }
        let (rows, cols) = (x.dims[0], x.dims[1]);
        let y = self.alloc(&x.dims, x.dtype)?;
        if rows > 0 && cols > 0 {
            self.copy2d((x.ptr(), x.ld), (y.ptr(), cols), rows, cols, x.dtype)?;
        }
        Ok(y)
    }

    /// The Hopper attention kernel's trailing arguments: `use_tma` and TMA
    /// maps over Q, K and V (boxes of 64 rows × one head), or 0 and empty
    /// maps where the slices do not allow TMA (the kernel then copies every
    /// tile itself). The kernel's own test (`use_tma && vec && head_dim ==
    /// HD`) repeats the alignment checks, so a map is never used where it
    /// was not built.
    fn qkv_tensor_maps(
        &self,
        qkv: [&GpuTensor<R>; 3],
        rows: usize,
        width: usize,
        head_dim: usize,
    ) -> Result<[KernelArg; 4]> {
        let elem = qkv[0].dtype.size_in_bytes();
        let fits =
            |t: &GpuTensor<R>| t.ptr().is_multiple_of(16) && (t.ld * elem).is_multiple_of(16);
        if elem != 2 || !head_dim.is_multiple_of(16) || !qkv.iter().all(|t| fits(t)) {
            let none = KernelArg::TensorMap([0; 16]);
            return Ok([KernelArg::I32(0), none, none, none]);
        }
        let map = |t: &GpuTensor<R>| {
            self.rt
                .column_block_map(&ColumnBlockMap {
                    base: t.ptr(),
                    rows,
                    row_stride_bytes: t.ld * elem,
                    column_blocks: width / 8,
                    box_rows: 64,
                    box_column_blocks: (head_dim / 8) as u32,
                })
                .map(KernelArg::TensorMap)
        };
        Ok([KernelArg::I32(1), map(qkv[0])?, map(qkv[1])?, map(qkv[2])?])
    }

    fn seq_offsets(&self, seqs: &SeqLayout) -> Result<Arc<Tracked<R>>> {
        self.cached_upload(&self.seqs, seqs, || {
            let offsets = seqs
                .offsets()
                .iter()
                .map(|&o| i32::try_from(o).map(i32::to_le_bytes))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::InvalidArgument("more than 2³¹ tokens in one batch".into()))?;
            Ok(offsets.concat())
        })
    }

    /// The normalisation constants (mean then std, f32) on the device; the
    /// last ones are kept, so a forward pass uploads nothing (which a
    /// recorded pass could not do).
    fn pixel_stats(&self, mean: [f32; 3], std: [f32; 3]) -> Result<Arc<Tracked<R>>> {
        let values: Vec<f32> = mean.iter().chain(&std).copied().collect();
        let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        self.cached_upload(&self.stats, &bits, || {
            Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
    }

    /// The buffer `cache` holds for `key`, or `bytes()` uploaded in its
    /// place; pinned to the pass being recorded either way.
    fn cached_upload<K: PartialEq + Clone>(
        &self,
        cache: &Cached<K, R>,
        key: &K,
        bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<Tracked<R>>> {
        let mut cached = cache
            .lock()
            .map_err(|_| Error::Backend("device value cache poisoned".into()))?;
        let buf = match cached.as_ref() {
            Some((k, buf)) if k == key => buf.clone(),
            _ => {
                let buf = Arc::new(self.upload_bytes(&bytes()?)?);
                *cached = Some((key.clone(), buf.clone()));
                buf
            }
        };
        self.pin(&buf)?;
        Ok(buf)
    }

    /// Keeps `buf` alive with the pass being recorded, if any.
    fn pin(&self, buf: &Arc<Tracked<R>>) -> Result<()> {
        let mut pins = self
            .pins
            .lock()
            .map_err(|_| Error::Backend("recording pins poisoned".into()))?;
        if let Some(list) = pins.as_mut() {
            list.push(buf.clone());
        }
        Ok(())
    }

    /// The vendor runtime.
    pub fn runtime(&self) -> &R {
        &self.rt
    }

    fn alloc(&self, dims: &[usize], dtype: DType) -> Result<GpuTensor<R>> {
        let bytes = dims
            .iter()
            .try_fold(dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a {dtype} tensor of {dims:?} is too large to address"
                ))
            })?;
        let buf = self.rt.alloc(bytes.max(1))?;
        Ok(GpuTensor {
            buf: Arc::new(Tracked::new(buf, &self.memory)),
            offset: 0,
            dims: dims.to_vec(),
            dtype,
            ld: dense_ld(dims),
        })
    }

    fn upload_bytes(&self, bytes: &[u8]) -> Result<Tracked<R>> {
        let buf = self.rt.alloc(bytes.len().max(1))?;
        self.rt.copy_to_device(&buf, bytes)?;
        Ok(Tracked::new(buf, &self.memory))
    }

    /// Block size: a multiple of the device's real warp size.
    fn block(&self, wanted: usize) -> u32 {
        let w = self.rt.warp_size().max(1);
        (wanted.div_ceil(w) * w).clamp(w, 1024) as u32
    }

    /// Grid for a grid-stride loop over `n` items with `block` threads.
    fn grid(n: usize, per_block: usize) -> u32 {
        n.div_ceil(per_block.max(1)).clamp(1, 65_535) as u32
    }

    fn elementwise(&self, name: &str, n: usize, args: &[KernelArg]) -> Result<()> {
        let block = self.block(256);
        self.rt.launch(
            KernelModule::Elementwise,
            name,
            Self::grid(n, block as usize),
            block,
            args,
        )
    }

    fn norm_launch(&self, name: &str, rows: usize, cols: usize, args: &[KernelArg]) -> Result<()> {
        let block = self.block(cols.min(256));
        self.rt.launch(
            KernelModule::Norm,
            name,
            rows.clamp(1, 65_535) as u32,
            block,
            args,
        )
    }

    /// Copies a `rows × cols` block between (address, row stride) pairs.
    fn copy2d(
        &self,
        src: (u64, usize),
        dst: (u64, usize),
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> Result<()> {
        let args = [
            KernelArg::Ptr(src.0),
            int(src.1, "ld_src")?,
            KernelArg::Ptr(dst.0),
            int(dst.1, "ld_dst")?,
            int(rows, "rows")?,
            int(cols, "cols")?,
        ];
        self.elementwise(&format!("vt_copy2d_{}", suffix(dtype)), rows * cols, &args)
    }
}

/// The GEMM of a linear layer, `y [n, m] = x [n, k] · w [m, k]ᵀ (+ bias)
/// (+ beta · C_in)`, for shapes already checked. Row-major Y = X · Wᵀ is
/// column-major Yᵀ = W · Xᵀ: A = W read transposed (ld k), B = X as stored
/// (its row stride), C = Y (ld m).
fn linear_gemm<R: GpuRuntime>(
    x: &GpuTensor<R>,
    w: &GpuTensor<R>,
    y: &GpuTensor<R>,
    beta: f32,
    bias: u64,
    c_in: u64,
) -> Gemm {
    let (n, k, m) = (x.dims[0], x.dims[1], w.dims[0]);
    Gemm {
        dtype: x.dtype,
        trans_a: true,
        trans_b: false,
        m,
        n,
        k,
        a: w.ptr(),
        lda: k,
        b: x.ptr(),
        ldb: x.ld,
        c: y.ptr(),
        ldc: m,
        beta,
        bias,
        c_in,
    }
}

/// A host tensor's storage as the bytes a device holds (both little-endian,
/// see the check in lib.rs), without a copy.
fn host_bytes(t: &HostTensor) -> &[u8] {
    match t.data() {
        HostData::F32(v) => bytemuck::cast_slice(v),
        HostData::F16(v) => bytemuck::cast_slice(v),
        HostData::BF16(v) => bytemuck::cast_slice(v),
    }
}

/// `host` stored as `dtype`: itself when it already is, else a converted copy.
fn stored_as(host: &HostTensor, dtype: DType) -> Cow<'_, HostTensor> {
    if host.dtype() == dtype {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(host.to_dtype(dtype))
    }
}

/// A host vector of `n` elements with a device buffer's bytes copied in
/// (pages touched first across threads: see `touched_vec`).
fn download_vec<R: GpuRuntime, T: bytemuck::Pod + Send + Sync>(
    rt: &R,
    src: u64,
    n: usize,
) -> Result<Vec<T>> {
    let mut v = touched_vec(n, T::zeroed());
    rt.copy_to_host(src, bytemuck::cast_slice_mut(&mut v))?;
    Ok(v)
}

impl<R: GpuRuntime> Backend for GpuBackend<R> {
    type Tensor = GpuTensor<R>;

    fn name(&self) -> String {
        self.rt.name()
    }

    fn upload(&self, host: &HostTensor, dtype: DType) -> Result<GpuTensor<R>> {
        let _t = self.timed("upload");
        let buf = self.upload_bytes(host_bytes(&stored_as(host, dtype)))?;
        Ok(GpuTensor {
            buf: Arc::new(buf),
            offset: 0,
            dims: host.shape().to_vec(),
            dtype,
            ld: dense_ld(host.shape()),
        })
    }

    fn record(&self, pass: &mut dyn FnMut() -> Result<()>) -> Result<Option<Box<dyn Replay>>> {
        // The per-op profile synchronises after every op, which a recording
        // cannot contain.
        if !self.rt.can_capture() || self.profile.is_some() {
            pass()?;
            return Ok(None);
        }
        let set_pins = |v: Option<Vec<Arc<Tracked<R>>>>| {
            self.pins
                .lock()
                .map(|mut p| std::mem::replace(&mut *p, v))
                .map_err(|_| Error::Backend("recording pins poisoned".into()))
        };
        set_pins(Some(Vec::new()))?;
        if let Err(e) = self.rt.begin_capture() {
            set_pins(None)?;
            return Err(e);
        }
        let ran = pass();
        let graph = self.rt.end_capture();
        let pins = set_pins(None)?.unwrap_or_default();
        ran?;
        let replay = GpuReplay {
            graph: graph?,
            _pins: pins,
        };
        // Recording ran nothing: this is the pass's first run.
        replay.replay()?;
        Ok(Some(Box::new(replay)))
    }

    fn upload_into(&self, dst: &GpuTensor<R>, host: &HostTensor) -> Result<()> {
        let _t = self.timed("upload");
        if host.shape() != dst.dims.as_slice() || !dst.is_dense() || dst.offset != 0 {
            return Err(Error::shape(
                "upload_into",
                format!("{:?} into a tensor of {:?}", host.shape(), dst.dims),
            ));
        }
        self.rt
            .copy_to_device(&dst.buf.buf, host_bytes(&stored_as(host, dst.dtype)))
    }

    fn download(&self, x: &GpuTensor<R>) -> Result<HostTensor> {
        let _t = self.timed("download");
        let x = &self.dense(x)?;
        let (rt, src, n) = (&self.rt, x.ptr(), x.numel());
        let data = match x.dtype {
            DType::F32 => HostData::F32(download_vec(rt, src, n)?),
            DType::F16 => HostData::F16(download_vec(rt, src, n)?),
            DType::BF16 => HostData::BF16(download_vec(rt, src, n)?),
        };
        HostTensor::new(x.dims.clone(), data)
    }

    fn download_f32(&self, x: &GpuTensor<R>) -> Result<HostTensor> {
        // Widened by a kernel (exact; NaNs come back as the canonical NaN),
        // then copied straight into the result. The f32 copy is one more
        // device buffer the activation estimate does not count: when it does
        // not fit, the host widens instead.
        match self.cast(x, DType::F32) {
            Ok(wide) => self.download(&wide),
            Err(Error::OutOfMemory { .. }) => Ok(self.download(x)?.into_dtype(DType::F32)),
            Err(e) => Err(e),
        }
    }

    fn cast(&self, x: &GpuTensor<R>, dtype: DType) -> Result<GpuTensor<R>> {
        let _t = self.timed("cast");
        if x.dtype == dtype {
            return Ok(x.clone());
        }
        let x = &self.dense(x)?;
        let y = self.alloc(&x.dims, dtype)?;
        let n = x.numel();
        let name = format!("vt_cast_{}_to_{}", suffix(x.dtype), suffix(dtype));
        self.elementwise(&name, n, &[x.arg(), y.arg(), KernelArg::I64(n as i64)])?;
        Ok(y)
    }

    fn linear(
        &self,
        x: &GpuTensor<R>,
        w: &GpuTensor<R>,
        b: Option<&GpuTensor<R>>,
    ) -> Result<GpuTensor<R>> {
        let _t = self.timed("linear");
        let (n, k) = rank2("linear input", x)?;
        let (m, kw) = rank2("linear weight", w)?;
        same_dtype("linear", x, w)?;
        let w = &self.dense(w)?;
        if k != kw {
            return Err(Error::shape(
                "linear",
                format!("input [{n}, {k}] vs weight [{m}, {kw}]"),
            ));
        }
        let y = self.alloc(&[n, m], x.dtype)?;
        if n == 0 || m == 0 {
            return Ok(y);
        }
        let (mut beta, mut bias) = (0.0, 0);
        if let Some(b) = b.filter(|_| self.rt.gemm_bias_epilogue()) {
            vector("linear bias", b, m, x.dtype)?;
            bias = b.ptr();
        } else if let Some(b) = b {
            vector("linear bias", b, m, x.dtype)?;
            // Bias first, then beta = 1: one rounding, like PyTorch's addmm.
            let args = [b.arg(), y.arg(), int(n, "rows")?, int(m, "cols")?];
            self.elementwise(
                &format!("vt_broadcast_rows_{}", suffix(x.dtype)),
                n * m,
                &args,
            )?;
            beta = 1.0;
        }
        self.rt.gemm(&linear_gemm(x, w, &y, beta, bias, 0))?;
        Ok(y)
    }

    fn linear_residual(
        &self,
        x: &GpuTensor<R>,
        w: &GpuTensor<R>,
        b: Option<&GpuTensor<R>>,
        r: &GpuTensor<R>,
        gamma: Option<&GpuTensor<R>>,
    ) -> Result<GpuTensor<R>> {
        let compose = || {
            let y = self.linear(x, w, b)?;
            self.residual(r, &y, gamma)
        };
        // The fused form needs the runtime's epilogue; LayerScale is not
        // folded in (it would scale the residual-free part only).
        if gamma.is_some() || !self.rt.gemm_bias_epilogue() {
            return compose();
        }
        let _t = self.timed("linear_residual");
        let (n, k) = rank2("linear input", x)?;
        let (m, kw) = rank2("linear weight", w)?;
        same_dtype("linear", x, w)?;
        same_dtype("linear residual", x, r)?;
        if k != kw || r.dims != [n, m] {
            return Err(Error::shape(
                "linear_residual",
                format!(
                    "input [{n}, {k}], weight [{m}, {kw}], residual {:?}",
                    r.dims
                ),
            ));
        }
        if let Some(b) = b {
            vector("linear bias", b, m, x.dtype)?;
        }
        if n == 0 || m == 0 {
            return compose();
        }
        let (w, r) = (&self.dense(w)?, &self.dense(r)?);
        let y = self.alloc(&[n, m], x.dtype)?;
        // Y = X·Wᵀ + b + R in one epilogue: R is read as C, Y written as D.
        let bias = b.map_or(0, |b| b.ptr());
        let fused = self.rt.gemm(&linear_gemm(x, w, &y, 1.0, bias, r.ptr()));
        match fused {
            Ok(()) => Ok(y),
            Err(Error::NotSupported { .. }) => compose(),
            Err(e) => Err(e),
        }
    }

    fn layer_norm(
        &self,
        x: &GpuTensor<R>,
        w: &GpuTensor<R>,
        b: &GpuTensor<R>,
        eps: f32,
    ) -> Result<GpuTensor<R>> {
        let _t = self.timed("layer_norm");
        let (rows, cols) = rank2("layer_norm", x)?;
        vector("layer_norm weight", w, cols, x.dtype)?;
        vector("layer_norm bias", b, cols, x.dtype)?;
        let y = self.alloc(&x.dims, x.dtype)?;
        let (c, r) = (int(cols, "cols")?, int(rows, "rows")?);
        let args = [
            x.arg(),
            int(x.ld, "row stride")?,
            w.arg(),
            b.arg(),
            y.arg(),
            c,
            r,
            c,
            KernelArg::F32(eps),
        ];
        // One warp per row while the row fits its registers (VT_LN_PER_LANE).
        let warp = self.rt.warp_size().max(1);
        if cols <= 48 * warp {
            let block = self.block(4 * warp);
            self.rt.launch(
                KernelModule::Norm,
                &format!("vt_layer_norm_warp_{}", suffix(x.dtype)),
                Self::grid(rows, block as usize / warp),
                block,
                &args,
            )?;
        } else {
            self.norm_launch(
                &format!("vt_layer_norm_{}", suffix(x.dtype)),
                rows,
                cols,
                &args,
            )?;
        }
        Ok(y)
    }

    fn rms_norm(&self, x: &GpuTensor<R>, w: &GpuTensor<R>, eps: f32) -> Result<GpuTensor<R>> {
        let _t = self.timed("rms_norm");
        let (rows, cols) = rank2("rms_norm", x)?;
        vector("rms_norm weight", w, cols, x.dtype)?;
        let y = self.alloc(&x.dims, x.dtype)?;
        let (c, r) = (int(cols, "cols")?, int(rows, "rows")?);
        let args = [
            x.arg(),
            int(x.ld, "row stride")?,
            w.arg(),
            y.arg(),
            c,
            r,
            c,
            KernelArg::F32(eps),
        ];
        self.norm_launch(
            &format!("vt_rms_norm_{}", suffix(x.dtype)),
            rows,
            cols,
            &args,
        )?;
        Ok(y)
    }

    fn gelu(&self, x: &GpuTensor<R>) -> Result<GpuTensor<R>> {
        let _t = self.timed("gelu");
        let x = &self.dense(x)?;
        let y = self.alloc(&x.dims, x.dtype)?;
        let n = x.numel();
        self.elementwise(
            &format!("vt_gelu_{}", suffix(x.dtype)),
            n,
            &[x.arg(), y.arg(), KernelArg::I64(n as i64)],
        )?;
        Ok(y)
    }

    fn residual(
        &self,
        x: &GpuTensor<R>,
        r: &GpuTensor<R>,
        gamma: Option<&GpuTensor<R>>,
    ) -> Result<GpuTensor<R>> {
        let _t = self.timed("residual");
        let (rows, cols) = rank2("residual", x)?;
        same_dtype("residual", x, r)?;
        if r.dims != x.dims {
            return Err(Error::shape(
                "residual",
                format!("{:?} + {:?}", x.dims, r.dims),
            ));
        }
        let (x, r) = (&self.dense(x)?, &self.dense(r)?);
        let g = match gamma {
            Some(g) => {
                vector("residual gamma", g, cols, x.dtype)?;
                g.arg()
            }
            None => KernelArg::Ptr(0),
        };
        let y = self.alloc(&x.dims, x.dtype)?;
        let args = [
            x.arg(),
            r.arg(),
            g,
            y.arg(),
            int(rows, "rows")?,
            int(cols, "cols")?,
        ];
        self.elementwise(
            &format!("vt_residual_{}", suffix(x.dtype)),
            rows * cols,
            &args,
        )?;
        Ok(y)
    }

    fn attention(
        &self,
        q: &GpuTensor<R>,
        k: &GpuTensor<R>,
        v: &GpuTensor<R>,
        seqs: &SeqLayout,
        heads: usize,
        scale: f32,
    ) -> Result<GpuTensor<R>> {
        let _t = self.timed("attention");
        if k.dtype != q.dtype || v.dtype != q.dtype {
            return Err(Error::shape(
                "attention",
                format!("dtypes {} {} {}", q.dtype, k.dtype, v.dtype),
            ));
        }
        let (total, width, head_dim) = checks::attention(&q.dims, &k.dims, &v.dims, seqs, heads)?;
        if head_dim > 256 {
            return Err(Error::NotSupported {
                op: "attention with head_dim > 256",
                backend: self.name(),
            });
        }
        let cu = self.seq_offsets(seqs)?;
        let out = self.alloc(&q.dims, q.dtype)?;
        let args = [
            q.arg(),
            int(q.ld, "q row stride")?,
            k.arg(),
            int(k.ld, "k row stride")?,
            v.arg(),
            int(v.ld, "v row stride")?,
            out.arg(),
            int(width, "width")?,
            KernelArg::Ptr(cu.device_ptr()),
            int(seqs.len(), "sequences")?,
            int(seqs.max_len(), "max_seqlen")?,
            int(heads, "heads")?,
            int(head_dim, "head_dim")?,
            KernelArg::F32(scale),
        ];
        let plan = attention::plan(
            self.attention,
            &attention::Call {
                dtype: q.dtype,
                head_dim,
                scale,
                seqs: seqs.len(),
                max_len: seqs.max_len(),
                heads,
            },
            attention::Device {
                warpgroup_mma: self.rt.has_warpgroup_mma(),
                multiprocessors: self.rt.multiprocessors(),
            },
        )
        .map_err(|op| Error::NotSupported {
            op,
            backend: self.name(),
        })?;
        match plan {
            Plan::Tiled {
                name,
                blocks,
                threads,
                shared,
                tensor_maps,
            } => {
                let grid = u32::try_from(blocks).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "attention grid of {blocks} blocks is too large"
                    ))
                })?;
                let mut args = args.to_vec();
                if tensor_maps {
                    args.extend(self.qkv_tensor_maps([q, k, v], total, width, head_dim)?);
                }
                self.rt.launch_shared(
                    KernelModule::Attention,
                    &name,
                    grid,
                    threads,
                    shared,
                    &args,
                )?;
            }
            Plan::Reference { name } => {
                let block = self.block(128);
                let warps = block as usize / self.rt.warp_size().max(1);
                self.rt.launch(
                    KernelModule::Attention,
                    &name,
                    Self::grid(total * heads, warps),
                    block,
                    &args,
                )?;
            }
        }
        Ok(out)
    }

    fn resize(&self, grid: &GpuTensor<R>, spec: &ResizeSpec) -> Result<GpuTensor<R>> {
        let _t = self.timed("resize");
        let (n, c) = rank2("resize", grid)?;
        if !spec.is_valid() || n != spec.in_h * spec.in_w {
            return Err(Error::shape(
                "resize",
                format!("grid [{n}, {c}] with {spec:?}"),
            ));
        }
        let grid = &self.dense(grid)?;
        let y = self.alloc(&[spec.window_h * spec.window_w, c], grid.dtype)?;
        let kind = match spec.mode {
            ResizeMode::Bilinear => "bilinear",
            ResizeMode::Bicubic => "bicubic",
        };
        let args = [
            grid.arg(),
            y.arg(),
            int(c, "channels")?,
            int(spec.in_h, "in_h")?,
            int(spec.in_w, "in_w")?,
            int(spec.out_h, "out_h")?,
            int(spec.out_w, "out_w")?,
            int(spec.window_h, "window_h")?,
            int(spec.window_w, "window_w")?,
            KernelArg::I32(spec.align_corners as i32),
        ];
        let block = self.block(256);
        let elements = spec.window_h * spec.window_w * c;
        let name = format!("vt_resize_{kind}_{}", suffix(grid.dtype));
        self.rt.launch(
            KernelModule::Resize,
            &name,
            Self::grid(elements, block as usize),
            block,
            &args,
        )?;
        Ok(y)
    }

    fn patchify(
        &self,
        pixels: &GpuTensor<R>,
        patch: usize,
        norm: Option<([f32; 3], [f32; 3])>,
    ) -> Result<GpuTensor<R>> {
        let _t = self.timed("patchify");
        let [b, c, h, w] = checks::patchify(&pixels.dims, patch, norm.is_some())?;
        let stats = match norm {
            Some((mean, std)) => Some(self.pixel_stats(mean, std)?),
            None => None,
        };
        let (mean_ptr, std_ptr) = match &stats {
            Some(s) => (s.device_ptr(), s.device_ptr() + 12),
            None => (0, 0),
        };
        let tokens = b * (h / patch) * (w / patch);
        let y = self.alloc(&[tokens, c * patch * patch], pixels.dtype)?;
        let args = [
            pixels.arg(),
            y.arg(),
            KernelArg::Ptr(mean_ptr),
            KernelArg::Ptr(std_ptr),
            int(b, "batch")?,
            int(c, "channels")?,
            int(h, "height")?,
            int(w, "width")?,
            int(patch, "patch")?,
        ];
        let block = self.block(256);
        let name = format!("vt_patchify_{}", suffix(pixels.dtype));
        self.rt.launch(
            KernelModule::Patchify,
            &name,
            Self::grid(y.numel(), block as usize),
            block,
            &args,
        )?;
        Ok(y)
    }

    fn concat_rows(&self, parts: &[&GpuTensor<R>]) -> Result<GpuTensor<R>> {
        let _t = self.timed("concat_rows");
        let first = parts
            .first()
            .ok_or_else(|| Error::InvalidArgument("concat_rows of nothing".into()))?;
        let (_, cols) = rank2("concat_rows", first)?;
        let mut rows = 0;
        for p in parts {
            let (r, c) = rank2("concat_rows", p)?;
            if c != cols || p.dtype != first.dtype {
                return Err(Error::shape(
                    "concat_rows",
                    format!("{:?} {} vs width {cols} {}", p.dims, p.dtype, first.dtype),
                ));
            }
            rows += r;
        }
        let y = self.alloc(&[rows, cols], first.dtype)?;
        let elt = first.dtype.size_in_bytes() as u64;
        let mut at = 0usize;
        for p in parts {
            let r = p.dims[0];
            if r > 0 {
                self.copy2d(
                    (p.ptr(), p.ld),
                    (y.ptr() + (at * cols) as u64 * elt, cols),
                    r,
                    cols,
                    first.dtype,
                )?;
            }
            at += r;
        }
        Ok(y)
    }

    fn slice_rows(&self, x: &GpuTensor<R>, start: usize, len: usize) -> Result<GpuTensor<R>> {
        let (rows, cols) = rank2("slice_rows", x)?;
        if start + len > rows {
            return Err(Error::shape(
                "slice_rows",
                format!("rows {start}..{} of {rows}", start + len),
            ));
        }
        Ok(GpuTensor {
            buf: x.buf.clone(),
            offset: x.offset + start * x.ld * x.dtype.size_in_bytes(),
            dims: vec![len, cols],
            dtype: x.dtype,
            ld: x.ld,
        })
    }

    fn slice_cols(&self, x: &GpuTensor<R>, start: usize, len: usize) -> Result<GpuTensor<R>> {
        let (rows, cols) = rank2("slice_cols", x)?;
        if start + len > cols {
            return Err(Error::shape(
                "slice_cols",
                format!("columns {start}..{} of {cols}", start + len),
            ));
        }
        Ok(GpuTensor {
            buf: x.buf.clone(),
            offset: x.offset + start * x.dtype.size_in_bytes(),
            dims: vec![rows, len],
            dtype: x.dtype,
            ld: x.ld,
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.rt.synchronize()
    }

    /// Bytes held by live tensors (weights included); the runtime's own
    /// workspaces and its allocator's cache are not counted.
    fn memory(&self) -> Option<MemoryStats> {
        Some(MemoryStats {
            live_bytes: self.memory.live.load(Ordering::Relaxed),
            peak_bytes: self.memory.peak.load(Ordering::Relaxed),
        })
    }

    fn reset_peak_memory(&self) {
        let live = self.memory.live.load(Ordering::Relaxed);
        self.memory.peak.store(live, Ordering::Relaxed);
    }
}

impl<R: GpuRuntime> Drop for GpuBackend<R> {
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            eprintln!("per-op device time on {}:\n{}", self.rt.name(), p.report());
        }
    }
}
