//! `--device auto`: the first usable backend, and why.

use crate::device::{probe, Device};

/// Picks CUDA if built in and a device answers, then HIP, else the CPU, and
/// says why. This is the only place where vitrine falls back to the CPU, and
/// only when asked to choose; an explicitly requested device that is
/// unavailable is an error ([`probe`]).
pub fn auto_device() -> (Device, String) {
    let mut notes = Vec::new();
    for (dev, feature) in [(Device::Cuda(0), "cuda"), (Device::Hip(0), "hip")] {
        let built = match dev {
            Device::Cuda(_) => cfg!(feature = "cuda"),
            Device::Hip(_) => cfg!(feature = "hip"),
            Device::Cpu => true,
        };
        if !built {
            notes.push(format!("no {feature} backend in this build"));
            continue;
        }
        match probe(dev) {
            Ok(()) => return (dev, format!("{dev} is built in and present")),
            Err(e) => notes.push(format!("{feature} is built in but unusable: {e}")),
        }
    }
    (
        Device::Cpu,
        format!("falling back to the CPU: {}", notes.join("; ")),
    )
}
