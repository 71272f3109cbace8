//! The HIP runtime and rocBLAS entry points vitrine calls, found at run time.
//!
//! Linking against `libamdhip64`/`librocblas` would make every binary with
//! the `hip` feature refuse to start on a machine without ROCm, and would tie
//! it to one soname generation. Loading them with `dlopen` instead keeps one
//! artifact for CPU + HIP, lets ROCm 6 and ROCm 7 machines run the same
//! binary, and turns "no ROCm here" into an ordinary
//! [`Error::DeviceUnavailable`] that names what was tried.
//!
//! Signatures follow the HIP 7.1 / rocBLAS headers that rocm-rs' bindings
//! were generated from; the types and constants come from there too, so this
//! file only restates which functions we need. The libraries are loaded once
//! per process and never unloaded (buffers may outlive every runtime object,
//! and unloading the HIP runtime at exit is a known source of crashes).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::Library;
use rocm_rs::hip::bindings as hip;
use rocm_rs::rocblas::ffi as rb;
use vitrine_core::{Error, Result};

pub(crate) use hip::{
    hipDeviceProp_tR0600 as DeviceProps, hipError_t as HipError, hipFunction_t as HipFunction,
    hipModule_t as HipModule, hipStream_t as HipStream,
};
pub(crate) use rb::{rocblas_handle as BlasHandle, rocblas_status as BlasStatus};

/// `hipSuccess`.
pub(crate) const HIP_SUCCESS: HipError = hip::hipError_t_hipSuccess;

/// Every HIP runtime function vitrine uses.
pub(crate) struct HipApi {
    /// Where the library was found, for messages.
    pub(crate) path: String,
    /// The soname major: 6 (ROCm 6.x) or 7 (ROCm 7.x).
    pub(crate) major: u32,
    pub(crate) get_device_count: unsafe extern "C" fn(*mut c_int) -> HipError,
    pub(crate) set_device: unsafe extern "C" fn(c_int) -> HipError,
    pub(crate) get_device_properties: unsafe extern "C" fn(*mut DeviceProps, c_int) -> HipError,
    pub(crate) device_get_attribute:
        unsafe extern "C" fn(*mut c_int, hip::hipDeviceAttribute_t, c_int) -> HipError,
    pub(crate) runtime_get_version: unsafe extern "C" fn(*mut c_int) -> HipError,
    pub(crate) get_error_name: unsafe extern "C" fn(HipError) -> *const c_char,
    pub(crate) malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> HipError,
    pub(crate) free: unsafe extern "C" fn(*mut c_void) -> HipError,
    pub(crate) memcpy:
        unsafe extern "C" fn(*mut c_void, *const c_void, usize, hip::hipMemcpyKind) -> HipError,
    /// Page-locked host memory for the staging of large copies; optional, as
    /// a runtime without it only makes those copies slower.
    pub(crate) host_malloc:
        Option<unsafe extern "C" fn(*mut *mut c_void, usize, c_uint) -> HipError>,
    pub(crate) host_free: Option<unsafe extern "C" fn(*mut c_void) -> HipError>,
    pub(crate) mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> HipError,
    pub(crate) stream_create: unsafe extern "C" fn(*mut HipStream) -> HipError,
    pub(crate) stream_destroy: unsafe extern "C" fn(HipStream) -> HipError,
    pub(crate) stream_synchronize: unsafe extern "C" fn(HipStream) -> HipError,
    pub(crate) module_load_data: unsafe extern "C" fn(*mut HipModule, *const c_void) -> HipError,
    pub(crate) module_unload: unsafe extern "C" fn(HipModule) -> HipError,
    pub(crate) module_get_function:
        unsafe extern "C" fn(*mut HipFunction, HipModule, *const c_char) -> HipError,
    #[allow(clippy::type_complexity)]
    pub(crate) module_launch_kernel: unsafe extern "C" fn(
        HipFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        HipStream,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> HipError,
    /// Keeps every pointer above valid. Never dropped: the table lives in a
    /// process-wide `OnceLock`.
    _lib: Library,
}

/// Every rocBLAS function vitrine uses.
pub(crate) struct BlasApi {
    /// Where the library was found, for messages.
    pub(crate) path: String,
    pub(crate) create_handle: unsafe extern "C" fn(*mut BlasHandle) -> BlasStatus,
    pub(crate) destroy_handle: unsafe extern "C" fn(BlasHandle) -> BlasStatus,
    pub(crate) set_stream: unsafe extern "C" fn(BlasHandle, HipStream) -> BlasStatus,
    pub(crate) set_pointer_mode:
        unsafe extern "C" fn(BlasHandle, rb::rocblas_pointer_mode) -> BlasStatus,
    pub(crate) set_atomics_mode:
        unsafe extern "C" fn(BlasHandle, rb::rocblas_atomics_mode) -> BlasStatus,
    #[allow(clippy::type_complexity)]
    pub(crate) gemm_ex: unsafe extern "C" fn(
        BlasHandle,
        rb::rocblas_operation,
        rb::rocblas_operation,
        rb::rocblas_int,
        rb::rocblas_int,
        rb::rocblas_int,
        *const c_void,
        *const c_void,
        rb::rocblas_datatype,
        rb::rocblas_int,
        *const c_void,
        rb::rocblas_datatype,
        rb::rocblas_int,
        *const c_void,
        *const c_void,
        rb::rocblas_datatype,
        rb::rocblas_int,
        *mut c_void,
        rb::rocblas_datatype,
        rb::rocblas_int,
        rb::rocblas_datatype,
        rb::rocblas_gemm_algo,
        i32,
        u32,
    ) -> BlasStatus,
    pub(crate) status_to_string: unsafe extern "C" fn(BlasStatus) -> *const c_char,
    _lib: Library,
}

/// Copies one symbol out of `lib` as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the `extern "C"` signature the library exports under `name`,
/// and the pointer must not be called after `lib` is unloaded.
unsafe fn sym<T: Copy>(lib: &Library, path: &str, name: &str) -> std::result::Result<T, String> {
    // SAFETY: forwarded to the caller (signature); `get` itself only runs dlsym.
    match unsafe { lib.get::<T>(name.as_bytes()) } {
        Ok(s) => Ok(*s),
        Err(e) => Err(format!("{path} has no {name} ({e})")),
    }
}

/// Soname majors we know, newest first: HIP 7 ↔ rocBLAS 5 (ROCm 7.x),
/// HIP 6 ↔ rocBLAS 4 (ROCm 6.x). Older runtimes lack
/// `hipGetDevicePropertiesR0600`.
const GENERATIONS: [(u32, u32); 2] = [(7, 5), (6, 4)];

/// Where to look for `file`: `$ROCM_PATH/lib`, then the dynamic loader's own
/// search (LD_LIBRARY_PATH, ld.so.cache), then `/opt/rocm/lib`.
fn places(file: &str, first_dir: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = first_dir {
        out.push(d.join(file).display().to_string());
    }
    if let Some(root) = std::env::var_os("ROCM_PATH").filter(|r| !r.is_empty()) {
        out.push(
            Path::new(&root)
                .join("lib")
                .join(file)
                .display()
                .to_string(),
        );
    }
    out.push(file.to_string());
    out.push(format!("/opt/rocm/lib/{file}"));
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// The HIP library candidates, each with its soname major.
fn hip_candidates() -> Vec<(String, u32)> {
    if let Some(p) = std::env::var_os("VITRINE_HIP_LIBRARY").filter(|p| !p.is_empty()) {
        let p = p.to_string_lossy().into_owned();
        let major = if p.contains(".so.6") { 6 } else { 7 };
        return vec![(p, major)];
    }
    GENERATIONS
        .iter()
        .flat_map(|&(h, _)| {
            places(&format!("libamdhip64.so.{h}"), None)
                .into_iter()
                .map(move |p| (p, h))
        })
        .collect()
}

/// Opens the first candidate that loads. On failure the message lists every
/// candidate, plus the loader's reason for any that exists but would not load
/// (a missing dependency, a wrong architecture), which is the useful one.
fn open_first(what: &str, candidates: &[String]) -> std::result::Result<(Library, String), String> {
    let mut reasons = Vec::new();
    for c in candidates {
        // SAFETY: loading a ROCm library runs its initialisers; these are the
        // vendor's runtime libraries, loaded exactly as a linked program would.
        match unsafe { Library::new(c) } {
            Ok(lib) => return Ok((lib, c.clone())),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains("No such file") {
                    reasons.push(format!("{c}: {msg}"));
                }
            }
        }
    }
    let mut msg = format!("{what} (tried {})", candidates.join(", "));
    if !reasons.is_empty() {
        msg.push_str(&format!("; {}", reasons.join("; ")));
    }
    Err(msg)
}

/// Loads the HIP table from the first candidate that opens.
pub(crate) fn load_hip_from(candidates: &[(String, u32)]) -> std::result::Result<HipApi, String> {
    let paths: Vec<String> = candidates.iter().map(|(p, _)| p.clone()).collect();
    let (lib, path) = open_first(
        "no HIP runtime: could not load libamdhip64 from ROCm 6 or 7",
        &paths,
    )
    .map_err(|m| {
        format!("{m}. Install ROCm, or set ROCM_PATH, LD_LIBRARY_PATH or VITRINE_HIP_LIBRARY")
    })?;
    let major = candidates
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(7, |&(_, m)| m);
    let p = path.as_str();
    // SAFETY: each signature below matches the HIP 7.1 header (rocm-rs'
    // generated bindings), which ROCm 6.x shares for these functions; the
    // pointers live as long as `_lib`, which the table owns.
    unsafe {
        Ok(HipApi {
            get_device_count: sym(&lib, p, "hipGetDeviceCount")?,
            set_device: sym(&lib, p, "hipSetDevice")?,
            get_device_properties: sym(&lib, p, "hipGetDevicePropertiesR0600")?,
            device_get_attribute: sym(&lib, p, "hipDeviceGetAttribute")?,
            runtime_get_version: sym(&lib, p, "hipRuntimeGetVersion")?,
            get_error_name: sym(&lib, p, "hipGetErrorName")?,
            malloc: sym(&lib, p, "hipMalloc")?,
            free: sym(&lib, p, "hipFree")?,
            memcpy: sym(&lib, p, "hipMemcpy")?,
            host_malloc: sym(&lib, p, "hipHostMalloc").ok(),
            host_free: sym(&lib, p, "hipHostFree").ok(),
            mem_get_info: sym(&lib, p, "hipMemGetInfo")?,
            stream_create: sym(&lib, p, "hipStreamCreate")?,
            stream_destroy: sym(&lib, p, "hipStreamDestroy")?,
            stream_synchronize: sym(&lib, p, "hipStreamSynchronize")?,
            module_load_data: sym(&lib, p, "hipModuleLoadData")?,
            module_unload: sym(&lib, p, "hipModuleUnload")?,
            module_get_function: sym(&lib, p, "hipModuleGetFunction")?,
            module_launch_kernel: sym(&lib, p, "hipModuleLaunchKernel")?,
            path,
            major,
            _lib: lib,
        })
    }
}

/// The process-wide HIP table, or why there is none.
pub(crate) fn hip_api() -> Result<&'static HipApi> {
    static API: OnceLock<std::result::Result<HipApi, String>> = OnceLock::new();
    API.get_or_init(|| load_hip_from(&hip_candidates()))
        .as_ref()
        .map_err(|m| Error::DeviceUnavailable(m.clone()))
}

/// Loads rocBLAS. The soname that matches the loaded HIP runtime comes first,
/// looked for next to it, and afterwards the process must still hold exactly
/// one HIP runtime: a rocBLAS from another ROCm would drag in its own, and
/// two HIP runtimes in one process do not work.
fn load_blas(hip: &HipApi) -> std::result::Result<BlasApi, String> {
    let candidates: Vec<String> =
        if let Some(p) = std::env::var_os("VITRINE_ROCBLAS_LIBRARY").filter(|p| !p.is_empty()) {
            vec![p.to_string_lossy().into_owned()]
        } else {
            let hip_dir = Path::new(&hip.path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(PathBuf::from);
            let mut majors: Vec<u32> = GENERATIONS
                .iter()
                .filter(|&&(h, _)| h == hip.major)
                .map(|&(_, b)| b)
                .collect();
            majors.extend(GENERATIONS.iter().map(|&(_, b)| b));
            let mut seen = std::collections::HashSet::new();
            majors.retain(|b| seen.insert(*b));
            majors
                .iter()
                .flat_map(|b| places(&format!("librocblas.so.{b}"), hip_dir.as_deref()))
                .collect()
        };
    let (lib, path) = open_first(
        &format!(
            "no rocBLAS: the HIP runtime {} loaded, but librocblas did not",
            hip.path
        ),
        &candidates,
    )
    .map_err(|m| format!("{m}. Install rocBLAS, or set VITRINE_ROCBLAS_LIBRARY"))?;
    let runtimes = loaded_hip_runtimes();
    if runtimes.len() > 1 {
        return Err(format!(
            "{path} brought a second HIP runtime into the process ({}); it belongs to another \
             ROCm than {}. Point VITRINE_ROCBLAS_LIBRARY at the matching rocBLAS",
            runtimes.join(", "),
            hip.path
        ));
    }
    let p = path.as_str();
    // SAFETY: signatures match rocBLAS' public header (rocm-rs' generated
    // bindings); the pointers live as long as `_lib`, which the table owns.
    unsafe {
        Ok(BlasApi {
            create_handle: sym(&lib, p, "rocblas_create_handle")?,
            destroy_handle: sym(&lib, p, "rocblas_destroy_handle")?,
            set_stream: sym(&lib, p, "rocblas_set_stream")?,
            set_pointer_mode: sym(&lib, p, "rocblas_set_pointer_mode")?,
            set_atomics_mode: sym(&lib, p, "rocblas_set_atomics_mode")?,
            gemm_ex: sym(&lib, p, "rocblas_gemm_ex")?,
            status_to_string: sym(&lib, p, "rocblas_status_to_string")?,
            path,
            _lib: lib,
        })
    }
}

/// The distinct `libamdhip64` files mapped into this process (Linux).
fn loaded_hip_runtimes() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|f| f.contains("libamdhip64.so"))
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// The process-wide rocBLAS table, or why there is none.
pub(crate) fn blas_api(hip: &HipApi) -> Result<&'static BlasApi> {
    static API: OnceLock<std::result::Result<BlasApi, String>> = OnceLock::new();
    API.get_or_init(|| load_blas(hip))
        .as_ref()
        .map_err(|m| Error::DeviceUnavailable(m.clone()))
}

impl HipApi {
    /// `hipErrorOutOfMemory`'s name and friends, for messages.
    pub(crate) fn error_name(&self, code: HipError) -> String {
        // SAFETY: hipGetErrorName takes any code and returns NULL or a static
        // NUL-terminated string.
        let p = unsafe { (self.get_error_name)(code) };
        if p.is_null() {
            return "unknown HIP error".into();
        }
        // SAFETY: non-NULL, static, NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Turns a HIP status into `Ok` or an [`Error::Backend`] naming the call.
    pub(crate) fn check(&self, call: &str, code: HipError) -> Result<()> {
        if code == HIP_SUCCESS {
            return Ok(());
        }
        let name = self.error_name(code);
        Err(Error::Backend(
            if code == hip::hipError_t_hipErrorOutOfMemory {
                format!("{call}: out of device memory ({name}, code {code})")
            } else {
                format!("{call} failed: {name} (HIP error {code})")
            },
        ))
    }
}

impl BlasApi {
    /// Turns a rocBLAS status into `Ok` or an [`Error::Backend`] naming the call.
    pub(crate) fn check(&self, call: &str, status: BlasStatus) -> Result<()> {
        if status == rb::rocblas_status__rocblas_status_success {
            return Ok(());
        }
        // SAFETY: rocblas_status_to_string returns a static NUL-terminated
        // string for every status (NULL is handled anyway).
        let p = unsafe { (self.status_to_string)(status) };
        let name = if p.is_null() {
            "unknown rocBLAS status".into()
        } else {
            // SAFETY: non-NULL, static, NUL-terminated.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        Err(Error::Backend(
            if status == rb::rocblas_status__rocblas_status_memory_error {
                format!("{call}: out of device memory for rocBLAS workspace ({name})")
            } else {
                format!("{call} failed: {name} (rocBLAS status {status})")
            },
        ))
    }
}

/// rocBLAS enum values used by the GEMM, re-exported under short names.
pub(crate) mod blas {
    use rocm_rs::rocblas::ffi as rb;

    pub(crate) const OP_N: rb::rocblas_operation = rb::rocblas_operation__rocblas_operation_none;
    pub(crate) const OP_T: rb::rocblas_operation =
        rb::rocblas_operation__rocblas_operation_transpose;
    pub(crate) const F16: rb::rocblas_datatype = rb::rocblas_datatype__rocblas_datatype_f16_r;
    pub(crate) const BF16: rb::rocblas_datatype = rb::rocblas_datatype__rocblas_datatype_bf16_r;
    pub(crate) const F32: rb::rocblas_datatype = rb::rocblas_datatype__rocblas_datatype_f32_r;
    pub(crate) const ALGO_STANDARD: rb::rocblas_gemm_algo =
        rb::rocblas_gemm_algo__rocblas_gemm_algo_standard;
    pub(crate) const POINTER_HOST: rb::rocblas_pointer_mode =
        rb::rocblas_pointer_mode__rocblas_pointer_mode_host;
    pub(crate) const NO_ATOMICS: rb::rocblas_atomics_mode =
        rb::rocblas_atomics_mode__rocblas_atomics_not_allowed;
}

/// HIP enum values, re-exported under short names.
pub(crate) mod consts {
    use rocm_rs::hip::bindings as hip;

    pub(crate) const H2D: hip::hipMemcpyKind = hip::hipMemcpyKind_hipMemcpyHostToDevice;
    pub(crate) const D2H: hip::hipMemcpyKind = hip::hipMemcpyKind_hipMemcpyDeviceToHost;
    pub(crate) const ATTR_WARP_SIZE: hip::hipDeviceAttribute_t =
        hip::hipDeviceAttribute_t_hipDeviceAttributeWarpSize;
    pub(crate) const NO_DEVICE: hip::hipError_t = hip::hipError_t_hipErrorNoDevice;
    pub(crate) const OUT_OF_MEMORY: hip::hipError_t = hip::hipError_t_hipErrorOutOfMemory;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let bogus = vec![
            ("/nonexistent/libamdhip64.so.7".to_string(), 7),
            ("libamdhip64-vitrine-test.so.6".to_string(), 6),
        ];
        let msg = match load_hip_from(&bogus) {
            Ok(_) => panic!("loaded a library that does not exist"),
            Err(m) => m,
        };
        assert!(msg.starts_with("no HIP runtime"), "{msg}");
        assert!(msg.contains("/nonexistent/libamdhip64.so.7"), "{msg}");
        assert!(msg.contains("libamdhip64-vitrine-test.so.6"), "{msg}");
    }

    #[test]
    fn a_library_without_hip_symbols_is_named() {
        // libc loads everywhere and has none of HIP's functions.
        let msg = match load_hip_from(&[("libc.so.6".to_string(), 6)]) {
            Ok(_) => panic!("libc is not a HIP runtime"),
            Err(m) => m,
        };
        assert!(msg.contains("libc.so.6 has no hipGetDeviceCount"), "{msg}");
    }

    #[test]
    fn candidates_cover_both_generations_and_opt_rocm() {
        let c = hip_candidates();
        if std::env::var_os("VITRINE_HIP_LIBRARY").is_some() {
            return;
        }
        for want in [
            "libamdhip64.so.7",
            "libamdhip64.so.6",
            "/opt/rocm/lib/libamdhip64.so.7",
            "/opt/rocm/lib/libamdhip64.so.6",
        ] {
            assert!(c.iter().any(|(p, _)| p == want), "{want} not in {c:?}");
        }
        // Newest first.
        assert_eq!(c[0].1, 7);
    }
}
