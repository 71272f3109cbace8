//! vitrine: ViT image encoders (NVIDIA RADIO, OpenGVLab InternViT) that give
//! the same answer on every platform.
//!
//! Load a model directory with [`Encoder::from_dir`], run pixels through
//! [`Encoder::forward_pixels`]. Model code is written once, generic over
//! [`vitrine_core::Backend`]; the CPU backend is always built, CUDA and HIP are
//! cargo features. A device that is not built in or not present is an error,
//! never a silent fallback.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
mod device;
mod encoder;
pub mod io;
pub mod models;
pub mod weights;

pub use device::{probe, Device};

/// The backend crates built into this build, for direct use of the ops.
pub mod backends {
    pub use vitrine_cpu as cpu;
    #[cfg(feature = "cuda")]
    pub use vitrine_cuda as cuda;
    #[cfg(feature = "hip")]
    pub use vitrine_hip as hip;
}
pub use encoder::{Embedding, Encoder, LoadReport};
pub use vitrine_core::{DType, Error, HostTensor, Result};
