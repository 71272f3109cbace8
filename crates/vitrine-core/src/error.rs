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

    /// Shorthand for [`Error::Checkpoint`].
    pub fn checkpoint(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
