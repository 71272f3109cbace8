//! The embedded AMD code objects and the choice among them.
//!
//! An AMD code object runs on exactly the ISA it was compiled for, so the
//! device's `gcnArchName` (like `gfx90a:sramecc+:xnack-`) picks one object
//! per kernel module, and a device we did not compile for is refused with the
//! list of what this build holds rather than failing later inside a launch.

use vitrine_core::{Error, Result};
use vitrine_gpu::KernelModule;

mod table {
    include!(concat!(env!("OUT_DIR"), "/hip_kernels.rs"));
}

pub(crate) use table::ARCHS;

/// The base processor of a `gcnArchName`: the target features after the
/// first `:` (`sramecc+`, `xnack-`) do not change which object loads, since
/// ours are compiled feature-agnostic ("any").
pub(crate) fn base_arch(gcn_arch_name: &str) -> Result<&str> {
    let base = gcn_arch_name.split(':').next().unwrap_or("").trim();
    let valid = base.len() > 3
        && base.starts_with("gfx")
        && base[3..].bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(base)
    } else {
        Err(Error::Backend(format!(
            "the HIP runtime reported an unreadable GPU architecture `{}`",
            gcn_arch_name.escape_debug()
        )))
    }
}

/// The compiled target for a device's `gcnArchName`, or an error that lists
/// the targets this build holds.
pub(crate) fn select(gcn_arch_name: &str) -> Result<&'static str> {
    let base = base_arch(gcn_arch_name)?;
    ARCHS.iter().copied().find(|a| *a == base).ok_or_else(|| {
        Error::DeviceUnavailable(format!(
            "no kernels for {base}: this build of vitrine holds AMD code objects for {} only",
            ARCHS.join(", ")
        ))
    })
}

/// Wave size the objects for `arch` were compiled for: 64 on CDNA / GCN
/// (gfx9 and older), 32 on RDNA (gfx10 and newer). Block sizes must be
/// multiples of it.
pub(crate) fn wave_size(arch: &str) -> usize {
    if arch.starts_with("gfx9") || arch.starts_with("gfx8") {
        64
    } else {
        32
    }
}

/// The code object of `module` for `arch`.
pub(crate) fn object(module: KernelModule, arch: &str) -> Result<&'static [u8]> {
    table::OBJECTS
        .iter()
        .find(|(stem, a, _)| *stem == module.stem() && *a == arch)
        .map(|(_, _, bytes)| *bytes)
        .ok_or_else(|| {
            Error::Backend(format!(
                "no embedded code object {}.{arch}.co (embedded modules: {})",
                module.stem(),
                table::STEMS.join(", ")
            ))
        })
}

/// `(stem, arch, size in bytes)` of every embedded object, for reports.
pub fn embedded_objects() -> Vec<(&'static str, &'static str, usize)> {
    table::OBJECTS
        .iter()
        .map(|(s, a, b)| (*s, *a, b.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EM_AMDGPU: u16 = 224;
    const ELFOSABI_AMDGPU_HSA: u8 = 64;
    /// `EI_ABIVERSION` of code object v5.
    const ABI_COV5: u8 = 3;

    /// `EF_AMDGPU_MACH` (low byte of `e_flags`) per target, from LLVM's
    /// AMDGPUUsage table.
    fn mach(arch: &str) -> u32 {
        match arch {
            "gfx90a" => 0x3f,
            "gfx942" => 0x4c,
            "gfx1100" => 0x41,
            "gfx1101" => 0x46,
            "gfx1201" => 0x4e,
            other => panic!("add {other} to the EF_AMDGPU_MACH table"),
        }
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// Every `.wavefront_size` value in the msgpack metadata note: the key is
    /// a 15-byte fixstr (0xaf) followed by a positive fixint.
    fn wavefront_sizes(obj: &[u8]) -> Vec<u8> {
        let key = b"\xaf.wavefront_size";
        obj.windows(key.len() + 1)
            .filter(|w| &w[..key.len()] == key)
            .map(|w| w[key.len()])
            .collect()
    }

    #[test]
    fn every_module_and_target_is_embedded_as_an_amdgpu_elf() {
        for module in KernelModule::ALL {
            for arch in ARCHS {
                let obj = object(module, arch).expect("embedded");
                let what = format!("{}.{arch}.co", module.stem());
                assert!(obj.len() > 1024, "{what}: only {} bytes", obj.len());
                assert_eq!(&obj[..4], b"\x7fELF", "{what}: not an ELF file");
                assert_eq!(obj[4], 2, "{what}: not ELF64");
                assert_eq!(obj[7], ELFOSABI_AMDGPU_HSA, "{what}: OS ABI");
                assert_eq!(obj[8], ABI_COV5, "{what}: not code object v5");
                assert_eq!(u16_at(obj, 18), EM_AMDGPU, "{what}: machine");
                assert_eq!(
                    u32_at(obj, 48) & 0xff,
                    mach(arch),
                    "{what}: built for another gfx"
                );
            }
        }
    }

    #[test]
    fn wave_sizes_agree_with_the_code_objects() {
        for arch in ARCHS {
            let want = if arch.starts_with("gfx9") { 64 } else { 32 };
            assert_eq!(wave_size(arch), want, "{arch}");
            for module in KernelModule::ALL {
                let sizes = wavefront_sizes(object(module, arch).expect("embedded"));
                assert!(
                    !sizes.is_empty(),
                    "{}.{arch}: no .wavefront_size",
                    module.stem()
                );
                assert!(
                    sizes.iter().all(|&s| usize::from(s) == want),
                    "{}.{arch}: wavefront sizes {sizes:?}, table says {want}",
                    module.stem()
                );
            }
        }
    }

    #[test]
    fn the_five_shipped_targets_are_built() {
        assert_eq!(ARCHS, ["gfx90a", "gfx942", "gfx1100", "gfx1101", "gfx1201"]);
    }

    #[test]
    fn target_features_are_stripped() {
        assert_eq!(base_arch("gfx90a:sramecc+:xnack-").ok(), Some("gfx90a"));
        assert_eq!(base_arch("gfx942:sramecc+:xnack-").ok(), Some("gfx942"));
        assert_eq!(base_arch("gfx1100").ok(), Some("gfx1100"));
        assert_eq!(select("gfx90a:sramecc+:xnack-").ok(), Some("gfx90a"));
        assert_eq!(select("gfx1201").ok(), Some("gfx1201"));
    }

    #[test]
    fn an_unknown_target_lists_the_compiled_ones() {
        let e = select("gfx1030").expect_err("gfx1030 is not built");
        let msg = e.to_string();
        assert!(matches!(e, Error::DeviceUnavailable(_)), "{msg}");
        assert!(msg.contains("gfx1030"), "{msg}");
        for a in ARCHS {
            assert!(msg.contains(a), "{msg} should list {a}");
        }
    }

    #[test]
    fn garbage_arch_names_are_errors() {
        for bad in ["", ":xnack-", "sm_90", "gfx", "gfx9 0a", "gfx90a\u{0}x"] {
            assert!(base_arch(bad).is_err(), "{bad:?} accepted");
        }
    }
}
