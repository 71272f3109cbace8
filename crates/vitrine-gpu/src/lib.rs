//! Vendor-neutral GPU backend.
//!
//! Every op of [`vitrine_core::Backend`] is written here once, on top of the
//! kernels in `kernels/` and one GEMM entry point. A vendor crate (CUDA, HIP)
//! only implements [`GpuRuntime`]: open a device, allocate, copy, launch a
//! kernel by name, run a GEMM. Launch geometry, argument lists, dtype
//! suffixes and shape checks therefore cannot drift between vendors.
#![warn(missing_docs)]

mod attention;
mod backend;
mod profile;
mod runtime;

pub use backend::{GpuBackend, GpuTensor};
pub use runtime::{
    ColumnBlockMap, DeviceBuffer, Gemm, GpuRuntime, KernelArg, KernelModule, TensorMapBytes,
};
