use std::path::PathBuf;

/// Result alias used across vitrine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by whose fault it is so that callers
/// can tell bad input (recoverable, report and continue) from a broken device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed a value that cannot be used (bad shape, bad option).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Tensor shapes do not fit together.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The operation or tensor whose shape was wrong.
        op: String,
        /// What was expected and what was found.
        detail: String,
    },

    /// A checkpoint or config is missing something, or contradicts itself.
    #[error("bad checkpoint {path}: {detail}")]
    Checkpoint {
        /// File or directory that was being read.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// The config names a model this engine does not implement.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),

    /// A device was asked for that is not compiled in or not present.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),

    /// The backend does not implement an operation (never silently emulated).
    #[error("operation `{op}` is not supported by the {backend} backend")]
    NotSupported {
        /// The operation.
        op: &'static str,
        /// The backend that lacks it.
        backend: String,
    },

    /// The device reported an error while running an operation.
    #[error("backend error: {0}")]
    Backend(String),

    /// A device allocation failed while running. Recoverable: the encoder
    /// splits the batch in two halves and retries each once before failing
    /// with this error (naming the batch size it tried); a smaller batch may
    /// fit. GPU runtimes map their out-of-memory status here
    /// (`CUDA_ERROR_OUT_OF_MEMORY`, `hipErrorOutOfMemory`) with
    /// [`Error::out_of_memory`]. Distinct from the up-front refusal of a batch
    /// whose estimated activations exceed the encoder's limit, which is
    /// [`Error::InvalidArgument`].
    #[error("out of memory on {device}{}: {detail}", requested_text(*.requested))]
    OutOfMemory {
        /// The device, as its backend names it (`cpu`, `cuda:0`, `hip:0`).
        device: String,
        /// Bytes of the allocation that failed; 0 when unknown.
        requested: u64,
        /// What was being done, and the runtime's own message.
        detail: String,
    },

    /// Filesystem error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(op: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Shape {
            op: op.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::OutOfMemory`]: `requested` is the size in bytes
    /// of the allocation that failed (0 when unknown), `detail` what was being
    /// done and the runtime's message.
    pub fn out_of_memory(
        device: impl Into<String>,
        requested: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::OutOfMemory {
            device: device.into(),
            requested,
            detail: detail.into(),
        }
    }

    /// Whether this is [`Error::OutOfMemory`].
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::OutOfMemory { .. })
    }

    /// Shorthand for [`Error::Checkpoint`].
    pub fn checkpoint(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// ` (N bytes requested)` for a known allocation size, else nothing.
fn requested_text(requested: u64) -> String {
    if requested == 0 {
        String::new()
    } else {
        format!(" ({requested} bytes requested)")
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn out_of_memory_message() {
        let e = Error::out_of_memory("cuda:0", 1 << 30, "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY");
        assert!(e.is_out_of_memory());
        assert_eq!(
            e.to_string(),
            "out of memory on cuda:0 (1073741824 bytes requested): cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY"
        );
        let e = Error::out_of_memory("hip:1", 0, "hipMalloc: hipErrorOutOfMemory");
        assert_eq!(
            e.to_string(),
            "out of memory on hip:1: hipMalloc: hipErrorOutOfMemory"
        );
    }
}
