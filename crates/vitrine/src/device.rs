//! Device names as users write them, and the backends behind them.

use std::fmt;
use std::str::FromStr;

use vitrine_core::Error;

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend (always built).
    Cpu,
    /// NVIDIA GPU `N` (needs the `cuda` feature).
    Cuda(usize),
    /// AMD GPU `N` (needs the `hip` feature).
    Hip(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Hip(i) => write!(f, "hip:{i}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidArgument(format!(
                "unknown device `{s}` (expected cpu, cuda[:N] or hip[:N])"
            ))
        };
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => (k, i.parse::<usize>().map_err(|_| bad())?),
            None => (s, 0),
        };
        match kind {
            "cpu" if !s.contains(':') => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(index)),
            "hip" | "rocm" => Ok(Device::Hip(index)),
            _ => Err(bad()),
        }
    }
}

impl Device {
    /// The error for a device this build cannot drive: never a fallback.
    pub(crate) fn not_compiled(self) -> Error {
        let feature = match self {
            Device::Cpu => "",
            Device::Cuda(_) => "cuda",
            Device::Hip(_) => "hip",
        };
        Error::DeviceUnavailable(format!(
            "{self} was requested, but this build of vitrine has no {feature} backend; rebuild with `--features {feature}`"
        ))
    }
}

/// Checks that `device` is built in and present, without loading a model.
/// Suites use it to report absent backends, and to fail when a required one
/// is absent.
pub fn probe(device: Device) -> Result<(), Error> {
    match device {
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => vitrine_cuda::probe(i),
        #[cfg(feature = "hip")]
        Device::Hip(i) => vitrine_hip::probe(i),
        #[allow(unreachable_patterns)]
        other => Err(other.not_compiled()),
    }
}
