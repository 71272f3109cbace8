//! Builds the AMD code objects that the HIP backend embeds.
//!
//! The kernels are the same `kernels/*.cu` sources the CUDA backend uses,
//! compiled by `scripts/compile-kernels.sh hip` (clang-19, one code object v5
//! per gfx target, wave size checked in each object's metadata). Compiling
//! here rather than shipping binaries keeps the embedded objects in step with
//! the sources. Machines without the toolchain (an AMD runner using ROCm's
//! own compiler, a packaging step) can instead point
//! `VITRINE_HIP_KERNELS_DIR` at objects built beforehand by that script.
//!
//! The output is `$OUT_DIR/hip_kernels.rs`: the list of targets, the list of
//! module stems, and one `include_bytes!` per (module, target).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The targets we ship: CDNA2 (MI200), CDNA3 (MI300), RDNA3 (two dies),
/// RDNA4. Keep in step with `scripts/compile-kernels.sh`.
const ARCHS: [&str; 5] = ["gfx90a", "gfx942", "gfx1100", "gfx1101", "gfx1201"];

/// Stops the build with a message cargo shows verbatim.
fn fail(msg: &str) -> ! {
    eprintln!("\nvitrine-hip: {msg}\n");
    std::process::exit(1);
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let repo = manifest.join("../..");
    let kernels = repo.join("kernels");
    let script = repo.join("scripts/compile-kernels.sh");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());

    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", script.display());
    for var in [
        "VITRINE_HIP_KERNELS_DIR",
        "VT_HIP_CLANG",
        "VT_ROCM_INCLUDE",
        "VT_ROCM_DEVLIBS",
        "VT_HIP_READELF",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let stems = kernel_stems(&kernels);
    let objects = match env::var_os("VITRINE_HIP_KERNELS_DIR") {
        Some(dir) => {
            let dir = prebuilt_dir(Path::new(&dir));
            // Someone else's outputs: rebuild when they change.
            println!("cargo:rerun-if-changed={}", dir.display());
            dir
        }
        None => compile(&repo, &script, &out_dir.join("kernels")),
    };
    fs::write(out_dir.join("hip_kernels.rs"), table(&stems, &objects))
        .unwrap_or_else(|e| fail(&format!("cannot write the kernel table into OUT_DIR: {e}")));
}

/// The `.cu` file stems under `kernels/`, sorted.
fn kernel_stems(kernels: &Path) -> Vec<String> {
    let entries = fs::read_dir(kernels).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read {}: {e} (the HIP crate builds from the repository's kernels/)",
            kernels.display()
        ))
    });
    let mut stems: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    stems.sort();
    if stems.is_empty() {
        fail(&format!("no .cu files in {}", kernels.display()));
    }
    stems
}

/// `VITRINE_HIP_KERNELS_DIR` may name the script's OUTDIR (holding `hip/`)
/// or the `hip/` folder itself.
fn prebuilt_dir(dir: &Path) -> PathBuf {
    let hip = dir.join("hip");
    let dir = if hip.is_dir() { hip } else { dir.to_path_buf() };
    if !dir.is_dir() {
        fail(&format!(
            "VITRINE_HIP_KERNELS_DIR={} is not a directory (expected the OUTDIR of \
             scripts/compile-kernels.sh hip OUTDIR)",
            dir.display()
        ));
    }
    dir
}

/// Runs the compile script into `out` and returns the folder of objects.
fn compile(repo: &Path, script: &Path, out: &Path) -> PathBuf {
    let toolchain_env = repo.join(".toolchains/rocm/env.sh");
    println!("cargo:rerun-if-changed={}", toolchain_env.display());
    let from_env = ["VT_HIP_CLANG", "VT_ROCM_INCLUDE", "VT_ROCM_DEVLIBS"]
        .iter()
        .all(|v| env::var_os(v).is_some());
    if !from_env && !toolchain_env.is_file() {
        fail(&format!(
            "the HIP kernel toolchain is missing, so the AMD code objects cannot be built.\n\
             Install it (clang-19 + ROCm headers/bitcode, ~15 s, no ROCm needed):\n\
             \n    scripts/install-hip-toolchain.sh\n\n\
             or set VT_HIP_CLANG, VT_ROCM_INCLUDE and VT_ROCM_DEVLIBS to a ROCm \
             install's clang++, include/ and amdgcn/bitcode/,\n\
             or point VITRINE_HIP_KERNELS_DIR at the OUTDIR of an earlier \
             `scripts/compile-kernels.sh hip OUTDIR`.\n(looked for {})",
            toolchain_env.display()
        ));
    }
    let jobs = env::var("NUM_JOBS").unwrap_or_else(|_| "2".into());
    let output = Command::new("bash")
        .arg(script)
        .arg("hip")
        .arg(out)
        .env("VT_HIP_ARCHS", ARCHS.join(" "))
        .env("VT_JOBS", jobs)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run bash {}: {e}", script.display())));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        let hint = if log.contains("toolchain not found") || log.contains("no HIP clang") {
            "\nInstall the toolchain with scripts/install-hip-toolchain.sh."
        } else {
            ""
        };
        fail(&format!(
            "scripts/compile-kernels.sh hip failed ({}):\n{log}{hint}",
            output.status
        ));
    }
    // Visible with `cargo build -vv`; the size table is worth keeping.
    for line in log.lines() {
        println!("compile-kernels: {line}");
    }
    out.join("hip")
}

/// The generated Rust source: every (module, target) pair must exist.
fn table(stems: &[String], dir: &Path) -> String {
    let mut src = String::from("// Generated by vitrine-hip's build.rs. Do not edit.\n\n");
    let _ = writeln!(src, "/// Targets with an embedded code object.");
    let _ = writeln!(
        src,
        "pub(crate) const ARCHS: [&str; {}] = {ARCHS:?};",
        ARCHS.len()
    );
    let _ = writeln!(src, "/// Kernel source stems (`kernels/<stem>.cu`).");
    let _ = writeln!(
        src,
        "pub(crate) const STEMS: [&str; {}] = {stems:?};",
        stems.len()
    );
    let _ = writeln!(src, "/// (stem, target, code object).");
    let _ = writeln!(
        src,
        "pub(crate) static OBJECTS: [(&str, &str, &[u8]); {}] = [",
        stems.len() * ARCHS.len()
    );
    let mut missing = Vec::new();
    for stem in stems {
        for arch in ARCHS {
            let path = dir.join(format!("{stem}.{arch}.co"));
            match fs::metadata(&path) {
                Ok(m) if m.len() > 0 => {}
                _ => missing.push(path.display().to_string()),
            }
            // Absolute, so include_bytes! does not depend on where the
            // generated file is included from.
            let abs = fs::canonicalize(&path).unwrap_or(path);
            let _ = writeln!(
                src,
                "    ({stem:?}, {arch:?}, include_bytes!({:?})),",
                abs.display().to_string()
            );
        }
    }
    src.push_str("];\n");
    if !missing.is_empty() {
        fail(&format!(
            "missing or empty AMD code objects:\n  {}\n(rebuild them with \
             scripts/compile-kernels.sh hip OUTDIR)",
            missing.join("\n  ")
        ));
    }
    src
}
