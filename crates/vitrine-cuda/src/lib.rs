//! vitrine's CUDA backend: the shared kernels of `kernels/` (embedded as
//! fatbins at build time) plus cuBLAS GEMMs, on a candle CUDA device.
//!
//! All op logic lives in `vitrine-gpu`; this crate only provides
//! [`CudaRuntime`]: the device, the stream, memory, kernel launches and
//! cuBLAS. Because candle links the CUDA libraries dynamically (not through
//! `dlopen`), a binary built with this backend needs the NVIDIA driver
//! libraries to start at all; ship CPU-only builds separately.
#![warn(missing_docs)]

mod lt;
mod runtime;
mod staging;

pub use runtime::CudaRuntime;
use vitrine_core::Result;

/// The CUDA backend.
pub type CudaBackend = vitrine_gpu::GpuBackend<CudaRuntime>;

/// Checks that CUDA device `ordinal` can be opened and its kernels loaded.
pub fn probe(ordinal: usize) -> Result<()> {
    CudaBackend::new(ordinal).map(|_| ())
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));
}
