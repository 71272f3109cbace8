//! Numeric guards: non-finite values in weights and outputs, and a cheap
//! estimate of the activation memory a forward pass needs.
//!
//! | guard | when | outcome |
//! |---|---|---|
//! | [`crate::Encoder::check_weights`] | opt-in (`embed --check-weights`) | error naming the first tensor with NaN/Inf (or, for f16 storage, a value past ±65504) |
//! | output check | every forward | error naming the image, and the first block whose output is non-finite; for an f16 encoder with [`crate::OverflowPolicy::Retry`], the affected images run again in bf16/f32 instead (recorded in [`crate::Embedding::overflow`]) |
//! | [`crate::Encoder::activation_bytes`] | every forward | a batch over [`crate::Encoder::max_activation_bytes`] is refused before any work, with the estimate |

use rayon::prelude::*;
use vitrine_core::{HostData, HostTensor};

/// The largest finite f16 value.
pub const F16_MAX: f32 = 65_504.0;

/// Where the first non-finite value of a tensor is, and how many there are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFinite {
    /// Flat index of the first non-finite value.
    pub first: usize,
    /// The value there (NaN, +Inf or −Inf).
    pub value: f32,
    /// How many values are non-finite.
    pub count: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} non-finite value{} (first: {} at flat index {})",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.value,
            self.first
        )
    }
}

fn scan(values: impl Iterator<Item = f32>) -> Option<NonFinite> {
    let mut found: Option<NonFinite> = None;
    for (i, v) in values.enumerate() {
        if !v.is_finite() {
            match &mut found {
                Some(n) => n.count += 1,
                None => {
                    found = Some(NonFinite {
                        first: i,
                        value: v,
                        count: 1,
                    })
                }
            }
        }
    }
    found
}

/// Whether any of `values` is NaN or ±Inf: a count without branches (which
/// vectorises), across the thread pool. Every output of every pass is
/// checked, and the ordered `scan` took longer than a batch-32 GPU pass
/// (docs/performance.md row 47); it now runs only where this finds one.
fn any_non_finite<T: Sync>(values: &[T], finite: impl Fn(&T) -> bool + Sync) -> bool {
    values
        .par_chunks(1 << 16)
        .map(|c| c.iter().filter(|x| !finite(x)).count())
        .sum::<usize>()
        > 0
}

/// The non-finite values of a host tensor, if any.
pub fn non_finite(t: &HostTensor) -> Option<NonFinite> {
    let any = match t.data() {
        HostData::F32(v) => any_non_finite(v, |x| x.is_finite()),
        HostData::F16(v) => any_non_finite(v, |x| x.is_finite()),
        HostData::BF16(v) => any_non_finite(v, |x| x.is_finite()),
    };
    if !any {
        return None;
    }
    match t.data() {
        HostData::F32(v) => scan(v.iter().copied()),
        HostData::F16(v) => scan(v.iter().map(|x| x.to_f32())),
        HostData::BF16(v) => scan(v.iter().map(|x| x.to_f32())),
    }
}

/// The largest finite magnitude in a tensor (0 for an empty one).
pub fn max_abs(t: &HostTensor) -> f32 {
    let fold = |m: f32, v: f32| if v.is_finite() { m.max(v.abs()) } else { m };
    match t.data() {
        HostData::F32(v) => v.iter().copied().fold(0.0, fold),
        HostData::F16(v) => v.iter().map(|x| x.to_f32()).fold(0.0, fold),
        HostData::BF16(v) => v.iter().map(|x| x.to_f32()).fold(0.0, fold),
    }
}

/// Formats a byte count for messages (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Physical memory of this machine (Linux `/proc/meminfo`), if known.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_finds_the_first_and_counts_all_in_large_tensors() {
        let n = (1 << 20) + 77;
        let mut v = vec![0.5f32; n];
        v[(1 << 16) + 9] = f32::NEG_INFINITY;
        v[n - 1] = f32::NAN;
        let t = HostTensor::from_f32(vec![n], v).unwrap();
        let nf = non_finite(&t).expect("two non-finite values");
        assert_eq!((nf.first, nf.count), ((1 << 16) + 9, 2));
        assert_eq!(nf.value, f32::NEG_INFINITY);
        let clean = HostTensor::from_f32(vec![n], vec![1.0; n]).unwrap();
        assert!(non_finite(&clean).is_none());
        let f16s = clean.to_dtype(vitrine_core::DType::F16);
        assert!(non_finite(&f16s).is_none());
    }
}
