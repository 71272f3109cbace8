use std::ffi::c_void;

use vitrine_core::{DType, Result};

/// The kernel source file (one per op family) an entry point lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelModule {
    /// `kernels/norm.cu`.
    Norm,
    /// `kernels/elementwise.cu`.
    Elementwise,
    /// `kernels/resize.cu`.
    Resize,
    /// `kernels/patchify.cu`.
    Patchify,
    /// `kernels/attention.cu`.
    Attention,
}

impl KernelModule {
    /// Every module, for embedding and loading.
    pub const ALL: [KernelModule; 5] = [
        KernelModule::Norm,
        KernelModule::Elementwise,
        KernelModule::Resize,
        KernelModule::Patchify,
        KernelModule::Attention,
    ];

    /// The `.cu` file stem.
    pub fn stem(self) -> &'static str {
        match self {
            KernelModule::Norm => "norm",
            KernelModule::Elementwise => "elementwise",
            KernelModule::Resize => "resize",
            KernelModule::Patchify => "patchify",
            KernelModule::Attention => "attention",
        }
    }
}

/// One argument of an `extern "C"` kernel: the kernels take device
/// pointers, `int`, `long` and `float`, and the Hopper attention kernels TMA
/// tensor maps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device address (NULL is 0).
    Ptr(u64),
    /// A C `int`.
    I32(i32),
    /// A C `long` (element counts).
    I64(i64),
    /// A C `float`.
    F32(f32),
    /// A TMA tensor map, passed by value (`vt_tensor_map` in the kernels).
    TensorMap(TensorMapBytes),
}

/// The 128 opaque bytes of an encoded TMA tensor map.
pub type TensorMapBytes = [u64; 16];

/// A TMA map over the rows of a head-sliced 16-bit matrix, in the layout the
/// Hopper attention kernel keeps its tiles in: three dimensions, innermost
/// first, 8 columns (16 bytes), `rows` rows `row_stride_bytes` apart, and
/// `column_blocks` blocks of 8 columns 16 bytes apart; each copy is a box of
/// 8 columns × `box_rows` rows × `box_column_blocks` blocks, which lands in
/// shared memory column block after column block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnBlockMap {
    /// Device address of row 0, column 0 (16-byte aligned).
    pub base: u64,
    /// Rows in the matrix; TMA zero-fills past them.
    pub rows: usize,
    /// Bytes between rows (a multiple of 16).
    pub row_stride_bytes: usize,
    /// Blocks of 8 columns in a row.
    pub column_blocks: usize,
    /// Rows per copy.
    pub box_rows: u32,
    /// Column blocks per copy.
    pub box_column_blocks: u32,
}

impl KernelArg {
    /// Pointers to each argument's value, the `void**` both `cuLaunchKernel`
    /// and `hipModuleLaunchKernel` take. Valid while `args` lives.
    pub fn pointers(args: &[KernelArg]) -> Vec<*mut c_void> {
        args.iter()
            .map(|a| match a {
                KernelArg::Ptr(v) => v as *const u64 as *mut c_void,
                KernelArg::I32(v) => v as *const i32 as *mut c_void,
                KernelArg::I64(v) => v as *const i64 as *mut c_void,
                KernelArg::F32(v) => v as *const f32 as *mut c_void,
                KernelArg::TensorMap(v) => v.as_ptr() as *mut c_void,
            })
            .collect()
    }
}

/// A column-major BLAS GEMM, `C = op(A) · op(B) + beta · C` with alpha 1,
/// all three matrices of `dtype` and fp32 accumulation (never TF32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    /// Element type of A, B and C.
    pub dtype: DType,
    /// Transpose A.
    pub trans_a: bool,
    /// Transpose B.
    pub trans_b: bool,
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Device address of A.
    pub a: u64,
    /// Leading dimension of A.
    pub lda: usize,
    /// Device address of B.
    pub b: u64,
    /// Leading dimension of B.
    pub ldb: usize,
    /// Device address of C.
    pub c: u64,
    /// Leading dimension of C.
    pub ldc: usize,
    /// 0 to overwrite C, 1 to add to it (a pre-filled bias).
    pub beta: f32,
    /// Device address of the C read by the beta term when it is not the
    /// output (`D = A·B + bias + beta·C_in`, written to `c`), or 0 for `c`
    /// itself. Same layout as C. Only passed to runtimes whose
    /// [`GpuRuntime::gemm_bias_epilogue`] is true.
    pub c_in: u64,
    /// Device address of a vector of `m` elements added to every column of
    /// C in the fp32 epilogue, or 0 for none. Only passed to runtimes whose
    /// [`GpuRuntime::gemm_bias_epilogue`] is true.
    pub bias: u64,
}

/// Device memory owned by a runtime; freed when dropped. Dropping must be
/// safe while queued work still uses the memory (a stream-ordered free, or
/// one that waits), because intermediate tensors die before the kernels that
/// read them have run.
pub trait DeviceBuffer: Send + Sync {
    /// Device address of the first byte.
    fn device_ptr(&self) -> u64;
    /// Size in bytes.
    fn len_bytes(&self) -> usize;
}

/// What a vendor must provide. All calls are issued on one stream, in order.
pub trait GpuRuntime: Send + Sync + Sized + 'static {
    /// An allocation.
    type Buffer: DeviceBuffer;

    /// Opens device `ordinal`, loading the embedded kernels for it. An absent
    /// runtime library, driver or device is [`vitrine_core::Error::DeviceUnavailable`].
    fn open(ordinal: usize) -> Result<Self>;

    /// Device name for reports, like `cuda:0 (NVIDIA H100 80GB HBM3)`.
    fn name(&self) -> String;

    /// Threads per warp / wavefront on this device (32 or 64).
    fn warp_size(&self) -> usize;

    /// Streaming multiprocessors (NVIDIA) or compute units (AMD): how many
    /// blocks of a persistent kernel (one per multiprocessor) run at once.
    fn multiprocessors(&self) -> usize;

    /// Allocates `bytes` (at least 1) of device memory.
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer>;

    /// Copies host bytes to the start of `dst`; returns once `src` may be
    /// reused.
    fn copy_to_device(&self, dst: &Self::Buffer, src: &[u8]) -> Result<()>;

    /// Copies `dst.len()` bytes starting at device address `src` to the host,
    /// after all queued work.
    fn copy_to_host(&self, src: u64, dst: &mut [u8]) -> Result<()>;

    /// Launches `name` from `module` on a 1-D grid.
    fn launch(
        &self,
        module: KernelModule,
        name: &str,
        grid: u32,
        block: u32,
        args: &[KernelArg],
    ) -> Result<()>;

    /// Launches `name` like [`GpuRuntime::launch`], with `shared` bytes of
    /// dynamic shared memory per block (beyond the 48 KiB default where the
    /// device allows it).
    fn launch_shared(
        &self,
        module: KernelModule,
        name: &str,
        grid: u32,
        block: u32,
        shared: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        if shared == 0 {
            return self.launch(module, name, grid, block, args);
        }
        Err(vitrine_core::Error::NotSupported {
            op: "kernel launch with dynamic shared memory",
            backend: self.name(),
        })
    }

    /// Whether the attention kernels built on Hopper's warpgroup MMA
    /// (`vt_flash_attention_wg_*`, whose bodies exist only in the sm_90a
    /// image) run on this device.
    fn has_warpgroup_mma(&self) -> bool {
        false
    }

    /// Encodes a TMA tensor map; only devices with warpgroup MMA have them.
    fn column_block_map(&self, _map: &ColumnBlockMap) -> Result<TensorMapBytes> {
        Err(vitrine_core::Error::NotSupported {
            op: "TMA tensor maps",
            backend: self.name(),
        })
    }

    /// Runs a GEMM.
    fn gemm(&self, g: &Gemm) -> Result<()>;

    /// Whether [`GpuRuntime::gemm`] takes a bias ([`Gemm::bias`]); when it
    /// does not, the backend pre-fills C with the bias and sets beta to 1.
    fn gemm_bias_epilogue(&self) -> bool {
        false
    }

    /// Waits for queued work and reports any asynchronous error.
    fn synchronize(&self) -> Result<()>;

    /// Whether [`GpuRuntime::begin_capture`] works here.
    fn can_capture(&self) -> bool {
        false
    }

    /// Starts recording the work queued on the runtime's stream into a graph
    /// (nothing runs until the graph is replayed).
    fn begin_capture(&self) -> Result<()> {
        Err(vitrine_core::Error::Backend(format!(
            "{} cannot record graphs",
            self.name()
        )))
    }

    /// Stops recording; the work queued since `begin_capture` as a graph.
    /// Always ends the capture, also when it fails.
    fn end_capture(&self) -> Result<Box<dyn vitrine_core::Replay>> {
        Err(vitrine_core::Error::Backend(format!(
            "{} cannot record graphs",
            self.name()
        )))
    }
}
