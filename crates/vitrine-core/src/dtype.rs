use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Storage type of activations and weights on a device.
///
/// Whatever the storage type, arithmetic is accumulated in fp32 and
/// normalisation / softmax statistics are fp32: half types only decide how
/// values are rounded between operations, as on a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision (max 65504).
    F16,
    /// bfloat16: fp32 range, 8 bits of mantissa.
    BF16,
}

impl DType {
    /// Every storage type, in the order the parity suite reports them.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The lower-case name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DType::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(Error::InvalidArgument(format!(
                "unknown dtype `{other}` (expected f32, f16 or bf16)"
            ))),
        }
    }
}
