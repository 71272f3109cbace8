//! vitrine's HIP backend: AMD GPUs through the HIP runtime and rocBLAS.
//!
//! The ops are not written here: [`HipBackend`] is `vitrine-gpu`'s
//! [`GpuBackend`] over [`HipRuntime`], which only opens a device, moves
//! bytes, launches kernels by name and runs GEMMs. The kernels are the same
//! `kernels/*.cu` files the CUDA backend uses, compiled at build time into
//! one code object (v5) per AMD target and embedded in the binary:
//!
//! | target | GPUs | wave size |
//! |---|---|---|
//! | gfx90a | Instinct MI200 (CDNA2) | 64 |
//! | gfx942 | Instinct MI300 (CDNA3) | 64 |
//! | gfx1100, gfx1101 | Radeon RX 7000 / PRO W7000 (RDNA3) | 32 |
//! | gfx1201 | Radeon RX 9000 (RDNA4) | 32 |
//!
//! Nothing links against ROCm. `libamdhip64` (ROCm 7 or 6) and the matching
//! `librocblas` are loaded when a device is first opened, so a binary built
//! with this crate starts on any Linux machine, and an absent runtime, an
//! absent GPU or an architecture we did not compile is an
//! [`vitrine_core::Error::DeviceUnavailable`] that says which. Search order:
//! `VITRINE_HIP_LIBRARY` / `VITRINE_ROCBLAS_LIBRARY` (exact files), else
//! `$ROCM_PATH/lib`, the dynamic loader's path, `/opt/rocm/lib`.
//!
//! Status: compiled, linked and tested without AMD hardware; see
//! `docs/amd.md` for what has not been run on a GPU.
#![warn(missing_docs)]

mod arch;
mod blas;
mod device;
mod ffi;
mod memory;
mod module;
mod runtime;

pub use arch::embedded_objects;
pub use memory::HipBuffer;
pub use runtime::HipRuntime;

use vitrine_core::Result;
use vitrine_gpu::{GpuBackend, GpuRuntime};

/// The HIP backend: every op of `vitrine-gpu` on an AMD GPU.
pub type HipBackend = GpuBackend<HipRuntime>;

/// The AMD targets this build holds code objects for.
pub fn compiled_archs() -> &'static [&'static str] {
    &arch::ARCHS
}

/// Checks that HIP device `ordinal` can be used, by opening it (runtime,
/// device, architecture, kernels, rocBLAS) and closing it again. The error
/// says what is missing.
pub fn probe(ordinal: usize) -> Result<()> {
    HipRuntime::open(ordinal).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::Error;

    /// There is no ROCm on the build machines; on one with ROCm but no GPU
    /// the error changes, and on an AMD machine the probe succeeds. Either
    /// way it must not panic, and an error must name the device.
    #[test]
    fn probe_explains_why_not() {
        match probe(0) {
            Ok(()) => println!("hip:0 is available"),
            Err(Error::DeviceUnavailable(m)) => {
                println!("hip:0 unavailable: {m}");
                assert!(m.starts_with("hip:0: "), "{m}");
                if m.contains("no HIP runtime") && std::env::var_os("VITRINE_HIP_LIBRARY").is_none()
                {
                    assert!(m.contains("libamdhip64.so.7"), "{m}");
                    assert!(m.contains("libamdhip64.so.6"), "{m}");
                    assert!(m.contains("tried"), "{m}");
                }
            }
            Err(e) => panic!("probe must report unavailability, not {e}"),
        }
    }

    #[test]
    fn a_bad_ordinal_names_the_device() {
        match probe(77) {
            Ok(()) => panic!("no machine has 78 AMD GPUs"),
            Err(e) => {
                let m = e.to_string();
                assert!(matches!(e, Error::DeviceUnavailable(_)), "{m}");
                assert!(m.contains("hip:77"), "{m}");
                if !m.contains("no HIP runtime") {
                    assert!(m.contains("found"), "{m}");
                }
            }
        }
    }

    #[test]
    fn the_backend_reports_unavailability_too() {
        match HipBackend::new(0) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("hip:0"), "{e}"),
        }
    }

    #[test]
    fn compiled_archs_match_the_embedded_objects() {
        let objs = embedded_objects();
        for a in compiled_archs() {
            assert!(objs.iter().any(|(_, arch, n)| arch == a && *n > 0), "{a}");
        }
    }
}
