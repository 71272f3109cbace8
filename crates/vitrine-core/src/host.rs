use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::{DType, Error, Result};

/// Element storage of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// fp32 values.
    F32(Vec<f32>),
    /// fp16 values.
    F16(Vec<f16>),
    /// bf16 values.
    BF16(Vec<bf16>),
}

/// A dense row-major tensor in host memory: what goes into a device and what
/// comes back out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: HostData,
}

impl HostTensor {
    /// Wraps data with a shape; fails if the element count disagrees.
    pub fn new(shape: Vec<usize>, data: HostData) -> Result<Self> {
        let numel: usize = shape.iter().product();
        let len = match &data {
            HostData::F32(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::BF16(v) => v.len(),
        };
        if numel != len {
            return Err(Error::shape(
                "HostTensor::new",
                format!("shape {shape:?} holds {numel} elements, data has {len}"),
            ));
        }
        Ok(Self { shape, data })
    }

    /// An fp32 tensor.
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        Self::new(shape, HostData::F32(values))
    }

    /// Rounds fp32 values to `dtype` (round to nearest even), as a device
    /// would when it stores a result in that type.
    pub fn from_f32_as(shape: Vec<usize>, values: &[f32], dtype: DType) -> Result<Self> {
        let data = match dtype {
            DType::F32 => HostData::F32(values.to_vec()),
            // Slice conversions: the same round-to-nearest-even as the
            // scalar ones, vectorised (F16C on x86) where the CPU has it.
            DType::F16 => {
                let mut out = vec![f16::ZERO; values.len()];
                out.convert_from_f32_slice(values);
                HostData::F16(out)
            }
            DType::BF16 => {
                let mut out = vec![bf16::ZERO; values.len()];
                out.convert_from_f32_slice(values);
                HostData::BF16(out)
            }
        };
        Self::new(shape, data)
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Storage type.
    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
        }
    }

    /// The raw storage.
    pub fn data(&self) -> &HostData {
        &self.data
    }

    /// Values widened to fp32 (exact for every storage type).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::F16(v) => v.to_f32_vec(),
            HostData::BF16(v) => v.to_f32_vec(),
        }
    }

    /// The same values stored as `dtype` (rounding when narrowing).
    pub fn to_dtype(&self, dtype: DType) -> HostTensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let values = self.to_f32_vec();
        if dtype == DType::F32 {
            return Self {
                shape: self.shape.clone(),
                data: HostData::F32(values),
            };
        }
        Self::from_f32_as(self.shape.clone(), &values, dtype)
            .expect("element count is unchanged by a cast")
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, self.data)
    }
}
