//! vitrine's HIP backend (AMD GPUs). Scaffolding: the backend is being built;
//! until then every device reports unavailable with that reason.
#![warn(missing_docs)]

use vitrine_core::{Error, Result};

/// Checks that HIP device `ordinal` can be used.
pub fn probe(ordinal: usize) -> Result<()> {
    Err(Error::DeviceUnavailable(format!(
        "hip:{ordinal}: the HIP backend is not implemented yet"
    )))
}
