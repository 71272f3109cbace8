//! Vendor-neutral GPU backend.
//!
//! Every op of [`vitrine_core::Backend`] is written here once, on top of the
//! kernels in `kernels/` and one GEMM entry point. A vendor crate (CUDA, HIP)
//! only implements [`GpuRuntime`]: open a device, allocate, copy, launch a
//! kernel by name, run a GEMM. Launch geometry, argument lists, dtype
//! suffixes and shape checks therefore cannot drift between vendors.
#![warn(missing_docs)]

// Host tensors go to and from device buffers as byte views of their storage
// (no per-element conversion), which is right only where the host stores
// numbers as the GPUs do: little-endian.
#[cfg(not(target_endian = "little"))]
compile_error!("vitrine-gpu copies host tensors byte for byte and needs a little-endian host");

mod attention;
mod backend;
mod profile;
mod runtime;
mod staging;

pub use backend::{GpuBackend, GpuTensor};
pub use runtime::{
    ColumnBlockMap, DeviceBuffer, Gemm, GpuRuntime, KernelArg, KernelModule, TensorMapBytes,
};
pub use staging::{PinnedBuffer, Staging, STAGING_BYTES};
