//! Large host↔device copies through page-locked ("pinned") host memory.
//!
//! Measured on the H100 machine (85 MB, docs/performance.md row 47): a
//! device-to-host copy into ordinary (pageable) memory runs at ~11 GB/s, and
//! at ~1.4 GB/s into a fresh allocation, whose page faults the driver then
//! takes on one thread; from or into pinned memory the copy engine runs at
//! ~48 GB/s. Pinning the caller's buffers is not an option (they are plain
//! `Vec`s, and pinning costs more than a copy), so large copies pass through
//! one pinned buffer, chunk by chunk, with the host side of each chunk
//! copied across the thread pool.

use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::driver::{result as drv, CudaStream};
use rayon::prelude::*;

/// Copies shorter than this go straight from or to the caller's memory: the
/// staging round trip would cost more than it saves.
pub(crate) const STAGING_MIN_BYTES: usize = 1 << 20;
/// Size of the pinned buffer, and so of the chunks a large copy is cut into.
const STAGING_BYTES: usize = 32 << 20;
/// Bytes per task when the host threads copy a chunk in or out.
const COPY_TASK_BYTES: usize = 1 << 18;

/// One page-locked host buffer of [`STAGING_BYTES`].
pub(crate) struct Staging {
    ptr: *mut u8,
}

// SAFETY: the buffer is plain host memory owned by this value; the runtime
// keeps it behind a mutex, so one copy uses it at a time.
unsafe impl Send for Staging {}

impl Staging {
    /// Allocates the pinned buffer (`cuMemHostAlloc`); the caller's context
    /// must be current.
    pub(crate) fn new() -> Result<Self, String> {
        // SAFETY: a plain allocation; the pointer is freed once, in drop.
        let ptr = unsafe { drv::malloc_host(STAGING_BYTES, 0) }.map_err(|e| e.to_string())?;
        Ok(Self {
            ptr: ptr.cast::<u8>(),
        })
    }

    fn buffer(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at STAGING_BYTES bytes that live as long as
        // `self`, and `&mut self` makes this the only view of them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, STAGING_BYTES) }
    }

    /// `dst` ← the device bytes at `src`, chunk by chunk: the copy engine
    /// fills the pinned buffer, then the host threads copy it out.
    pub(crate) fn download(
        &mut self,
        stream: &CudaStream,
        src: u64,
        dst: &mut [u8],
    ) -> Result<(), String> {
        for (k, chunk) in dst.chunks_mut(STAGING_BYTES).enumerate() {
            let pinned = &mut self.buffer()[..chunk.len()];
            let at = src + (k * STAGING_BYTES) as u64;
            // SAFETY: `pinned` is live host memory of the chunk's length, and
            // the stream is synchronised before it is read or reused.
            unsafe { drv::memcpy_dtoh_async(pinned, at, stream.cu_stream()) }
                .map_err(|e| e.to_string())?;
            stream.synchronize().map_err(|e| e.to_string())?;
            parallel_copy(chunk, pinned);
        }
        Ok(())
    }

    /// The device bytes at `dst` ← `src`, chunk by chunk: the host threads
    /// fill the pinned buffer, then the copy engine empties it.
    pub(crate) fn upload(
        &mut self,
        stream: &CudaStream,
        dst: u64,
        src: &[u8],
    ) -> Result<(), String> {
        for (k, chunk) in src.chunks(STAGING_BYTES).enumerate() {
            let pinned = &mut self.buffer()[..chunk.len()];
            parallel_copy(pinned, chunk);
            let at = dst + (k * STAGING_BYTES) as u64;
            // SAFETY: as in download; the copy has finished reading `pinned`
            // when the synchronisation returns, before the next chunk fills it.
            unsafe { drv::memcpy_htod_async(at, &*pinned, stream.cu_stream()) }
                .map_err(|e| e.to_string())?;
            stream.synchronize().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `malloc_host` and is freed once. A failure
        // can only be reported by leaking, never by panicking in drop.
        let _ = unsafe { drv::free_host(self.ptr.cast::<c_void>()) };
    }
}

/// `dst` ← `src` (equal lengths) across the thread pool.
fn parallel_copy(dst: &mut [u8], src: &[u8]) {
    dst.par_chunks_mut(COPY_TASK_BYTES)
        .zip(src.par_chunks(COPY_TASK_BYTES))
        .for_each(|(d, s)| d.copy_from_slice(s));
}
