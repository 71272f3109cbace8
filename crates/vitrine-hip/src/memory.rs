//! Device memory: `hipMalloc`, `hipFree` and synchronous copies, large ones
//! through a pinned staging buffer (`hipHostMalloc`; vitrine-gpu's
//! `Staging` cuts them into chunks).
//!
//! `hipFree` waits for the device before releasing memory, which is exactly
//! what [`DeviceBuffer`]'s drop contract asks for: an intermediate tensor may
//! be dropped while kernels that read it are still queued.
//!
//! Copies use the synchronous `hipMemcpy` from pageable host memory: it
//! returns only once the source may be reused, so no host buffer has to
//! outlive the call (the async variant from pageable memory leaves that
//! unclear). It runs on the legacy NULL stream, which orders it after the work
//! queued on our (blocking) stream.

use std::ffi::{c_int, c_void};

use vitrine_core::{Error, Result};
use vitrine_gpu::{DeviceBuffer, PinnedBuffer, STAGING_BYTES};

use crate::ffi::{consts, HipApi};

/// A `hipMalloc` allocation on one device.
pub struct HipBuffer {
    api: &'static HipApi,
    device: c_int,
    ptr: u64,
    len: usize,
}

impl DeviceBuffer for HipBuffer {
    fn device_ptr(&self) -> u64 {
        self.ptr
    }

    fn len_bytes(&self) -> usize {
        self.len
    }
}

impl Drop for HipBuffer {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; a failure here means the
        // device is already lost, which the next call reports.
        // SAFETY: `ptr` came from hipMalloc on `device` and is freed once.
        unsafe {
            let _ = (self.api.set_device)(self.device);
            let _ = (self.api.free)(self.ptr as *mut c_void);
        }
    }
}

/// Allocates `bytes` (at least 1) on `device`, which must be current.
pub(crate) fn alloc(api: &'static HipApi, device: c_int, bytes: usize) -> Result<HipBuffer> {
    let bytes = bytes.max(1);
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: hipMalloc writes one pointer through a valid out-pointer.
    let code = unsafe { (api.malloc)(&mut p, bytes) };
    if code == consts::OUT_OF_MEMORY {
        return Err(Error::out_of_memory(
            format!("hip:{device}"),
            bytes as u64,
            format!("hipMalloc failed ({})", free_memory(api)),
        ));
    }
    api.check("hipMalloc", code)?;
    if p.is_null() {
        return Err(Error::Backend(format!(
            "hipMalloc returned NULL for {bytes} bytes"
        )));
    }
    Ok(HipBuffer {
        api,
        device,
        ptr: p as u64,
        len: bytes,
    })
}

/// Checks that `bytes` fit at the start of `dst`.
pub(crate) fn check_fits(dst: &HipBuffer, bytes: usize) -> Result<()> {
    if bytes > dst.len {
        return Err(Error::InvalidArgument(format!(
            "copy of {bytes} bytes into a {}-byte device buffer",
            dst.len
        )));
    }
    Ok(())
}

/// Copies `src` to device address `dst`, inside one of our allocations with
/// at least `src.len()` bytes after it (the caller checks).
pub(crate) fn copy_to_device(api: &HipApi, dst: u64, src: &[u8]) -> Result<()> {
    if src.is_empty() {
        return Ok(());
    }
    // SAFETY: the caller guarantees the device range, and `src` is a live
    // host slice; hipMemcpy returns once `src` may be reused.
    let code = unsafe {
        (api.memcpy)(
            dst as *mut c_void,
            src.as_ptr().cast(),
            src.len(),
            consts::H2D,
        )
    };
    api.check("hipMemcpy (host to device)", code)
}

/// Copies `dst.len()` bytes from device address `src` to the host. The
/// caller has synchronised the stream, so queued work has finished.
pub(crate) fn copy_to_host(api: &HipApi, src: u64, dst: &mut [u8]) -> Result<()> {
    if dst.is_empty() {
        return Ok(());
    }
    // SAFETY: `src` is a device address inside one of our allocations (the
    // backend only passes tensor addresses) and `dst` is a live, writable
    // host slice of the copied length.
    let code = unsafe {
        (api.memcpy)(
            dst.as_mut_ptr().cast(),
            src as *const c_void,
            dst.len(),
            consts::D2H,
        )
    };
    api.check("hipMemcpy (device to host)", code)
}

/// One page-locked host buffer of [`STAGING_BYTES`].
pub(crate) struct PinnedHost {
    api: &'static HipApi,
    ptr: *mut u8,
}

// SAFETY: the buffer is plain host memory owned by this value; `Staging`
// keeps it behind a mutex, so one copy uses it at a time.
unsafe impl Send for PinnedHost {}

impl PinnedHost {
    /// Allocates the buffer on the current device; `None` when the runtime
    /// has no `hipHostMalloc` or refuses (the copies then stay pageable).
    pub(crate) fn new(api: &'static HipApi) -> Option<Self> {
        let (host_malloc, _) = (api.host_malloc?, api.host_free?);
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one pointer through a valid out-pointer; flags 0 is
        // hipHostMallocDefault.
        let code = unsafe { host_malloc(&mut p, STAGING_BYTES, 0) };
        (code == crate::ffi::HIP_SUCCESS && !p.is_null()).then(|| Self {
            api,
            ptr: p.cast::<u8>(),
        })
    }
}

impl PinnedBuffer for PinnedHost {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at STAGING_BYTES bytes that live as long as
        // `self`, and `&mut self` makes this the only view of them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, STAGING_BYTES) }
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        if let Some(host_free) = self.api.host_free {
            // SAFETY: `ptr` came from hipHostMalloc and is freed once; errors
            // cannot be reported from drop.
            let _ = unsafe { host_free(self.ptr.cast::<c_void>()) };
        }
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// "X MiB free of Y MiB", or why that is unknown.
fn free_memory(api: &HipApi) -> String {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: writes two usizes through valid pointers.
    let code = unsafe { (api.mem_get_info)(&mut free, &mut total) };
    if code == crate::ffi::HIP_SUCCESS {
        format!("{} free of {}", mib(free), mib(total))
    } else {
        "free memory unknown".into()
    }
}
