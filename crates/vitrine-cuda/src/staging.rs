//! The pinned host buffer that large copies pass through (the chunking is
//! vitrine-gpu's `Staging`): page-locked memory from `cuMemHostAlloc`.

use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::driver::result as drv;
use vitrine_gpu::{PinnedBuffer, STAGING_BYTES};

/// One page-locked host buffer of [`STAGING_BYTES`].
pub(crate) struct PinnedHost {
    ptr: *mut u8,
}

// SAFETY: the buffer is plain host memory owned by this value; `Staging`
// keeps it behind a mutex, so one copy uses it at a time.
unsafe impl Send for PinnedHost {}

impl PinnedHost {
    /// Allocates the buffer; the caller's context must be current. `None`
    /// when the driver refuses (the copies then stay pageable).
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: a plain allocation; the pointer is freed once, in drop.
        let ptr = unsafe { drv::malloc_host(STAGING_BYTES, 0) }.ok()?;
        Some(Self {
            ptr: ptr.cast::<u8>(),
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
        // SAFETY: `ptr` came from `malloc_host` and is freed once. A failure
        // can only be reported by leaking, never by panicking in drop.
        let _ = unsafe { drv::free_host(self.ptr.cast::<c_void>()) };
    }
}
