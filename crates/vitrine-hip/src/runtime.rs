//! [`HipRuntime`]: the [`GpuRuntime`] of AMD GPUs. Everything an op needs
//! beyond this (launch geometry, argument lists, shape checks) lives once in
//! `vitrine-gpu`.

use std::ffi::c_int;

use vitrine_core::{Error, Result};
use vitrine_gpu::{DeviceBuffer, Gemm, GpuRuntime, KernelArg, KernelModule, Staging};

use crate::arch;
use crate::blas::Blas;
use crate::device::{self, DeviceInfo};
use crate::ffi::{self, HipApi, HipStream};
use crate::memory::{self, HipBuffer, PinnedHost};
use crate::module::Modules;

/// Our stream. Blocking (not `hipStreamNonBlocking`), so the synchronous
/// copies on the NULL stream are ordered after the work queued here.
struct Stream {
    api: &'static HipApi,
    raw: HipStream,
}

// SAFETY: a hipStream_t is a runtime-owned handle usable from any thread;
// HIP serialises submissions to one stream internally.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: created once by hipStreamCreate, destroyed once, after
        // everything that used it (rocBLAS handle, modules) was dropped.
        unsafe {
            let _ = (self.api.stream_destroy)(self.raw);
        }
    }
}

/// One AMD GPU: its kernels for the device's architecture, a stream and a
/// rocBLAS handle on that stream. All work is queued on the one stream, in
/// call order.
pub struct HipRuntime {
    api: &'static HipApi,
    ordinal: c_int,
    info: DeviceInfo,
    arch: &'static str,
    wave: usize,
    // Field order is drop order: the handle and the modules go before the
    // stream they use.
    blas: Blas,
    modules: Modules,
    stream: Stream,
    /// The pinned buffer large copies pass through (vitrine-gpu's staging).
    staging: Staging<PinnedHost>,
}

/// Names the device in an error that does not yet say which one it is
/// about; the suites check that an unavailable device's message names it.
fn on_device(ordinal: usize, e: Error) -> Error {
    match e {
        Error::DeviceUnavailable(m) => Error::DeviceUnavailable(format!("hip:{ordinal}: {m}")),
        Error::Backend(m) if !m.starts_with("hip:") => {
            Error::Backend(format!("hip:{ordinal}: {m}"))
        }
        other => other,
    }
}

impl HipRuntime {
    fn open_inner(ordinal: usize) -> Result<Self> {
        let api = ffi::hip_api()?;
        let count = device::count(api)?;
        if ordinal >= count {
            return Err(Error::DeviceUnavailable(match count {
                0 => format!(
                    "the HIP runtime {} found no AMD GPU (0 devices; HIP_VISIBLE_DEVICES={})",
                    api.path,
                    std::env::var("HIP_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
                ),
                n => format!(
                    "the HIP runtime {} found {n} AMD GPU{} (ordinals 0..{})",
                    api.path,
                    if n == 1 { "" } else { "s" },
                    n - 1
                ),
            }));
        }
        let dev = c_int::try_from(ordinal)
            .map_err(|_| Error::InvalidArgument(format!("device ordinal {ordinal} too large")))?;
        // SAFETY: plain call with an ordinal below the device count.
        api.check("hipSetDevice", unsafe { (api.set_device)(dev) })?;

        let info = device::query(api, dev)?;
        let arch = arch::select(&info.gcn_arch_name).map_err(|e| match e {
            Error::DeviceUnavailable(m) => {
                Error::DeviceUnavailable(format!("{} ({}): {m}", info.name, info.gcn_arch_name))
            }
            other => other,
        })?;
        let wave = arch::wave_size(arch);
        if info.warp_size != wave {
            return Err(Error::Backend(format!(
                "{} ({}) reports {}-wide wavefronts, but the {arch} kernels were compiled for {wave}",
                info.name, info.gcn_arch_name, info.warp_size
            )));
        }

        let mut raw: HipStream = std::ptr::null_mut();
        // SAFETY: writes one stream handle through a valid out-pointer.
        api.check("hipStreamCreate", unsafe { (api.stream_create)(&mut raw) })?;
        let stream = Stream { api, raw };
        let modules = Modules::load(api, arch)?;
        let blas = Blas::new(ffi::blas_api(api)?, stream.raw)?;
        Ok(Self {
            api,
            ordinal: dev,
            info,
            arch,
            wave,
            blas,
            modules,
            stream,
            staging: Staging::default(),
        })
    }

    /// The compiled target this device runs (like `gfx942`).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// Device memory in bytes.
    pub fn total_memory(&self) -> usize {
        self.info.total_mem
    }

    /// Where the HIP runtime and rocBLAS libraries were loaded from.
    pub fn libraries(&self) -> (&str, &str) {
        (&self.api.path, self.blas.library())
    }

    /// The HIP runtime's version, like `7.0.51831`.
    pub fn runtime_version(&self) -> Result<String> {
        let mut v: c_int = 0;
        // SAFETY: writes one int through a valid pointer.
        let code = unsafe { (self.api.runtime_get_version)(&mut v) };
        self.api.check("hipRuntimeGetVersion", code)?;
        // HIP_VERSION = major * 10^7 + minor * 10^5 + patch.
        Ok(format!(
            "{}.{}.{}",
            v / 10_000_000,
            v / 100_000 % 100,
            v % 100_000
        ))
    }

    /// Makes our device current on the calling thread: HIP's current device
    /// is per thread, and the backend may be called from several.
    fn bind(&self) -> Result<()> {
        // SAFETY: plain call with an ordinal that opened successfully.
        self.api.check("hipSetDevice", unsafe {
            (self.api.set_device)(self.ordinal)
        })
    }

    fn sync(&self, why: &str) -> Result<()> {
        // SAFETY: our stream is live until drop.
        let code = unsafe { (self.api.stream_synchronize)(self.stream.raw) };
        self.api.check(why, code)
    }
}

impl Drop for HipRuntime {
    fn drop(&mut self) {
        // Let queued kernels finish before the fields (rocBLAS handle,
        // modules, stream) are released. Errors cannot be reported here.
        let _ = self.bind();
        let _ = self.sync("hipStreamSynchronize");
    }
}

impl GpuRuntime for HipRuntime {
    type Buffer = HipBuffer;

    fn open(ordinal: usize) -> Result<Self> {
        Self::open_inner(ordinal).map_err(|e| on_device(ordinal, e))
    }

    fn name(&self) -> String {
        format!("hip:{} ({}, {})", self.ordinal, self.info.name, self.arch)
    }

    fn warp_size(&self) -> usize {
        self.wave
    }

    fn multiprocessors(&self) -> usize {
        self.info.multiprocessors
    }

    fn alloc(&self, bytes: usize) -> Result<HipBuffer> {
        self.bind()?;
        memory::alloc(self.api, self.ordinal, bytes)
    }

    fn copy_to_device(&self, dst: &HipBuffer, src: &[u8]) -> Result<()> {
        self.bind()?;
        memory::check_fits(dst, src.len())?;
        let api = self.api;
        let staged = self.staging.upload(
            || Ok(PinnedHost::new(api)),
            dst.device_ptr(),
            src,
            |at, chunk| memory::copy_to_device(api, at, chunk),
        )?;
        if staged {
            return Ok(());
        }
        memory::copy_to_device(api, dst.device_ptr(), src)
    }

    fn copy_to_host(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        // Explicit, so that a failed kernel is reported as such and not as a
        // failed copy.
        self.sync("hipStreamSynchronize (queued work before a copy to the host)")?;
        let api = self.api;
        let staged = self.staging.download(
            || Ok(PinnedHost::new(api)),
            src,
            dst,
            |chunk, at| memory::copy_to_host(api, at, chunk),
        )?;
        if staged {
            return Ok(());
        }
        memory::copy_to_host(api, src, dst)
    }

    fn launch(
        &self,
        module: KernelModule,
        name: &str,
        grid: u32,
        block: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        if grid == 0
            || block == 0
            || block > 1024
            || (block as usize).checked_rem(self.wave) != Some(0)
        {
            return Err(Error::InvalidArgument(format!(
                "{name}: launch of grid {grid} x block {block}; blocks must be a multiple of {} \
                 up to 1024 and the grid non-empty",
                self.wave
            )));
        }
        self.bind()?;
        let f = self.modules.function(module, name)?;
        let mut params = KernelArg::pointers(args);
        // SAFETY: `f` belongs to a module loaded on this device; `params`
        // holds one pointer per kernel argument, each pointing into `args`,
        // which outlives this call (HIP copies argument values at launch);
        // the kernels' signatures are the contract of kernels/README.md that
        // vitrine-gpu builds `args` from.
        let code = unsafe {
            (self.api.module_launch_kernel)(
                f.0,
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                self.stream.raw,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.api.check(
            &format!("hipModuleLaunchKernel({name}, grid {grid}, block {block})"),
            code,
        )
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        self.blas.gemm(g)
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.sync("hipStreamSynchronize")
    }
}
