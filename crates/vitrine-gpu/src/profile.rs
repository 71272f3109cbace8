//! Per-op timing for finding where a forward pass spends its time
//! (`VITRINE_GPU_PROFILE=1`). Each timed op waits for the device before it
//! returns, which serialises the pipeline: use it to attribute time, never
//! to measure throughput. The table goes to stderr when the backend drops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runtime::GpuRuntime;

/// Calls and wall time per op name.
#[derive(Default)]
pub(crate) struct OpProfile {
    ops: Mutex<HashMap<&'static str, (u64, Duration)>>,
}

impl OpProfile {
    /// Enabled by `VITRINE_GPU_PROFILE=1`.
    pub(crate) fn from_env() -> Option<Self> {
        matches!(std::env::var("VITRINE_GPU_PROFILE").as_deref(), Ok("1")).then(Self::default)
    }

    /// Starts timing `op` on `rt`; the time is recorded when the guard drops.
    pub(crate) fn start<'a, R: GpuRuntime>(&'a self, rt: &'a R, op: &'static str) -> Timed<'a, R> {
        Timed {
            rt,
            profile: self,
            op,
            start: Instant::now(),
        }
    }

    /// The table, slowest op first.
    pub(crate) fn report(&self) -> String {
        let Ok(ops) = self.ops.lock() else {
            return String::new();
        };
        let total: Duration = ops.values().map(|v| v.1).sum();
        let mut rows: Vec<_> = ops.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
        let mut s = format!("{:<14} {:>8} {:>12} {:>7}\n", "op", "calls", "ms", "share");
        for (op, (calls, t)) in rows {
            s += &format!(
                "{op:<14} {calls:>8} {:>12.3} {:>6.1}%\n",
                t.as_secs_f64() * 1e3,
                100.0 * t.as_secs_f64() / total.as_secs_f64().max(1e-12)
            );
        }
        s
    }
}

/// A running measurement of one op.
pub(crate) struct Timed<'a, R: GpuRuntime> {
    rt: &'a R,
    profile: &'a OpProfile,
    op: &'static str,
    start: Instant,
}

impl<R: GpuRuntime> Drop for Timed<'_, R> {
    fn drop(&mut self) {
        // An error here resurfaces at the next synchronising call.
        let _ = self.rt.synchronize();
        let t = self.start.elapsed();
        if let Ok(mut ops) = self.profile.ops.lock() {
            let e = ops.entry(self.op).or_default();
            e.0 += 1;
            e.1 += t;
        }
    }
}
