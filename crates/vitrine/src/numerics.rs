//! Numeric guards: non-finite values in weights and outputs, and a cheap
//! estimate of the activation memory a forward pass needs.
//!
//! | guard | when | outcome |
//! |---|---|---|
//! | [`crate::Encoder::check_weights`] | opt-in (`embed --check-weights`) | error naming the first tensor with NaN/Inf (or, for f16 storage, a value past ±65504) |
//! | output check | every forward | error naming the image, and the first block whose output is non-finite; for an f16 encoder with [`crate::OverflowPolicy::Retry`], the affected images run again in bf16/f32 instead (recorded in [`crate::Embedding::overflow`]) |
//! | [`crate::Encoder::activation_bytes`] | every forward | a batch over [`crate::Encoder::max_activation_bytes`] is refused before any work, with the estimate |

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

/// The non-finite values of a host tensor, if any.
pub fn non_finite(t: &HostTensor) -> Option<NonFinite> {
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
