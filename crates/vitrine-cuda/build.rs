//! Compiles `kernels/*.cu` with the pinned nvcc (sm_80 + sm_90 SASS, compute_90
//! PTX fallback) through `scripts/compile-kernels.sh`, and writes a table that
//! embeds the fatbins, so a built binary needs no compiler at run time.

use std::env;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

const MODULES: [&str; 5] = ["norm", "elementwise", "resize", "patchify", "attention"];

fn main() {
    let crate_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let repo = crate_dir.join("../..");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", repo.join("kernels").display());
    println!(
        "cargo:rerun-if-changed={}",
        repo.join("scripts/compile-kernels.sh").display()
    );
    println!("cargo:rerun-if-env-changed=NVCC");

    let kernels = out.join("kernels");
    let status = Command::new("bash")
        .arg(repo.join("scripts/compile-kernels.sh"))
        .arg("cuda")
        .arg(&kernels)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "compiling kernels/*.cu for CUDA failed ({s}). Install the pinned toolchain with \
             scripts/install-cuda-toolchain.sh and `source .toolchains/cuda/env.sh`, or set NVCC."
        ),
        Err(e) => panic!("cannot run scripts/compile-kernels.sh: {e}"),
    }

    let mut table = String::from("/// Embedded fatbins, one per kernel module: (file stem, bytes).\npub static FATBINS: [(&str, &[u8]); 5] = [\n");
    for m in MODULES {
        let path = kernels.join("cuda").join(format!("{m}.fatbin"));
        assert!(path.is_file(), "{} was not produced", path.display());
        writeln!(
            table,
            "    ({m:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to String");
    }
    table.push_str("];\n");
    std::fs::write(out.join("fatbins.rs"), table).expect("write fatbins.rs");
}
