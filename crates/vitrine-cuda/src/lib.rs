//! vitrine's CUDA backend (NVIDIA GPUs). Scaffolding: the backend is being
//! built; until then every device reports unavailable with that reason.
#![warn(missing_docs)]

use vitrine_core::{Error, Result};

/// Checks that CUDA device `ordinal` can be used.
pub fn probe(ordinal: usize) -> Result<()> {
    Err(Error::DeviceUnavailable(format!(
        "cuda:{ordinal}: the CUDA backend is not implemented yet"
    )))
}
