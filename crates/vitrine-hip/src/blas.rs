//! GEMMs through rocBLAS `rocblas_gemm_ex`.
//!
//! Every GEMM computes in fp32 whatever the operand type
//! (`rocblas_datatype_f32_r` as compute type, alpha and beta as `f32`),
//! matching the CPU and CUDA backends: half operands are only rounded once,
//! at the output. The handle runs on the runtime's stream, so GEMMs and our
//! kernels stay in one queue. Atomics are switched off: rocBLAS may otherwise
//! pick split-K kernels whose fp32 sums depend on scheduling, and vitrine
//! promises the same answer on every run.

use std::ffi::c_void;
use std::sync::Mutex;

use vitrine_core::{DType, Error, Result};
use vitrine_gpu::Gemm;

use crate::ffi::{blas, BlasApi, BlasHandle, HipStream};

struct Handle(BlasHandle);

// SAFETY: a rocblas_handle may be used from any thread, one at a time; the
// Mutex in `Blas` serialises every use.
unsafe impl Send for Handle {}

/// One rocBLAS handle bound to a stream.
pub(crate) struct Blas {
    api: &'static BlasApi,
    handle: Mutex<Handle>,
}

impl Blas {
    /// Creates a handle on the current device and binds it to `stream`.
    pub(crate) fn new(api: &'static BlasApi, stream: HipStream) -> Result<Self> {
        let mut h: BlasHandle = std::ptr::null_mut();
        // SAFETY: writes one handle through a valid out-pointer.
        api.check("rocblas_create_handle", unsafe {
            (api.create_handle)(&mut h)
        })?;
        // Owned from here on, so an error below still destroys it.
        let me = Self {
            api,
            handle: Mutex::new(Handle(h)),
        };
        // SAFETY: `h` is a live handle and `stream` a live stream of the
        // current device, which outlives this Blas (the runtime drops it
        // first).
        api.check("rocblas_set_stream", unsafe { (api.set_stream)(h, stream) })?;
        // SAFETY: `h` is a live handle; enum values from rocBLAS' header.
        api.check("rocblas_set_pointer_mode", unsafe {
            (api.set_pointer_mode)(h, blas::POINTER_HOST)
        })?;
        // SAFETY: as above.
        api.check("rocblas_set_atomics_mode", unsafe {
            (api.set_atomics_mode)(h, blas::NO_ATOMICS)
        })?;
        Ok(me)
    }

    /// Where rocBLAS was loaded from.
    pub(crate) fn library(&self) -> &str {
        &self.api.path
    }

    /// Runs one column-major GEMM (see [`Gemm`]).
    pub(crate) fn gemm(&self, g: &Gemm) -> Result<()> {
        if g.bias != 0 || g.c_in != 0 {
            // The backend pre-fills C instead (gemm_bias_epilogue is false).
            return Err(Error::Backend(
                "rocBLAS GEMM was handed a bias or a separate C; this runtime has no epilogue"
                    .into(),
            ));
        }
        let ty = match g.dtype {
            DType::F32 => blas::F32,
            DType::F16 => blas::F16,
            DType::BF16 => blas::BF16,
        };
        let int = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| {
                Error::InvalidArgument(format!("GEMM {what} = {v} exceeds rocBLAS' 32-bit range"))
            })
        };
        let (m, n, k) = (int(g.m, "m")?, int(g.n, "n")?, int(g.k, "k")?);
        let (lda, ldb, ldc) = (int(g.lda, "lda")?, int(g.ldb, "ldb")?, int(g.ldc, "ldc")?);
        let op = |t: bool| if t { blas::OP_T } else { blas::OP_N };
        let alpha: f32 = 1.0;
        let beta: f32 = g.beta;
        let handle = self
            .handle
            .lock()
            .map_err(|_| Error::Backend("rocBLAS handle poisoned".into()))?;
        // SAFETY: A, B and C are device addresses of live allocations sized
        // for these dims by the backend; alpha/beta are f32 on the host
        // (pointer mode host, compute type f32). C is also the output D,
        // which rocBLAS allows when ldc == ldd.
        let status = unsafe {
            (self.api.gemm_ex)(
                handle.0,
                op(g.trans_a),
                op(g.trans_b),
                m,
                n,
                k,
                (&alpha as *const f32).cast::<c_void>(),
                g.a as *const c_void,
                ty,
                lda,
                g.b as *const c_void,
                ty,
                ldb,
                (&beta as *const f32).cast::<c_void>(),
                g.c as *const c_void,
                ty,
                ldc,
                g.c as *mut c_void,
                ty,
                ldc,
                blas::F32,
                blas::ALGO_STANDARD,
                0,
                0,
            )
        };
        self.api.check(
            &format!(
                "rocblas_gemm_ex({} m={m} n={n} k={k} trans={}{})",
                g.dtype,
                if g.trans_a { 'T' } else { 'N' },
                if g.trans_b { 'T' } else { 'N' }
            ),
            status,
        )
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        let h = self.handle.get_mut().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the handle was created once and is destroyed once.
        unsafe {
            let _ = (self.api.destroy_handle)(h.0);
        }
    }
}
