//! Large host↔device copies through page-locked ("pinned") host memory.
//!
//! Measured on the H100 machine (85 MB, docs/performance.md row 47): a
//! device-to-host copy into ordinary (pageable) memory runs at ~11 GB/s, and
//! at ~1.4 GB/s into a fresh allocation, whose page faults the driver then
//! takes on one thread; from or into pinned memory the copy engine runs at
//! ~48 GB/s. Pinning the caller's buffers is not an option (they are plain
//! `Vec`s, and pinning costs more than a copy), so large copies pass through
//! one pinned buffer per runtime, chunk by chunk, with the host side of each
//! chunk copied across the thread pool. The vendor crates supply the buffer
//! ([`PinnedBuffer`]) and the chunk copies; the chunking lives here once.

use std::sync::Mutex;

use rayon::prelude::*;
use vitrine_core::{Error, Result};

/// Copies shorter than this go straight from or to the caller's memory: the
/// staging round trip would cost more than it saves.
const STAGING_MIN_BYTES: usize = 1 << 20;
/// Size of the pinned buffer, and so of the chunks a large copy is cut into.
pub const STAGING_BYTES: usize = 32 << 20;
/// Bytes per task when the host threads copy a chunk in or out.
const COPY_TASK_BYTES: usize = 1 << 18;

/// Page-locked host memory of [`STAGING_BYTES`] from a vendor's allocator,
/// freed when dropped.
pub trait PinnedBuffer: Send {
    /// The whole buffer.
    fn bytes(&mut self) -> &mut [u8];
}

enum State<P> {
    Untried,
    Ready(P),
    /// The allocation failed (e.g. a locked-memory limit): large copies then
    /// go straight from and to pageable memory, which is slower but gives
    /// the same bytes.
    Unavailable,
}

/// A runtime's staging buffer, made on its first large copy.
pub struct Staging<P> {
    state: Mutex<State<P>>,
}

impl<P: PinnedBuffer> Default for Staging<P> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Untried),
        }
    }
}

impl<P: PinnedBuffer> Staging<P> {
    /// Runs `copy` on the pinned buffer (made by `alloc` on first use);
    /// `false` when there is none, and the caller copies directly.
    fn run(
        &self,
        alloc: impl FnOnce() -> Result<Option<P>>,
        copy: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<bool> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Backend("staging buffer poisoned".into()))?;
        if matches!(*state, State::Untried) {
            *state = alloc()?.map_or(State::Unavailable, State::Ready);
        }
        let State::Ready(pinned) = &mut *state else {
            return Ok(false);
        };
        let result = copy(pinned.bytes());
        if result.is_err() {
            // A copy that failed midway may still be running into or out of
            // the buffer (a failed wait does not stop the copy engine): it is
            // never handed out again, nor freed under a running copy, but
            // leaked (once per runtime).
            if let State::Ready(p) = std::mem::replace(&mut *state, State::Unavailable) {
                std::mem::forget(p);
            }
        }
        result.map(|()| true)
    }

    /// `dst` ← the device bytes at `src`, through the pinned buffer when
    /// `dst` is large and there is one; `dtoh(pinned, at)` copies
    /// `pinned.len()` device bytes from `at` and returns once they have
    /// landed. `false`: not staged, the caller copies directly.
    pub fn download(
        &self,
        alloc: impl FnOnce() -> Result<Option<P>>,
        src: u64,
        dst: &mut [u8],
        mut dtoh: impl FnMut(&mut [u8], u64) -> Result<()>,
    ) -> Result<bool> {
        if dst.len() < STAGING_MIN_BYTES {
            return Ok(false);
        }
        self.run(alloc, |pinned| {
            for (k, chunk) in dst.chunks_mut(STAGING_BYTES).enumerate() {
                let stage = &mut pinned[..chunk.len()];
                dtoh(stage, src + (k * STAGING_BYTES) as u64)?;
                parallel_copy(chunk, stage);
            }
            Ok(())
        })
    }

    /// The device bytes at `dst` ← `src`, through the pinned buffer when
    /// `src` is large and there is one; `htod(at, pinned)` copies `pinned` to
    /// device address `at` and returns once `pinned` may be reused. `false`:
    /// not staged, the caller copies directly.
    pub fn upload(
        &self,
        alloc: impl FnOnce() -> Result<Option<P>>,
        dst: u64,
        src: &[u8],
        mut htod: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<bool> {
        if src.len() < STAGING_MIN_BYTES {
            return Ok(false);
        }
        self.run(alloc, |pinned| {
            for (k, chunk) in src.chunks(STAGING_BYTES).enumerate() {
                let stage = &mut pinned[..chunk.len()];
                parallel_copy(stage, chunk);
                htod(dst + (k * STAGING_BYTES) as u64, stage)?;
            }
            Ok(())
        })
    }
}

/// `dst` ← `src` (equal lengths) across the thread pool.
fn parallel_copy(dst: &mut [u8], src: &[u8]) {
    dst.par_chunks_mut(COPY_TASK_BYTES)
        .zip(src.par_chunks(COPY_TASK_BYTES))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host memory standing in for pinned memory, and a "device" that is a
    /// byte vector addressed from 0.
    struct Fake(Vec<u8>);
    impl PinnedBuffer for Fake {
        fn bytes(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }

    fn fake() -> Result<Option<Fake>> {
        Ok(Some(Fake(vec![0; STAGING_BYTES])))
    }

    #[test]
    fn large_copies_go_through_the_buffer_in_chunks_and_small_ones_do_not() {
        let staging = Staging::<Fake>::default();
        let n = 2 * STAGING_BYTES + 12_345;
        let host: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let mut device = vec![0u8; n];
        let mut chunks = 0;
        let staged = staging
            .upload(fake, 0, &host, |at, b| {
                chunks += 1;
                device[at as usize..at as usize + b.len()].copy_from_slice(b);
                Ok(())
            })
            .unwrap();
        assert!(staged);
        assert_eq!(chunks, 3);
        assert!(device == host);
        let mut back = vec![0u8; n];
        let staged = staging
            .download(
                || unreachable!("made once"),
                0,
                &mut back,
                |b, at| {
                    b.copy_from_slice(&device[at as usize..at as usize + b.len()]);
                    Ok(())
                },
            )
            .unwrap();
        assert!(staged && back == host);
        let mut small = vec![0u8; 16];
        assert!(!staging
            .download(fake, 0, &mut small, |_, _| Ok(()))
            .unwrap());
    }

    #[test]
    fn without_pinned_memory_nothing_is_staged() {
        let src = vec![1u8; STAGING_MIN_BYTES];
        let none = Staging::<Fake>::default();
        assert!(!none.upload(|| Ok(None), 0, &src, |_, _| Ok(())).unwrap());
        assert!(!none
            .upload(|| unreachable!("tried once"), 0, &src, |_, _| Ok(()))
            .unwrap());
        // An allocation that errs (a context that would not bind) is tried
        // again on the next copy.
        let later = Staging::<Fake>::default();
        assert!(later
            .upload(
                || Err(Error::Backend("bind".into())),
                0,
                &src,
                |_, _| Ok(())
            )
            .is_err());
        assert!(later.upload(fake, 0, &src, |_, _| Ok(())).unwrap());
    }

    #[test]
    fn a_failed_copy_retires_the_buffer() {
        let staging = Staging::<Fake>::default();
        let src = vec![1u8; STAGING_MIN_BYTES];
        let err = staging
            .upload(fake, 0, &src, |_, _| {
                Err(Error::Backend("copy failed".into()))
            })
            .unwrap_err();
        assert!(err.to_string().contains("copy failed"));
        // The failed copy may still use the buffer: it is not handed out again.
        assert!(!staging
            .upload(|| unreachable!(), 0, &src, |_, _| Ok(()))
            .unwrap());
    }
}
