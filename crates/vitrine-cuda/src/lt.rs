//! GEMMs through cuBLASLt, so a linear layer's bias joins the fp32
//! accumulator in the GEMM epilogue instead of being broadcast into the
//! output beforehand (one pass over the output saved on write, one on read),
//! with the same single rounding PyTorch's `addmm` has.
//!
//! A plan (descriptor, layouts, chosen algorithm) is cached per shape and
//! pointer alignment: the heuristic query costs more than a small GEMM.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Mutex;

use candle_core::cuda_backend::cudarc;
use cudarc::cublaslt::{result as lt, sys};
use vitrine_core::{DType, Error, Result};
use vitrine_gpu::Gemm;

/// Workspace offered to cuBLASLt (split-K and friends need some).
pub(crate) const WORKSPACE_BYTES: usize = 32 << 20;

fn lt_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("cuBLASLt {what}: {e}"))
}

fn data_type(d: DType) -> sys::cudaDataType {
    match d {
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
    }
}

/// The alignment cuBLASLt may assume for an address (a power of two, <= 256).
fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        (1u64 << ptr.trailing_zeros().min(8)) as u32
    }
}

/// Everything a plan depends on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    dtype: DType,
    trans: (bool, bool),
    mnk: (usize, usize, usize),
    ld: (usize, usize, usize),
    bias: bool,
    align: (u32, u32, u32),
}

impl PlanKey {
    fn of(g: &Gemm) -> Self {
        Self {
            dtype: g.dtype,
            trans: (g.trans_a, g.trans_b),
            mnk: (g.m, g.n, g.k),
            ld: (g.lda, g.ldb, g.ldc),
            bias: g.bias != 0,
            align: (alignment(g.a), alignment(g.b), alignment(g.c)),
        }
    }
}

/// A descriptor, its three layouts and the algorithm picked for them.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each handle was created once by `Lt::plan` and is destroyed once.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// A cuBLASLt handle with its plan cache. `None` in the cache records a shape
/// for which cuBLASLt offers no algorithm (the caller then uses cuBLAS).
pub(crate) struct Lt {
    handle: sys::cublasLtHandle_t,
    plans: Mutex<HashMap<PlanKey, Option<Plan>>>,
}

// SAFETY: the handle and descriptors are only used under the runtime's single
// stream; the cache is behind a mutex, which also serialises the descriptor
// updates (bias pointer) made just before each launch.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Drop for Lt {
    fn drop(&mut self) {
        if let Ok(plans) = self.plans.get_mut() {
            plans.clear();
        }
        // SAFETY: created once in `new`, destroyed once here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

unsafe fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    v: &T,
) -> Result<()> {
    lt::set_matmul_desc_attribute(desc, attr, v as *const T as *const c_void, size_of::<T>())
        .map_err(|e| lt_err("descriptor attribute", e))
}

unsafe fn set_pref<T>(
    pref: sys::cublasLtMatmulPreference_t,
    attr: sys::cublasLtMatmulPreferenceAttributes_t,
    v: &T,
) -> Result<()> {
    lt::set_matmul_pref_attribute(pref, attr, v as *const T as *const c_void, size_of::<T>())
        .map_err(|e| lt_err("preference attribute", e))
}

fn layout(
    dtype: DType,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<sys::cublasLtMatrixLayout_t> {
    lt::create_matrix_layout(data_type(dtype), rows as u64, cols as u64, ld as i64)
        .map_err(|e| lt_err("matrix layout", e))
}

impl Lt {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            handle: lt::create_handle().map_err(|e| lt_err("init", e))?,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Builds a plan, or `None` when no algorithm fits.
    fn plan(&self, g: &Gemm) -> Result<Option<Plan>> {
        use sys::cublasLtMatmulDescAttributes_t as D;
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let op = |t: bool| {
            if t {
                cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Plain fp32 stays fp32: COMPUTE_32F never uses TF32.
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType::CUDA_R_32F,
        )
        .map_err(|e| lt_err("descriptor", e))?;
        let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        let mut plan = Plan {
            desc,
            a: layout(g.dtype, ar, ac, g.lda)?,
            b: layout(g.dtype, br, bc, g.ldb)?,
            c: layout(g.dtype, g.m, g.n, g.ldc)?,
            // SAFETY: a plain-old-data struct; replaced by the heuristic's pick.
            algo: unsafe { std::mem::zeroed() },
        };
        let epilogue = if g.bias != 0 {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        let pref = lt::create_matmul_pref().map_err(|e| lt_err("preference", e))?;
        // SAFETY: the descriptor and preference are live; each value has the
        // type the attribute documents (enums as i32/u32, sizes as u64).
        let found = unsafe {
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &op(g.trans_a))?;
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &op(g.trans_b))?;
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &(WORKSPACE_BYTES as u64),
            )?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                &alignment(g.a),
            )?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                &alignment(g.b),
            )?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                &alignment(g.c),
            )?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                &alignment(g.c),
            )?;
            let found = lt::get_matmul_algo_heuristic(
                self.handle,
                plan.desc,
                plan.a,
                plan.b,
                plan.c,
                plan.c,
                pref,
            );
            let _ = lt::destroy_matmul_pref(pref);
            found
        };
        Ok(match found {
            Ok(h) => {
                // Assigned, not `..plan`: the handles are Copy, so a struct
                // update would copy them and the drop of `plan` free them.
                plan.algo = h.algo;
                Some(plan)
            }
            Err(_) => None,
        })
    }

    /// Runs `g` (bias in the epilogue when `g.bias != 0`). Returns false,
    /// having done nothing, when cuBLASLt has no algorithm for it.
    pub(crate) fn gemm(&self, g: &Gemm, workspace: u64, stream: sys::cudaStream_t) -> Result<bool> {
        let key = PlanKey::of(g);
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::Backend("cuBLASLt plan cache poisoned".into()))?;
        let plan = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.plan(g)?),
        };
        let Some(plan) = plan.as_ref() else {
            return Ok(false);
        };
        let (alpha, beta) = (1.0f32, g.beta);
        // SAFETY: pointers are live device buffers whose shapes and strides
        // the plan was built for; alpha/beta are host f32 (the scale type);
        // the workspace holds WORKSPACE_BYTES on the same stream.
        unsafe {
            if g.bias != 0 {
                set_desc(
                    plan.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &g.bias,
                )?;
            }
            lt::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.a as *const c_void,
                plan.a,
                g.b as *const c_void,
                plan.b,
                g.c as *const c_void,
                plan.c,
                g.c as *mut c_void,
                plan.c,
                &plan.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream,
            )
        }
        .map_err(|e| lt_err("matmul", e))?;
        Ok(true)
    }
}
