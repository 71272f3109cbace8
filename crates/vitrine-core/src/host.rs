use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::{DType, Error, Result};

/// Conversions of at least this many elements run across the thread pool. A
/// GPU pass at batch 32 returns tens of millions of values; converting them,
/// and faulting in the pages of the new vector, on one thread took several
/// times as long as the pass (docs/performance.md row 47).
const PARALLEL_MIN: usize = 1 << 20;
/// Elements per task of a parallel conversion.
const PARALLEL_CHUNK: usize = 1 << 16;

/// A vector of `n` copies of `zero` whose pages are already touched, over the
/// thread pool when it is large. A fresh large allocation is mapped lazily,
/// and whatever first writes it (a device-to-host copy, a conversion) would
/// otherwise take every page fault on one thread.
pub fn touched_vec<T: Copy + Send + Sync>(n: usize, zero: T) -> Vec<T> {
    if n < PARALLEL_MIN {
        return vec![zero; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(zero, n));
    v
}

/// fp32 values stored as `dtype`, rounded to nearest even. Slice
/// conversions: the same rounding as the scalar ones, vectorised (F16C on
/// x86) where the CPU has it.
fn stored_as(values: &[f32], dtype: DType) -> HostData {
    match dtype {
        DType::F32 => HostData::F32(values.to_vec()),
        DType::F16 => HostData::F16(convert(values, f16::ZERO, |s, o| {
            o.convert_from_f32_slice(s)
        })),
        DType::BF16 => HostData::BF16(convert(values, bf16::ZERO, |s, o| {
            o.convert_from_f32_slice(s)
        })),
    }
}

/// `convert(src chunk, out chunk)` over `src` into a new vector, chunk by
/// chunk across the thread pool when it is large.
fn convert<S: Sync, D: Copy + Send + Sync>(
    src: &[S],
    zero: D,
    convert: impl Fn(&[S], &mut [D]) + Sync,
) -> Vec<D> {
    let mut out = touched_vec(src.len(), zero);
    if src.len() >= PARALLEL_MIN {
        out.par_chunks_mut(PARALLEL_CHUNK)
            .zip(src.par_chunks(PARALLEL_CHUNK))
            .for_each(|(o, s)| convert(s, o));
    } else {
        convert(src, &mut out);
    }
    out
}

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
        // Checked: a product that wrapped could match the data's length and
        // let a huge shape through with no data behind it. Once it matches
        // the length, `numel` cannot overflow.
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                Error::shape(
                    "HostTensor::new",
                    format!("shape {shape:?} has more elements than memory can hold"),
                )
            })?;
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
        Self::new(shape, stored_as(values, dtype))
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
            HostData::F16(v) => convert(v, 0.0, |s, o| s.convert_to_f32_slice(o)),
            HostData::BF16(v) => convert(v, 0.0, |s, o| s.convert_to_f32_slice(o)),
        }
    }

    /// The same values stored as `dtype` (rounding when narrowing).
    pub fn to_dtype(&self, dtype: DType) -> HostTensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let data = match (&self.data, dtype) {
            (_, DType::F32) => HostData::F32(self.to_f32_vec()),
            (HostData::F32(v), _) => stored_as(v, dtype),
            // f16 <-> bf16: through fp32, which holds both exactly.
            _ => stored_as(&self.to_f32_vec(), dtype),
        };
        Self {
            shape: self.shape.clone(),
            data,
        }
    }

    /// [`Self::to_dtype`] that hands the tensor back unchanged, without a
    /// copy, when it is stored as `dtype` already.
    pub fn into_dtype(self, dtype: DType) -> HostTensor {
        if dtype == self.dtype() {
            self
        } else {
            self.to_dtype(dtype)
        }
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values on both sides of every rounding case: ties, subnormals, past
    /// f16's range, NaN and infinities.
    fn awkward(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| match i % 7 {
                0 => f32::NAN,
                1 => (i as f32) * 1e3,
                2 => -(i as f32) * 1e-7,
                3 => f32::from_bits(0x3f80_1000 + i as u32 % 0x2000),
                4 => f32::INFINITY,
                _ => (i as f32 * 0.37).sin(),
            })
            .collect()
    }

    #[test]
    fn parallel_conversions_round_as_the_scalar_ones() {
        // Past PARALLEL_MIN and not a multiple of PARALLEL_CHUNK, so the
        // threaded path and a short last chunk both run.
        let n = PARALLEL_MIN + PARALLEL_CHUNK / 2 + 3;
        let values = awkward(n);
        let t = HostTensor::from_f32(vec![n], values.clone()).unwrap();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        match t.to_dtype(DType::F16).data() {
            HostData::F16(v) => {
                assert!(v
                    .iter()
                    .zip(&values)
                    .all(|(h, x)| h.to_bits() == f16::from_f32(*x).to_bits()));
                let back = HostTensor::new(vec![n], HostData::F16(v.clone())).unwrap();
                let want: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                assert_eq!(bits(back.to_f32_vec()), bits(want));
            }
            other => panic!("expected f16, got {other:?}"),
        }
        match t.to_dtype(DType::BF16).data() {
            HostData::BF16(v) => {
                assert!(v
                    .iter()
                    .zip(&values)
                    .all(|(h, x)| h.to_bits() == bf16::from_f32(*x).to_bits()));
                let back = HostTensor::new(vec![n], HostData::BF16(v.clone())).unwrap();
                let via_f16 = back.to_dtype(DType::F16);
                let want: Vec<u16> = v
                    .iter()
                    .map(|h| f16::from_f32(h.to_f32()).to_bits())
                    .collect();
                match via_f16.data() {
                    HostData::F16(w) => {
                        assert_eq!(w.iter().map(|h| h.to_bits()).collect::<Vec<_>>(), want)
                    }
                    other => panic!("expected f16, got {other:?}"),
                }
            }
            other => panic!("expected bf16, got {other:?}"),
        }
    }

    #[test]
    fn into_dtype_keeps_a_tensor_already_in_that_dtype() {
        let t = HostTensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let ptr = match t.data() {
            HostData::F32(v) => v.as_ptr(),
            _ => unreachable!(),
        };
        let same = t.into_dtype(DType::F32);
        assert!(matches!(same.data(), HostData::F32(v) if v.as_ptr() == ptr));
        assert_eq!(same.into_dtype(DType::F16).dtype(), DType::F16);
    }

    #[test]
    fn a_shape_whose_product_wraps_is_refused() {
        // 2^22 · 3 · 2^21 · 2^21 wraps to 0 in 64 bits: it must not pass as
        // an empty tensor.
        let huge = vec![1 << 22, 3, 1 << 21, 1 << 21];
        let err = HostTensor::from_f32(huge, vec![]).unwrap_err();
        assert!(
            err.to_string().contains("more elements than memory"),
            "{err}"
        );
    }

    #[test]
    fn touched_vec_has_n_copies() {
        for n in [0, 5, PARALLEL_MIN + 1] {
            let v = touched_vec(n, 7u16);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 7));
        }
    }
}
