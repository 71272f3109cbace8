//! Kernel modules: one embedded code object per `kernels/*.cu` file, loaded
//! with `hipModuleLoadData` when the device opens, and kernel functions
//! looked up by name once and then cached.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Mutex;

use vitrine_core::{Error, Result};
use vitrine_gpu::KernelModule;

use crate::arch;
use crate::ffi::{HipApi, HipFunction, HipModule};

/// A kernel function handle. It stays valid while its module is loaded,
/// which is as long as the [`Modules`] that handed it out.
#[derive(Clone, Copy)]
pub(crate) struct Function(pub(crate) HipFunction);

// SAFETY: a hipFunction_t is an immutable handle into a loaded module; HIP
// allows launching it from any thread.
unsafe impl Send for Function {}
// SAFETY: as above; nothing is mutated through it.
unsafe impl Sync for Function {}

struct Loaded(HipModule);

// SAFETY: a hipModule_t is a handle owned by the HIP runtime, which is
// thread-safe; we only read through it (hipModuleGetFunction) and unload it
// once, in drop.
unsafe impl Send for Loaded {}
// SAFETY: as above.
unsafe impl Sync for Loaded {}

/// Every kernel module of one device, and the functions found so far.
pub(crate) struct Modules {
    api: &'static HipApi,
    arch: &'static str,
    loaded: Vec<(KernelModule, Loaded)>,
    functions: Mutex<HashMap<KernelModule, HashMap<String, Function>>>,
}

impl Modules {
    /// Loads every module's object for `arch` on the current device.
    pub(crate) fn load(api: &'static HipApi, arch: &'static str) -> Result<Self> {
        let mut me = Self {
            api,
            arch,
            loaded: Vec::new(),
            functions: Mutex::new(HashMap::new()),
        };
        for module in KernelModule::ALL {
            let image = arch::object(module, arch)?;
            let mut m: HipModule = std::ptr::null_mut();
            // SAFETY: `image` is a complete AMDGPU ELF (checked by the crate's
            // tests) that lives for the whole program (include_bytes!); the
            // runtime copies what it needs.
            let code = unsafe { (api.module_load_data)(&mut m, image.as_ptr().cast::<c_void>()) };
            api.check(
                &format!("hipModuleLoadData({}.{arch}.co)", module.stem()),
                code,
            )?;
            // Pushed at once so that drop unloads it if a later one fails.
            me.loaded.push((module, Loaded(m)));
        }
        Ok(me)
    }

    /// The function `name` of `module`, looked up on first use.
    pub(crate) fn function(&self, module: KernelModule, name: &str) -> Result<Function> {
        let mut cache = self
            .functions
            .lock()
            .map_err(|_| Error::Backend("HIP function cache poisoned".into()))?;
        let per_module = cache.entry(module).or_default();
        if let Some(f) = per_module.get(name) {
            return Ok(*f);
        }
        let handle = self
            .loaded
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, l)| l.0)
            .ok_or_else(|| Error::Backend(format!("module {} is not loaded", module.stem())))?;
        let c_name = CString::new(name)
            .map_err(|_| Error::InvalidArgument(format!("kernel name {name:?} contains NUL")))?;
        let mut f: HipFunction = std::ptr::null_mut();
        // SAFETY: `handle` is a loaded module, `c_name` a NUL-terminated
        // string, and `f` a valid out-pointer.
        let code = unsafe { (self.api.module_get_function)(&mut f, handle, c_name.as_ptr()) };
        self.api.check(
            &format!(
                "hipModuleGetFunction({name} in {}.{}.co)",
                module.stem(),
                self.arch
            ),
            code,
        )?;
        let f = Function(f);
        per_module.insert(name.to_string(), f);
        Ok(f)
    }
}

impl Drop for Modules {
    fn drop(&mut self) {
        for (_, m) in self.loaded.drain(..) {
            // SAFETY: each module was loaded once and is unloaded once, after
            // the owning runtime synchronised its stream (no kernel of it is
            // still running); the Function copies die with us.
            unsafe {
                let _ = (self.api.module_unload)(m.0);
            }
        }
    }
}
