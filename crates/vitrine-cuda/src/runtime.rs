use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use candle_core::cuda_backend::cudarc;
use candle_core::cuda_backend::CudaDevice;
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys as drv_sys, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use vitrine_core::{DType, Error, Result};
use vitrine_gpu::{DeviceBuffer, Gemm, GpuRuntime, KernelArg, KernelModule};

use crate::embedded::FATBINS;

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

/// CUDA device, stream, kernels and cuBLAS handle.
pub struct CudaRuntime {
    _device: CudaDevice,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    modules: HashMap<KernelModule, Arc<CudaModule>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    name: String,
    warp: usize,
}

fn module_for(stem: &str) -> Option<KernelModule> {
    KernelModule::ALL.into_iter().find(|m| m.stem() == stem)
}

impl CudaRuntime {
    fn function(&self, module: KernelModule, name: &str) -> Result<CudaFunction> {
        let mut cache = self
            .functions
            .lock()
            .map_err(|_| Error::Backend("kernel cache poisoned".into()))?;
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        let m = self
            .modules
            .get(&module)
            .ok_or_else(|| Error::Backend(format!("kernel module {module:?} not loaded")))?;
        let f = m
            .load_function(name)
            .map_err(|e| driver_err(&format!("kernel `{name}` lookup"), e))?;
        cache.insert(name.to_string(), f.clone());
        Ok(f)
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
        Ok(Self {
            _device: device,
            stream,
            blas,
            modules,
            functions: Mutex::new(HashMap::new()),
            name: format!("cuda:{ordinal} ({name})"),
            warp,
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn warp_size(&self) -> usize {
        self.warp
    }

    fn alloc(&self, bytes: usize) -> Result<CudaBuffer> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| driver_err("bind context", e))?;
        // SAFETY: the stream is live; the memory is only used on this stream.
        let ptr =
            unsafe { drv::malloc_async(self.stream.cu_stream(), bytes.max(1)) }.map_err(|e| {
                Error::Backend(format!(
                    "CUDA out of memory or allocation failure ({bytes} bytes): {e}"
                ))
            })?;
        Ok(CudaBuffer {
            ptr,
            bytes,
            stream: self.stream.clone(),
        })
    }

    fn copy_to_device(&self, dst: &CudaBuffer, src: &[u8]) -> Result<()> {
        if src.len() > dst.bytes {
            return Err(Error::Backend(format!(
                "copy of {} bytes into a {}-byte buffer",
                src.len(),
                dst.bytes
            )));
        }
        // SAFETY: bounds checked above; the stream is synchronised before
        // returning, so `src` stays valid for the whole copy.
        unsafe { drv::memcpy_htod_async(dst.ptr, src, self.stream.cu_stream()) }
            .map_err(|e| driver_err("upload", e))?;
        self.synchronize()
    }

    fn copy_to_host(&self, src: u64, dst: &mut [u8]) -> Result<()> {
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
        let f = self.function(module, name)?;
        let mut params: Vec<*mut c_void> = KernelArg::pointers(args);
        // SAFETY: argument types follow the kernel's extern "C" signature
        // (checked on the H100 by the op suite); `args` outlives the call,
        // and the driver copies parameter values at launch.
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| driver_err(&format!("launch of `{name}`"), e))
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (1.0f32, g.beta);
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
}
