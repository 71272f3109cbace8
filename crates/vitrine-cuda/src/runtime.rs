use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use candle_core::cuda_backend::cudarc;
use candle_core::cuda_backend::CudaDevice;
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys as drv_sys, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use vitrine_core::{DType, Error, Replay, Result};
use vitrine_gpu::{
    ColumnBlockMap, DeviceBuffer, Gemm, GpuRuntime, KernelArg, KernelModule, Staging,
    TensorMapBytes,
};

use crate::embedded::FATBINS;
use crate::lt::{self, Lt};
use crate::staging::PinnedHost;

fn driver_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("CUDA {what}: {e}"))
}

/// A device allocation, freed in stream order (`cuMemFreeAsync`), so a tensor
/// may be dropped while kernels queued on the stream still read it.
pub struct CudaBuffer {
    ptr: u64,
    bytes: usize,
    stream: Arc<CudaStream>,
}

// SAFETY: the pointer is a device address, not host memory; all use goes
// through the one stream, which serialises access.
unsafe impl Send for CudaBuffer {}
unsafe impl Sync for CudaBuffer {}

impl DeviceBuffer for CudaBuffer {
    fn device_ptr(&self) -> u64 {
        self.ptr
    }

    fn len_bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `malloc_async` on this stream and is freed once.
        // A failure here can only be reported by leaking, never by panicking in drop.
        let _ = self.stream.context().bind_to_thread();
        let _ = unsafe { drv::free_async(self.ptr, self.stream.cu_stream()) };
    }
}

/// Dynamic shared memory a block may take without opting in.
const STATIC_SHARED_LIMIT: u32 = 48 * 1024;

/// CUDA device, stream, kernels, cuBLAS and cuBLASLt handles.
pub struct CudaRuntime {
    /// The pinned buffer large copies pass through (vitrine-gpu's staging).
    /// First, so that it is freed while the context still lives.
    staging: Staging<PinnedHost>,
    _device: CudaDevice,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    lt: Lt,
    /// False with `VITRINE_CUDA_GEMM=cublas`: plain cuBLAS for every GEMM
    /// (a bias is then broadcast into C first), for A/B comparisons;
    /// `VITRINE_CUDA_GEMM=heuristic` keeps cuBLASLt without timing (see lt.rs).
    use_lt: bool,
    /// cuBLASLt's workspace, [`lt::WORKSPACE_BYTES`] long.
    workspace: CudaBuffer,
    modules: HashMap<KernelModule, Arc<CudaModule>>,
    /// Kernels looked up so far, each with the dynamic shared memory it has
    /// been opted in to (0: the default 48 KiB).
    functions: Mutex<HashMap<String, (CudaFunction, u32)>>,
    name: String,
    warp: usize,
    /// Streaming multiprocessors.
    sms: usize,
    /// Compute capability 9.0 exactly: the fatbins' sm_90a image (with the
    /// warpgroup-MMA attention) is the one this device runs.
    hopper: bool,
    /// Small batches run as recorded CUDA graphs; off with
    /// `VITRINE_CUDA_GRAPHS=0` (for A/B comparisons).
    graphs: bool,
}

/// Allocates in stream order from the device's default memory pool.
fn raw_alloc(stream: &Arc<CudaStream>, bytes: usize) -> Result<CudaBuffer> {
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| driver_err("bind context", e))?;
    let try_alloc = || {
        // SAFETY: the stream is live; the memory is only used on this stream.
        unsafe { drv::malloc_async(stream.cu_stream(), bytes.max(1)) }
    };
    let oom = |e: &drv::DriverError| e.0 == drv_sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY;
    let ptr = match try_alloc() {
        Ok(p) => p,
        // Blocks freed in stream order become reusable once the stream has
        // caught up: wait for it and try once more before giving up.
        Err(e) if oom(&e) => {
            stream
                .synchronize()
                .map_err(|e| driver_err("synchronize", e))?;
            try_alloc().map_err(|e| {
                if oom(&e) {
                    let ordinal = stream.context().ordinal();
                    Error::out_of_memory(format!("cuda:{ordinal}"), bytes as u64, e.to_string())
                } else {
                    driver_err("allocation", e)
                }
            })?
        }
        Err(e) => return Err(driver_err(&format!("allocation of {bytes} bytes"), e)),
    };
    Ok(CudaBuffer {
        ptr,
        bytes,
        stream: stream.clone(),
    })
}

/// By default the pool hands freed memory back to the driver at every
/// synchronisation, so the next forward pass maps it again; keeping it makes
/// the per-op allocations of a pass cheap pool hits after the first pass.
/// The cost: memory freed by vitrine stays reserved for this process.
fn keep_freed_memory(ctx: &Arc<cudarc::driver::CudaContext>) -> Result<()> {
    let mut pool: drv_sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: the context is current (bound by the caller's device setup) and
    // the attribute takes a u64.
    unsafe {
        ctx.bind_to_thread()
            .map_err(|e| driver_err("bind context", e))?;
        drv_sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
            .result()
            .map_err(|e| driver_err("default memory pool", e))?;
        drv_sys::cuMemPoolSetAttribute(
            pool,
            drv_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut c_void,
        )
        .result()
        .map_err(|e| driver_err("memory pool threshold", e))?;
    }
    Ok(())
}

fn module_for(stem: &str) -> Option<KernelModule> {
    KernelModule::ALL.into_iter().find(|m| m.stem() == stem)
}

impl CudaRuntime {
    /// Kernel `name`, allowed `shared` bytes of dynamic shared memory. The
    /// opt-in beyond 48 KiB is a driver call made once per kernel and size,
    /// not once per launch.
    fn function(&self, module: KernelModule, name: &str, shared: u32) -> Result<CudaFunction> {
        let mut cache = self
            .functions
            .lock()
            .map_err(|_| Error::Backend("kernel cache poisoned".into()))?;
        if !cache.contains_key(name) {
            let m = self
                .modules
                .get(&module)
                .ok_or_else(|| Error::Backend(format!("kernel module {module:?} not loaded")))?;
            let f = m
                .load_function(name)
                .map_err(|e| driver_err(&format!("kernel `{name}` lookup"), e))?;
            cache.insert(name.to_string(), (f, 0));
        }
        let (f, opted) = cache
            .get_mut(name)
            .ok_or_else(|| Error::Backend(format!("kernel `{name}` missing from the cache")))?;
        if shared > STATIC_SHARED_LIMIT && shared > *opted {
            // Not a stream operation, so also fine while a graph is recorded.
            let what = || format!("{shared} bytes of shared memory for `{name}`");
            let bytes = i32::try_from(shared).map_err(|_| Error::InvalidArgument(what()))?;
            f.set_attribute(
                drv_sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes,
            )
            .map_err(|e| driver_err(&what(), e))?;
            *opted = shared;
        }
        Ok(f.clone())
    }

    /// The staging buffer, made with this runtime's context current.
    fn pinned(&self) -> Result<Option<PinnedHost>> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| driver_err("bind context", e))?;
        Ok(PinnedHost::new())
    }

    /// Waits for the stream. Straight to `cuStreamSynchronize`: cudarc's
    /// `synchronize` first reports (and clears) an error some earlier drop
    /// left on the context, returning before the wait, and a staging chunk
    /// must not be reused while its copy may still run.
    fn wait_stream(&self, what: &str) -> Result<()> {
        // SAFETY: the stream is alive as long as `self`.
        unsafe { drv::stream::synchronize(self.stream.cu_stream()) }
            .map_err(|e| driver_err(what, e))
    }
}

fn data_type(d: DType) -> blas_sys::cudaDataType {
    match d {
        DType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        DType::F16 => blas_sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
    }
}

fn dim(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::InvalidArgument(format!("GEMM {what} = {v} exceeds cuBLAS's 32-bit range"))
    })
}

impl GpuRuntime for CudaRuntime {
    type Buffer = CudaBuffer;

    fn open(ordinal: usize) -> Result<Self> {
        let device = CudaDevice::new_with_stream(ordinal)
            .map_err(|e| Error::DeviceUnavailable(format!("cuda:{ordinal}: {e}")))?;
        let stream = device.cuda_stream();
        let ctx = stream.context().clone();
        let name = ctx.name().map_err(|e| driver_err("device name", e))?;
        let warp = ctx
            .attribute(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE)
            .map_err(|e| driver_err("warp size", e))? as usize;
        let sms = ctx
            .attribute(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| driver_err("multiprocessor count", e))?
            .max(1) as usize;
        let capability = |attr| {
            ctx.attribute(attr)
                .map_err(|e| driver_err("compute capability", e))
        };
        let hopper =
            capability(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?
                == 9
                && capability(
                    drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )? == 0;
        let mut modules = HashMap::new();
        for (stem, bytes) in FATBINS {
            let module = module_for(stem)
                .ok_or_else(|| Error::Backend(format!("unknown kernel module {stem}")))?;
            let loaded = ctx
                .load_module(Ptx::from_binary(bytes.to_vec()))
                .map_err(|e| {
                    Error::DeviceUnavailable(format!(
                        "cuda:{ordinal} ({name}): cannot load {stem} kernels: {e}"
                    ))
                })?;
            modules.insert(module, loaded);
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| driver_err("cuBLAS init", e))?;
        // Plain fp32 GEMMs stay fp32: no TF32 tensor-op shortcuts.
        // SAFETY: the handle is valid for the lifetime of `blas`.
        unsafe {
            blas_sys::cublasSetMathMode(*blas.handle(), blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH)
        }
        .result()
        .map_err(|e| driver_err("cuBLAS math mode", e))?;
        keep_freed_memory(&ctx)?;
        let workspace = raw_alloc(&stream, lt::WORKSPACE_BYTES)?;
        let lt = Lt::new(ordinal)?;
        Ok(Self {
            _device: device,
            stream,
            blas,
            lt,
            use_lt: !matches!(std::env::var("VITRINE_CUDA_GEMM").as_deref(), Ok("cublas")),
            workspace,
            modules,
            functions: Mutex::new(HashMap::new()),
            name: format!("cuda:{ordinal} ({name})"),
            warp,
            sms,
            hopper,
            graphs: !matches!(std::env::var("VITRINE_CUDA_GRAPHS").as_deref(), Ok("0")),
            staging: Staging::default(),
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn warp_size(&self) -> usize {
        self.warp
    }

    fn multiprocessors(&self) -> usize {
        self.sms
    }

    fn alloc(&self, bytes: usize) -> Result<CudaBuffer> {
        raw_alloc(&self.stream, bytes)
    }

    fn copy_to_device(&self, dst: &CudaBuffer, src: &[u8]) -> Result<()> {
        if src.len() > dst.bytes {
            return Err(Error::Backend(format!(
                "copy of {} bytes into a {}-byte buffer",
                src.len(),
                dst.bytes
            )));
        }

        let staged = self.staging.upload(
            || self.pinned(),
            dst.ptr,
            src,
            |at, chunk| {
                // SAFETY: `at` lies inside `dst` (bounds checked above) and the
                // stream is synchronised before `chunk` is reused.
                unsafe { drv::memcpy_htod_async(at, chunk, self.stream.cu_stream()) }
                    .map_err(|e| driver_err("upload", e))?;
                self.wait_stream("upload")
            },
        )?;
        if staged {
            return Ok(());
        }
        // SAFETY: bounds checked above; the stream is synchronised before
        // returning, so `src` stays valid for the whole copy.
        unsafe { drv::memcpy_htod_async(dst.ptr, src, self.stream.cu_stream()) }
            .map_err(|e| driver_err("upload", e))?;
        self.synchronize()
    }

    fn copy_to_host(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        let staged = self.staging.download(
            || self.pinned(),
            src,
            dst,
            |chunk, at| {
                // SAFETY: callers pass an address inside a live buffer with at
                // least `dst.len()` bytes after it; `chunk` is live host memory,
                // read only after the synchronisation.
                unsafe { drv::memcpy_dtoh_async(chunk, at, self.stream.cu_stream()) }
                    .map_err(|e| driver_err("download", e))?;
                self.wait_stream("download")
            },
        )?;
        if staged {
            return Ok(());
        }
        // SAFETY: callers pass an address inside a live buffer with at least
        // `dst.len()` bytes after it; the stream is synchronised before return.
        unsafe { drv::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| driver_err("download", e))?;
        self.synchronize()
    }

    fn launch(
        &self,
        module: KernelModule,
        name: &str,
        grid: u32,
        block: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        self.launch_shared(module, name, grid, block, 0, args)
    }

    fn has_warpgroup_mma(&self) -> bool {
        self.hopper
    }

    fn column_block_map(&self, map: &ColumnBlockMap) -> Result<TensorMapBytes> {
        /// cuTensorMapEncodeTiled writes to a 64-byte aligned map.
        #[repr(C, align(64))]
        struct Aligned(TensorMapBytes);
        let too_big = |what: &str| Error::InvalidArgument(format!("TMA map: {what} out of range"));
        let rows = u64::try_from(map.rows).map_err(|_| too_big("rows"))?;
        let blocks = u64::try_from(map.column_blocks).map_err(|_| too_big("column blocks"))?;
        let stride = u64::try_from(map.row_stride_bytes).map_err(|_| too_big("row stride"))?;
        let dims = [8u64, rows, blocks];
        let strides = [stride, 16u64];
        let boxes = [8u32, map.box_rows, map.box_column_blocks];
        let element_strides = [1u32; 3];
        let mut out = Aligned([0; 16]);
        // SAFETY: every pointer refers to a live local array of the rank (3)
        // or rank − 1 entries the call reads; the driver only writes the 128
        // aligned bytes of `out`, and checks the values against the device.
        let rc = unsafe {
            drv_sys::cuTensorMapEncodeTiled(
                out.0.as_mut_ptr().cast(),
                drv_sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
                3,
                map.base as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                drv_sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                drv_sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
                drv_sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
                drv_sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        rc.result()
            .map_err(|e| driver_err("cuTensorMapEncodeTiled", e))?;
        Ok(out.0)
    }

    fn launch_shared(
        &self,
        module: KernelModule,
        name: &str,
        grid: u32,
        block: u32,
        shared: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        let f = self.function(module, name, shared)?;
        let mut params: Vec<*mut c_void> = KernelArg::pointers(args);
        // SAFETY: argument types follow the kernel's extern "C" signature
        // (checked on the H100 by the op suite); `args` outlives the call,
        // and the driver copies parameter values at launch.
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (block, 1, 1),
                shared,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| driver_err(&format!("launch of `{name}`"), e))
    }

    fn gemm_bias_epilogue(&self) -> bool {
        true
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        if self.use_lt
            && self
                .lt
                .gemm(g, self.workspace.ptr, self.stream.cu_stream() as _, &|| {
                    self.synchronize()
                })?
        {
            return Ok(());
        }
        if g.c_in != 0 {
            // Only a fused epilogue can read C from elsewhere; the backend
            // composes the op itself on this answer.
            return Err(Error::NotSupported {
                op: "GEMM with a separate C input (no cuBLASLt algorithm)",
                backend: self.name(),
            });
        }
        // No cuBLASLt algorithm for this shape: plain cuBLAS, with the bias
        // pre-filled into C (the backend hands C over with ldc = m).
        let mut beta = g.beta;
        if g.bias != 0 {
            let args = [
                KernelArg::Ptr(g.bias),
                KernelArg::Ptr(g.c),
                KernelArg::I32(dim(g.n, "n")?),
                KernelArg::I32(dim(g.m, "m")?),
            ];
            let name = format!("vt_broadcast_rows_{}", g.dtype.as_str());
            let blocks = (g.m * g.n).div_ceil(256).clamp(1, 65_535) as u32;
            self.launch(KernelModule::Elementwise, &name, blocks, 256, &args)?;
            beta = 1.0;
        }
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let alpha = 1.0f32;
        let ty = data_type(g.dtype);
        // SAFETY: pointers are live device buffers sized by the caller's
        // shape checks; alpha/beta are host f32 matching the f32 compute type.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                op(g.trans_a),
                op(g.trans_b),
                dim(g.m, "m")?,
                dim(g.n, "n")?,
                dim(g.k, "k")?,
                &alpha as *const f32 as *const c_void,
                g.a as *const c_void,
                ty,
                dim(g.lda, "lda")?,
                g.b as *const c_void,
                ty,
                dim(g.ldb, "ldb")?,
                &beta as *const f32 as *const c_void,
                g.c as *mut c_void,
                ty,
                dim(g.ldc, "ldc")?,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| driver_err("cublasGemmEx", e))
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver_err("synchronize", e))
    }

    fn can_capture(&self) -> bool {
        self.graphs
    }

    fn begin_capture(&self) -> Result<()> {
        // Thread-local: another thread's unrelated CUDA calls do not break
        // this recording, while this thread's own illegal calls (a
        // synchronisation, a pageable copy) fail it loudly.
        self.stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| driver_err("begin graph capture", e))
    }

    fn end_capture(&self) -> Result<Box<dyn Replay>> {
        // Buffers the pass allocates and keeps (its outputs) come from graph
        // memory nodes: each launch frees the previous launch's and hands
        // out the same addresses again, so the caller's tensors stay valid.
        let flags =
            drv_sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH;
        match self.stream.end_capture(flags) {
            Ok(Some(graph)) => Ok(Box::new(CudaReplay(graph))),
            Ok(None) => Err(Error::Backend("CUDA graph capture recorded nothing".into())),
            Err(e) => {
                // cudarc reports an error an earlier drop left on the context
                // before it ends the capture; a stream left capturing would
                // record every later op instead of running it. So end it here
                // whatever happened, and drop what it recorded.
                let raw = self.stream.cu_stream();
                // SAFETY: the stream is alive; a graph we get back is ours to
                // destroy, once.
                unsafe {
                    if drv::stream::is_capturing(raw).is_ok_and(|s| {
                        s != drv_sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
                    }) {
                        if let Ok(graph) = drv::stream::end_capture(raw) {
                            if !graph.is_null() {
                                let _ = drv_sys::cuGraphDestroy(graph);
                            }
                        }
                    }
                }
                Err(driver_err("graph capture", e))
            }
        }
    }
}

/// An instantiated CUDA graph of one forward pass.
struct CudaReplay(cudarc::driver::CudaGraph);

// SAFETY: the graph is launched only on its own stream; launches from
// several threads are serialised by the caller (the encoder holds a lock
// around each replay and the reads of its outputs).
unsafe impl Send for CudaReplay {}
unsafe impl Sync for CudaReplay {}

impl Replay for CudaReplay {
    fn replay(&self) -> Result<()> {
        self.0.launch().map_err(|e| driver_err("graph launch", e))
    }
}
