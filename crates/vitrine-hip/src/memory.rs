//! Device memory: `hipMalloc`, `hipFree` and synchronous copies.
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
use vitrine_gpu::DeviceBuffer;

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

/// Copies `src` to the start of `dst`.
pub(crate) fn copy_to_device(api: &HipApi, dst: &HipBuffer, src: &[u8]) -> Result<()> {
    if src.len() > dst.len {
        return Err(Error::InvalidArgument(format!(
            "copy of {} bytes into a {}-byte device buffer",
            src.len(),
            dst.len
        )));
    }
    if src.is_empty() {
        return Ok(());
    }
    // SAFETY: `dst` holds at least src.len() bytes (checked above) and `src`
    // is a live host slice; hipMemcpy is synchronous for pageable memory.
    let code = unsafe {
        (api.memcpy)(
            dst.ptr as *mut c_void,
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
