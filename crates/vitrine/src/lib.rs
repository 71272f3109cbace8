//! vitrine: ViT image encoders (NVIDIA RADIO, OpenGVLab InternViT) that give
//! the same answer on every platform.
//!
//! Load a model directory with [`Encoder::from_dir`], run pixels through
//! [`Encoder::forward_pixels`]. Or, for real use, load by hub id or path with
//! [`Encoder::from_pretrained`] and embed image files with
//! [`Encoder::encode_images`]:
//!
//! ```
//! use vitrine::{DType, Device, Encoder};
//!
//! let enc = Encoder::from_pretrained("../../tests/fixtures/models/radio_v4", Device::Cpu, DType::F32)?;
//! for (path, r) in ["../../assets/images/photo.jpg"].iter().zip(enc.encode_images(["../../assets/images/photo.jpg"])) {
//!     let e = r?;
//!     println!("{path}: summary {:?}, features {:?}", enc.summary_of(&e).shape(), enc.features_of(&e).shape());
//! }
//! # Ok::<(), vitrine::Error>(())
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`hub`] | hub ids and the local hub cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_TOKEN`) |
//! | [`images`] | bounded JPEG/PNG/WebP decoding, EXIF orientation, RGB |
//! | [`preprocess`] | resize + rescale + normalise, bit-exact with the HF processors |
//! | [`output`] | safetensors / npy / npz / JSON Lines embedding files |
//!
//! Model code is written once, generic over
//! [`vitrine_core::Backend`]; the CPU backend is always built, CUDA and HIP are
//! cargo features. A device that is not built in or not present is an error,
//! never a silent fallback.
#![warn(missing_docs)]

mod auto_device;
pub mod checkpoint;
pub mod config;
mod device;
mod encoder;
pub mod hub;
pub mod images;
pub mod io;
pub mod models;
pub mod numerics;
pub mod output;
mod pipeline;
pub mod preprocess;
mod replay;
pub mod weights;

pub use auto_device::auto_device;
pub use device::{probe, Device};
pub use hub::HubOptions;
pub use images::{DecodeLimits, RgbImage};
pub use pipeline::{BatchPlan, Batching, EncodeOptions, ImageSource};
pub use preprocess::PreprocessConfig;

/// The backend crates built into this build, for direct use of the ops.
pub mod backends {
    pub use vitrine_cpu as cpu;
    #[cfg(feature = "cuda")]
    pub use vitrine_cuda as cuda;
    #[cfg(feature = "hip")]
    pub use vitrine_hip as hip;
}
pub use encoder::{DeviceTiming, Embedding, Encoder, LoadReport, OverflowPolicy, OverflowRetry};
pub use vitrine_core::{DType, Error, HostTensor, Result};
