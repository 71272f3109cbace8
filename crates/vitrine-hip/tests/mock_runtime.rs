//! The HIP runtime layer against a stand-in ROCm (tests/mock/hip_mock.c),
//! since no AMD GPU is available to CI.
//!
//! The mock keeps "device" memory on the host, so copies and GEMMs really
//! run. Kernels are looked up by name in the real embedded code objects and
//! launches are validated (grid, block multiple of the wave size), but they
//! do not execute. This covers everything `vitrine-hip` itself decides:
//! - library loading;
//! - device count / ordinal / architecture / wave-size errors;
//! - property reading;
//! - module loading per architecture;
//! - that every kernel `vitrine-gpu` launches exists in every target's objects;
//! - the `rocblas_gemm_ex` argument order, modes and f32 compute.
//!
//! One test function, because the libraries are loaded once per process and
//! the mock is steered through environment variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use vitrine_core::{Backend, DType, Error, HostTensor, ResizeMode, ResizeSpec, SeqLayout};
use vitrine_gpu::GpuRuntime;
use vitrine_hip::{compiled_archs, probe, HipBackend};

/// Compiles the mock twice (HIP runtime, rocBLAS) into `dir`.
fn build_mocks(dir: &Path) -> (PathBuf, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mock/hip_mock.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut out = Vec::new();
    for (define, file) in [
        ("MOCK_HIP", "libamdhip64.so.7"),
        ("MOCK_ROCBLAS", "librocblas.so.5"),
    ] {
        let lib = dir.join(file);
        let status = Command::new(&cc)
            .args(["-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"])
            .arg(format!("-D{define}"))
            .arg(&src)
            .arg("-o")
            .arg(&lib)
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` (set CC): {e}"));
        assert!(status.success(), "{cc} failed on {}", src.display());
        out.push(lib);
    }
    (out[0].clone(), out[1].clone())
}

fn set(var: &str, value: impl AsRef<std::ffi::OsStr>) {
    // Single-threaded: this file holds one test.
    std::env::set_var(var, value);
}

fn unavailable(ordinal: usize) -> String {
    match probe(ordinal) {
        Ok(()) => panic!("hip:{ordinal} opened, expected an error"),
        Err(e @ Error::DeviceUnavailable(_)) => e.to_string(),
        Err(e) => panic!("expected DeviceUnavailable, got {e}"),
    }
}

fn upload(
    be: &HipBackend,
    dims: &[usize],
    values: &[f32],
    dtype: DType,
) -> <HipBackend as Backend>::Tensor {
    let host = HostTensor::from_f32(dims.to_vec(), values.to_vec()).expect("host tensor");
    be.upload(&host, dtype).expect("upload")
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
        })
        .collect()
}

/// `x · wᵀ` through rocblas_gemm_ex, against a host reference on the
/// dtype-rounded inputs.
fn check_linear(be: &HipBackend, dtype: DType) {
    let (n, k, m) = (5, 7, 3);
    let round = |v: Vec<f32>| {
        HostTensor::from_f32_as(vec![v.len()], &v, dtype)
            .expect("round")
            .to_f32_vec()
    };
    let x = round(values(n * k, 1));
    let w = round(values(m * k, 2));
    let y = be
        .linear(
            &upload(be, &[n, k], &x, dtype),
            &upload(be, &[m, k], &w, dtype),
            None,
        )
        .and_then(|t| be.download(&t))
        .unwrap_or_else(|e| panic!("linear {dtype}: {e}"));
    assert_eq!(y.shape(), [n, m]);
    assert_eq!(y.dtype(), dtype);
    let got = y.to_f32_vec();
    let tol = match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
    };
    for i in 0..n {
        for j in 0..m {
            let want: f64 = (0..k)
                .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                .sum();
            let g = got[i * m + j] as f64;
            assert!(
                (g - want).abs() <= tol * want.abs().max(1.0),
                "linear {dtype} [{i},{j}]: {g} vs {want}"
            );
        }
    }
}

/// Calls every op once; kernels do not run under the mock, so only the
/// launch path (name lookup, geometry, arguments) is exercised.
fn every_op(be: &HipBackend, dtype: DType) -> Result<(), Error> {
    let (rows, width, heads) = (6, 64, 2);
    let x = upload(be, &[rows, width], &values(rows * width, 3), dtype);
    let w = upload(be, &[width], &values(width, 4), dtype);
    let b = upload(be, &[width], &values(width, 5), dtype);
    be.linear(
        &x,
        &upload(be, &[width, width], &values(width * width, 6), dtype),
        Some(&b),
    )?;
    be.layer_norm(&x, &w, &b, 1e-6)?;
    be.rms_norm(&x, &w, 1e-6)?;
    be.gelu(&x)?;
    be.residual(&x, &x, Some(&w))?;
    be.residual(&x, &x, None)?;
    let seqs = SeqLayout::from_lengths(&[2, 4])?;
    be.attention(&x, &x, &x, &seqs, heads, 0.125)?;
    for mode in [ResizeMode::Bilinear, ResizeMode::Bicubic] {
        for align in [false, true] {
            let grid = upload(be, &[16, 3], &values(48, 7), dtype);
            be.resize(&grid, &ResizeSpec::full(mode, align, (4, 4), (5, 6)))?;
        }
    }
    let px = upload(be, &[1, 3, 8, 8], &values(192, 8), dtype);
    be.patchify(&px, 4, None)?;
    be.patchify(&px, 4, Some(([0.5; 3], [0.25; 3])))?;
    be.concat_rows(&[&x, &x])?;
    be.slice_rows(&x, 1, 3)?;
    be.slice_cols(&x, 8, 16)?;
    for to in DType::ALL {
        be.cast(&x, to)?;
    }
    be.synchronize()
}

#[test]
fn the_runtime_layer_works_against_a_mock_rocm() {
    let dir = std::env::temp_dir().join(format!("vitrine-hip-mock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (hip, blas) = build_mocks(&dir);
    let log = dir.join("launches.log");
    set("VITRINE_HIP_LIBRARY", &hip);
    set("VITRINE_ROCBLAS_LIBRARY", &blas);
    set("VITRINE_MOCK_LOG", &log);

    // Device count and ordinals.
    set("VITRINE_MOCK_DEVICES", "0");
    let m = unavailable(0);
    assert!(m.contains("hip:0") && m.contains("found no AMD GPU"), "{m}");
    set("VITRINE_MOCK_DEVICES", "2");
    let m = unavailable(5);
    assert!(
        m.contains("hip:5") && m.contains("found 2 AMD GPUs (ordinals 0..1)"),
        "{m}"
    );
    set("VITRINE_MOCK_DEVICES", "1");

    // An architecture we do not compile for.
    set("VITRINE_MOCK_ARCH", "gfx1030");
    let m = unavailable(0);
    assert!(m.contains("Mock Instinct 0 (gfx1030)"), "{m}");
    for a in compiled_archs() {
        assert!(m.contains(a), "{m} should list {a}");
    }

    // A device whose wave size contradicts the code objects.
    set("VITRINE_MOCK_ARCH", "gfx942:sramecc+:xnack-");
    set("VITRINE_MOCK_WARP", "32");
    match probe(0) {
        Err(Error::Backend(m)) => assert!(m.contains("32-wide") && m.contains("64"), "{m}"),
        other => panic!("wave-size mismatch not caught: {other:?}"),
    }
    std::env::remove_var("VITRINE_MOCK_WARP");

    // Every target: open, name, wave size, GEMMs, every kernel found.
    for arch in compiled_archs() {
        let gcn = match *arch {
            "gfx90a" | "gfx942" => format!("{arch}:sramecc+:xnack-"),
            other => other.to_string(),
        };
        set("VITRINE_MOCK_ARCH", &gcn);
        let _ = std::fs::remove_file(&log);
        let be = HipBackend::new(0).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let rt = be.runtime();
        assert_eq!(rt.arch(), *arch);
        assert_eq!(rt.name(), format!("hip:0 (Mock Instinct 0, {arch})"));
        let want_wave = if arch.starts_with("gfx9") { 64 } else { 32 };
        assert_eq!(rt.warp_size(), want_wave, "{arch}");
        assert_eq!(rt.total_memory(), 64 << 30);
        assert_eq!(rt.runtime_version().expect("version"), "7.0.51831");
        assert_eq!(
            rt.libraries(),
            (hip.to_str().unwrap_or(""), blas.to_str().unwrap_or(""))
        );
        for dtype in DType::ALL {
            check_linear(&be, dtype);
            every_op(&be, dtype).unwrap_or_else(|e| panic!("{arch} {dtype}: {e}"));
        }
        let launches = std::fs::read_to_string(&log).unwrap_or_default();
        let names: std::collections::BTreeSet<&str> = launches
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(
            names.len() >= 20,
            "{arch}: only {} distinct kernels launched: {names:?}",
            names.len()
        );
        assert!(names.iter().all(|n| n.starts_with("vt_")), "{names:?}");
        println!(
            "{arch}: {} launches of {} distinct kernels, all found",
            launches.lines().count(),
            names.len()
        );
    }

    // Out of memory is the recoverable OutOfMemory error (the encoder splits
    // the batch on it), naming the device, the request and what was free.
    set("VITRINE_MOCK_ARCH", "gfx1100");
    let be = HipBackend::new(0).expect("open");
    set("VITRINE_MOCK_MEM", "1000");
    let host = HostTensor::from_f32(vec![1024], vec![0.0; 1024]).expect("host");
    match be.upload(&host, DType::F32) {
        Err(Error::OutOfMemory {
            device,
            requested,
            detail,
        }) => {
            assert_eq!(device, "hip:0");
            assert_eq!(requested, 4096);
            assert!(detail.contains("free of"), "{detail}");
        }
        Ok(_) => panic!("a 4 KiB upload fit into 1000 bytes"),
        Err(e) => panic!("expected Error::OutOfMemory, got {e}"),
    }
    std::env::remove_var("VITRINE_MOCK_MEM");
    drop(be);

    // Large copies go through the pinned staging buffer in chunks (a round
    // trip of 2 chunks and a bit), and come back the same without pinned
    // memory; small ones go straight.
    for pinned in [true, false] {
        if !pinned {
            set("VITRINE_MOCK_NO_PINNED", "1");
        }
        let be = HipBackend::new(0).expect("open");
        for n in [1000, (2 * vitrine_gpu::STAGING_BYTES + 12_345) / 4] {
            let v = values(n, 7);
            let host = HostTensor::from_f32(vec![n], v.clone()).expect("host");
            let t = be.upload(&host, DType::F32).expect("upload");
            assert_eq!(
                be.download(&t).expect("download").to_f32_vec(),
                v,
                "n {n}, pinned {pinned}"
            );
        }
    }
    std::env::remove_var("VITRINE_MOCK_NO_PINNED");
    let _ = std::fs::remove_dir_all(&dir);
}
