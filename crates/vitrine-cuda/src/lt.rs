//! GEMMs through cuBLASLt, so a linear layer's bias joins the fp32
//! accumulator in the GEMM epilogue instead of being broadcast into the
//! output beforehand (one pass over the output saved on write, one on read),
//! with the same single rounding PyTorch's `addmm` has.
//!
//! A plan (descriptor, layouts, chosen algorithm) is cached per shape and
//! pointer alignment: the heuristic query costs more than a small GEMM.
//!
//! The first GEMM of a shape times the heuristic's top candidates on the
//! real operands and keeps the fastest (on an H100, batch-1 RADIO-H went
//! from 4.2 to 2.6 ms against the first pick). The choice is shared by the whole process, so results
//! are bit-identical within it; another process may time a different winner
//! and differ in the last bits, as PyTorch does with cuDNN benchmarking.
//! `VITRINE_CUDA_GEMM=heuristic` takes the first pick instead (the same
//! algorithm in every process, for bit-reproducible runs).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Mutex;

use candle_core::cuda_backend::cudarc;
use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{result as drv, sys as drv_sys};
use vitrine_core::{DType, Error, Result};
use vitrine_gpu::Gemm;

/// Rounds in which a shape's candidate algorithms take turns being timed.
const TUNE_ROUNDS: usize = 5;

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

/// The alignment of C and D, which share a layout.
fn c_alignment(g: &Gemm) -> u32 {
    if g.c_in == 0 {
        alignment(g.c)
    } else {
        alignment(g.c).min(alignment(g.c_in))
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
            align: (alignment(g.a), alignment(g.b), c_alignment(g)),
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
    /// Further candidates from the heuristic, timed on the first call.
    untimed: Vec<sys::cublasLtMatmulAlgo_t>,
}

/// Candidates asked of the heuristic; the fastest on the real operands wins.
const CANDIDATES: usize = 8;
/// Outputs with fewer 128×128 tiles than this (about two waves on a
/// 132-SM H100) also time split-K versions of the heuristic's picks.
const SPLIT_K_BELOW_TILES: usize = 256;
/// How many of the heuristic's picks get split-K versions, and the splits.
const SPLIT_K_BASES: usize = 3;
const SPLIT_K_COUNTS: [u32; 3] = [2, 4, 8];

/// An algorithm choice, plain data valid for any handle on its device.
#[derive(Clone, Copy)]
struct Algo(sys::cublasLtMatmulAlgo_t);

// SAFETY: `cublasLtMatmulAlgo_t` is an opaque array of integers, not a handle.
unsafe impl Send for Algo {}

/// Tuned choices per (device, shape), shared by every runtime of the
/// process: encoders loaded side by side run the same algorithms, so their
/// results agree bit for bit.
static TUNED: Mutex<Option<HashMap<(usize, PlanKey), Algo>>> = Mutex::new(None);

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
    /// Time the heuristic's candidates (the default). Off with
    /// `VITRINE_CUDA_GEMM=heuristic`, which takes the heuristic's first pick:
    /// slower at small batches, but the same algorithm in every process.
    tune: bool,
    /// Device ordinal, for the process-wide choice table.
    ordinal: usize,
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
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        Ok(Self {
            handle: lt::create_handle().map_err(|e| lt_err("init", e))?,
            tune: !matches!(
                std::env::var("VITRINE_CUDA_GEMM").as_deref(),
                Ok("heuristic")
            ),
            ordinal,
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
            untimed: Vec::new(),
        };
        let epilogue = if g.bias != 0 {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        let pref = lt::create_matmul_pref().map_err(|e| lt_err("preference", e))?;
        let c_align = c_alignment(g);
        // SAFETY: the descriptor and preference are live; each value has the
        // type the attribute documents (enums as i32/u32, sizes as u64); the
        // heuristic writes at most CANDIDATES results.
        let found = unsafe {
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &op(g.trans_a))?;
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &op(g.trans_b))?;
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &(WORKSPACE_BYTES as u64),
            )?;
            // Split-K partial sums only in fp32 (the compute type): the
            // in-place and output-type schemes add partials in f16/bf16,
            // which would round the accumulation between k-slices.
            let fp32_partials =
                sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE as u32;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                &fp32_partials,
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
                &c_align,
            )?;
            set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                &c_align,
            )?;
            let mut results: [sys::cublasLtMatmulHeuristicResult_t; CANDIDATES] =
                std::mem::zeroed();
            let mut count = 0;
            let status = sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                plan.desc,
                plan.a,
                plan.b,
                plan.c,
                plan.c,
                pref,
                CANDIDATES as i32,
                results.as_mut_ptr(),
                &mut count,
            );
            let _ = lt::destroy_matmul_pref(pref);
            let usable = if status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                count.clamp(0, CANDIDATES as i32) as usize
            } else {
                0
            };
            results[..usable]
                .iter()
                .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
                .map(|r| r.algo)
                .collect::<Vec<_>>()
        };
        let Some((&first, rest)) = found.split_first() else {
            return Ok(None);
        };
        // Assigned, not `..plan`: the handles are Copy, so a struct update
        // would copy them and the drop of `plan` would free them.
        plan.algo = first;
        plan.untimed = rest.to_vec();
        if self.tune && g.m.div_ceil(128) * g.n.div_ceil(128) < SPLIT_K_BELOW_TILES {
            let extra = self.split_k_variants(&plan, &found);
            plan.untimed.extend(extra);
        }
        Ok(Some(plan))
    }

    /// Split-K versions of the heuristic's first picks, with fp32 partial
    /// sums, for outputs too small to fill the GPU with tiles: the heuristic
    /// under the fp32-only reduction mask rarely proposes them itself, yet
    /// at batch 1 (206 rows) they are what keeps the SMs busy. Each is
    /// checked by cuBLASLt against the plan and the workspace before it may
    /// be timed.
    fn split_k_variants(
        &self,
        plan: &Plan,
        found: &[sys::cublasLtMatmulAlgo_t],
    ) -> Vec<sys::cublasLtMatmulAlgo_t> {
        use sys::cublasLtMatmulAlgoConfigAttributes_t as C;
        let fp32_partials =
            sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE as u32;
        let mut out = Vec::new();
        for base in found.iter().take(SPLIT_K_BASES) {
            // SAFETY: `base` is a valid algorithm from the heuristic; each
            // attribute is read into / written from a value of its documented
            // type (int32 capability, uint32 configuration).
            unsafe {
                let mut supported = 0i32;
                let mut written = 0usize;
                let cap = sys::cublasLtMatmulAlgoCapGetAttribute(
                    base,
                    sys::cublasLtMatmulAlgoCapAttributes_t::CUBLASLT_ALGO_CAP_SPLITK_SUPPORT,
                    &mut supported as *mut i32 as *mut c_void,
                    size_of::<i32>(),
                    &mut written,
                );
                if cap != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS || supported == 0 {
                    continue;
                }
                for splits in SPLIT_K_COUNTS {
                    let mut algo = *base;
                    let mut set = |attr: C, v: u32| {
                        sys::cublasLtMatmulAlgoConfigSetAttribute(
                            &mut algo as *mut _,
                            attr,
                            &v as *const u32 as *const c_void,
                            size_of::<u32>(),
                        ) == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                    };
                    if !set(C::CUBLASLT_ALGO_CONFIG_SPLITK_NUM, splits)
                        || !set(C::CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, fp32_partials)
                    {
                        continue;
                    }
                    let mut check: sys::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
                    let ok = sys::cublasLtMatmulAlgoCheck(
                        self.handle,
                        plan.desc,
                        plan.a,
                        plan.b,
                        plan.c,
                        plan.c,
                        &algo,
                        &mut check,
                    );
                    if ok == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                        && check.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                        && check.workspaceSize <= WORKSPACE_BYTES
                    {
                        out.push(algo);
                    }
                }
            }
        }
        out
    }

    /// Runs `g` (bias in the epilogue when `g.bias != 0`). Returns false,
    /// having done nothing, when cuBLASLt has no algorithm for it. The first
    /// call for a shape times the heuristic's candidates (`sync` waits for
    /// the stream) and keeps the fastest for later calls.
    pub(crate) fn gemm(
        &self,
        g: &Gemm,
        workspace: u64,
        stream: sys::cudaStream_t,
        sync: &dyn Fn() -> Result<()>,
    ) -> Result<bool> {
        let key = PlanKey::of(g);
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::Backend("cuBLASLt plan cache poisoned".into()))?;
        let plan = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.plan(g)?),
        };
        let Some(plan) = plan.as_mut() else {
            return Ok(false);
        };
        // Re-running is harmless unless D is also read as C.
        let rerunnable = g.beta == 0.0 || g.c_in != 0;
        if self.tune && !plan.untimed.is_empty() {
            let chosen = (self.ordinal, key);
            let mut guard = TUNED
                .lock()
                .map_err(|_| Error::Backend("GEMM tuning table poisoned".into()))?;
            let table = guard.get_or_insert_with(HashMap::new);
            if let Some(algo) = table.get(&chosen) {
                plan.algo = algo.0;
                plan.untimed.clear();
            } else if rerunnable {
                self.tune(plan, g, workspace, stream, sync)?;
                table.insert(chosen, Algo(plan.algo));
            }
        }
        self.run(plan, &plan.algo, g, workspace, stream)?;
        Ok(true)
    }

    /// Times every candidate algorithm of `plan` on the real operands and
    /// keeps the fastest. Device events bracket three back-to-back runs
    /// after one warm-up, so a small GEMM is timed as it runs inside a
    /// forward pass (queued behind other work), not with a launch and a
    /// synchronisation around each run, which would favour the fewest
    /// kernels over the fastest ones. The candidates take turns over
    /// `TUNE_ROUNDS` rounds and the lowest median wins: one timing each let
    /// a clock ramp or a stray delay pick a slower split-K algorithm in some
    /// processes (batch-1 RADIO-H at 2.0 or 2.3 ms from one binary).
    fn tune(
        &self,
        plan: &mut Plan,
        g: &Gemm,
        workspace: u64,
        stream: sys::cudaStream_t,
        sync: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let mut candidates = vec![plan.algo];
        candidates.append(&mut plan.untimed);
        // A candidate that fails to launch is simply not chosen.
        candidates.retain(|algo| self.run(plan, algo, g, workspace, stream).is_ok());
        let events = Events::new()?;
        let mut times = vec![Vec::with_capacity(TUNE_ROUNDS); candidates.len()];
        for _ in 0..TUNE_ROUNDS {
            for (algo, times) in candidates.iter().zip(&mut times) {
                events.start(stream)?;
                for _ in 0..3 {
                    self.run(plan, algo, g, workspace, stream)?;
                }
                times.push(events.stop(stream, sync)?);
            }
        }
        let median = |t: &mut Vec<f32>| {
            t.sort_by(f32::total_cmp);
            t[t.len() / 2]
        };
        if let Some((_, algo)) = times
            .iter_mut()
            .map(median)
            .zip(candidates)
            .min_by(|a, b| a.0.total_cmp(&b.0))
        {
            plan.algo = algo;
        }
        Ok(())
    }

    fn run(
        &self,
        plan: &Plan,
        algo: &sys::cublasLtMatmulAlgo_t,
        g: &Gemm,
        workspace: u64,
        stream: sys::cudaStream_t,
    ) -> Result<()> {
        let (alpha, beta) = (1.0f32, g.beta);
        let c_in = if g.c_in != 0 { g.c_in } else { g.c };
        // SAFETY: pointers are live device buffers whose shapes and strides
        // the plan was built for (C and D share a layout); alpha/beta are
        // host f32 (the scale type); the workspace holds WORKSPACE_BYTES on
        // the same stream.
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
                c_in as *const c_void,
                plan.c,
                g.c as *mut c_void,
                plan.c,
                algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream,
            )
        }
        .map_err(|e| lt_err("matmul", e))
    }
}

/// A pair of device events for timing work queued on a stream.
struct Events {
    start: drv_sys::CUevent,
    end: drv_sys::CUevent,
}

impl Events {
    fn new() -> Result<Self> {
        let create = || {
            drv::event::create(drv_sys::CUevent_flags::CU_EVENT_DEFAULT)
                .map_err(|e| Error::Backend(format!("CUDA event: {e}")))
        };
        let start = create()?;
        match create() {
            Ok(end) => Ok(Self { start, end }),
            Err(e) => {
                // SAFETY: created just above, destroyed once.
                let _ = unsafe { drv::event::destroy(start) };
                Err(e)
            }
        }
    }

    fn start(&self, stream: sys::cudaStream_t) -> Result<()> {
        // SAFETY: a live event recorded on the live stream the GEMMs use.
        unsafe { drv::event::record(self.start, stream as drv_sys::CUstream) }
            .map_err(|e| Error::Backend(format!("CUDA event: {e}")))
    }

    /// Milliseconds since `start`, once the stream has caught up.
    fn stop(&self, stream: sys::cudaStream_t, sync: &dyn Fn() -> Result<()>) -> Result<f32> {
        // SAFETY: as in `start`; both events have been recorded before
        // `elapsed` reads them, and the stream is synchronised in between.
        unsafe {
            drv::event::record(self.end, stream as drv_sys::CUstream)
                .map_err(|e| Error::Backend(format!("CUDA event: {e}")))?;
            sync()?;
            drv::event::elapsed(self.start, self.end)
                .map_err(|e| Error::Backend(format!("CUDA event: {e}")))
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // SAFETY: each event was created once in `new` and is destroyed once.
        unsafe {
            let _ = drv::event::destroy(self.start);
            let _ = drv::event::destroy(self.end);
        }
    }
}
