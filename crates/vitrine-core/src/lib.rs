//! The contract between vitrine's model code and its devices.
//!
//! Model files (RADIO, InternViT) are written once against [`Backend`]; the CPU,
//! CUDA and HIP crates implement it. Everything a backend must agree on lives
//! here and nowhere else: element types ([`DType`]), the error type
//! ([`Error`]), host-side tensors used for upload and download
//! ([`HostTensor`]), and the packed variable-length sequence layout
//! ([`SeqLayout`]) that lets images of different sizes share one forward pass.
#![warn(missing_docs)]

mod backend;
pub mod checks;
mod dtype;
mod error;
mod host;
mod resize;
mod seq;

pub use backend::{Backend, MemoryStats, Replay, TensorInfo};
pub use dtype::DType;
pub use error::{Error, Result};
pub use host::{touched_vec, HostData, HostTensor};
pub use resize::{ResizeMode, ResizeSpec};
pub use seq::SeqLayout;
