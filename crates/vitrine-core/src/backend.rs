use crate::{DType, HostTensor, ResizeSpec, Result, SeqLayout};

/// What model code may ask of any device tensor.
pub trait TensorInfo {
    /// Dimensions, row-major.
    fn dims(&self) -> Vec<usize>;
    /// Storage type.
    fn dtype(&self) -> DType;
}

/// The operations a ViT encoder needs, implemented once per device.
///
/// Activations are 2-D `[rows, width]` matrices: the tokens of every image in
/// a batch are stacked along the rows and described by a [`SeqLayout`].
/// Contract for every implementation:
/// - inputs and outputs are stored in the tensor's [`DType`];
/// - arithmetic accumulates in fp32 and statistics (norms, softmax) are fp32;
/// - each output element is rounded to the storage type once.
///
/// An operation a backend cannot run returns [`crate::Error::NotSupported`];
/// it is never emulated behind the caller's back.
pub trait Backend: Send + Sync {
    /// The device tensor type.
    type Tensor: TensorInfo + Clone + Send + Sync;

    /// A short device name for reports, like `cpu` or `cuda:0`.
    fn name(&self) -> String;

    /// Copies a host tensor to the device, converting it to `dtype`.
    fn upload(&self, host: &HostTensor, dtype: DType) -> Result<Self::Tensor>;

    /// Copies a device tensor back to the host, in its storage type.
    fn download(&self, x: &Self::Tensor) -> Result<HostTensor>;

    /// Copies a device tensor back to the host as f32 (exact for every
    /// storage type). By default widened on the host, across threads; a GPU
    /// backend widens on the device instead, which saves a host pass over
    /// every output (docs/performance.md row 47).
    fn download_f32(&self, x: &Self::Tensor) -> Result<HostTensor> {
        Ok(self.download(x)?.into_dtype(DType::F32))
    }

    /// Converts to another storage type (rounding to nearest even).
    fn cast(&self, x: &Self::Tensor, dtype: DType) -> Result<Self::Tensor>;

    /// `x · wᵀ + b` for `x [n, k]`, `w [m, k]`, `b [m]`, as PyTorch's
    /// `F.linear`: the bias joins the fp32 accumulator before the one rounding.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// LayerNorm over the last axis with affine weight and bias.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// RMSNorm over the last axis with HF's rounding: normalise in fp32, round
    /// to the storage type, then multiply by the weight.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;

    /// GELU with the exact erf form.
    fn gelu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x + gamma ⊙ r` with `gamma [width]` broadcast over rows; without
    /// `gamma` this is the plain residual add. Covers LayerScale.
    fn residual(
        &self,
        x: &Self::Tensor,
        r: &Self::Tensor,
        gamma: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// Non-causal multi-head attention over packed sequences. `q`, `k`, `v`
    /// and the result are `[total, heads · head_dim]`; a query attends to the
    /// keys of its own sequence only.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        seqs: &SeqLayout,
        heads: usize,
        scale: f32,
    ) -> Result<Self::Tensor>;

    /// 2-D resize of a channels-last grid `[in_h · in_w, C]` to
    /// `[window_h · window_w, C]` (see [`ResizeSpec`]), with PyTorch's index
    /// math and fp32 arithmetic.
    fn resize(&self, grid: &Self::Tensor, spec: &ResizeSpec) -> Result<Self::Tensor>;

    /// Cuts images `[b, c, h, w]` into patches `[b · (h/p) · (w/p), c · p · p]`:
    /// row-major patch order, features ordered (channel, row, column).
    /// With `norm = Some((mean, std))` each value becomes `(x − mean) / std`
    /// per channel, in fp32, before the one rounding.
    fn patchify(
        &self,
        pixels: &Self::Tensor,
        patch: usize,
        norm: Option<([f32; 3], [f32; 3])>,
    ) -> Result<Self::Tensor>;

    /// Stacks 2-D tensors of equal width along the rows.
    fn concat_rows(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;

    /// Rows `start .. start + len` of a 2-D tensor.
    fn slice_rows(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;

    /// Columns `start .. start + len` of a 2-D tensor (splits a fused qkv).
    fn slice_cols(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;

    /// `r + gamma ⊙ (x · wᵀ + b)`: a linear layer whose output joins the
    /// residual stream `r` (`gamma` is LayerScale). The default composes
    /// [`Backend::linear`] and [`Backend::residual`], rounding after each as
    /// PyTorch does; a backend may fuse them into one GEMM epilogue with a
    /// single rounding (closer to exact, never further).
    fn linear_residual(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        r: &Self::Tensor,
        gamma: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor> {
        let y = self.linear(x, w, b)?;
        self.residual(r, &y, gamma)
    }

    /// Waits until queued device work is done (timing, error surfacing).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Device memory held by this backend's tensors, where it keeps count
    /// (GPU backends); `None` where host memory is simply the process's.
    fn memory(&self) -> Option<MemoryStats> {
        None
    }

    /// Restarts the high-water mark of [`Backend::memory`] from what is live.
    fn reset_peak_memory(&self) {}

    /// Runs `pass` once and, where the backend can record device work (CUDA
    /// graphs), also returns a [`Replay`] of it: the same kernels on the
    /// same buffers, queued with one call instead of one per op, which is
    /// what small batches are bound by. `pass` must only queue device work
    /// (no uploads, downloads or waits); buffers it allocates and keeps stay
    /// valid while the replay lives, and each replay rewrites them. The
    /// default runs `pass` and records nothing.
    fn record(&self, pass: &mut dyn FnMut() -> Result<()>) -> Result<Option<Box<dyn Replay>>> {
        pass()?;
        Ok(None)
    }

    /// Overwrites the contents of `dst` with `host` converted to `dst`'s
    /// dtype (same dims), keeping its buffer: how new inputs reach a
    /// recorded pass.
    fn upload_into(&self, dst: &Self::Tensor, host: &HostTensor) -> Result<()> {
        let _ = (dst, host);
        Err(crate::Error::NotSupported {
            op: "upload_into",
            backend: self.name(),
        })
    }
}

/// A recorded pass of device work (see [`Backend::record`]).
pub trait Replay: Send + Sync {
    /// Queues the recorded work again, on the buffers it was recorded on.
    fn replay(&self) -> Result<()>;
}

/// Bytes of device memory held by live tensors, now and at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Held now.
    pub live_bytes: u64,
    /// The most held at once since the backend opened or the last reset.
    pub peak_bytes: u64,
}
