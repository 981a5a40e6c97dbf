//! Latency statistics for `ssepush bench`: an HDR histogram in microseconds that crosses process
//! boundaries as `(value, count)` pairs (the load generator's child processes each keep one and
//! the parent merges them), and the percentile summary every benchmark prints.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency recorded as itself (10 minutes, in µs); longer ones are clamped to it.
const MAX_US: u64 = 600_000_000;

/// A latency histogram in microseconds, 3 significant digits (0.1 % resolution) from 1 µs to
/// 10 minutes.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            // Bounds are constants that hdrhistogram accepts: this cannot fail.
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
        }
    }

    /// Records one latency; 0 counts as 1 µs (clocks of one machine, read µs apart, can tie).
    pub fn record_us(&mut self, us: u64) {
        self.record_n_us(us, 1);
    }

    /// Records `n` samples of one latency.
    pub fn record_n_us(&mut self, us: u64, n: u64) {
        // Clamped into the bounds, so recording cannot fail.
        let _ = self.hist.record_n(us.clamp(1, MAX_US), n);
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The histogram as `(value µs, count)` pairs, for a child process's report.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// The inverse of [`Latency::to_pairs`] (values are re-binned, so exact to 0.1 %).
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Latency {
        let mut l = Latency::new();
        for &(v, n) in pairs {
            l.record_n_us(v, n);
        }
        l
    }

    /// Percentiles in milliseconds; `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        Some(LatencySummary {
            count: self.hist.len(),
            mean_ms: self.hist.mean() / 1000.0,
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.hist.max() as f64 / 1000.0,
        })
    }
}

/// What every benchmark prints about a latency distribution (milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// `p50 1.23 · p90 … · p99.9 … · max …` (ms), for the table.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} · p90 {:.2} · p95 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2} ms",
            self.p50_ms, self.p90_ms, self.p95_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// Microseconds since the Unix epoch: the timestamp a publisher writes into a payload and a
/// receiver subtracts from its own reading of the same machine's clock (processes of one host
/// share it, which an `Instant` cannot be).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        for us in 1..=1000 {
            l.record_us(us * 1000); // 1 ms … 1000 ms
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() <= 1.0, "{s:?}");
    }

    #[test]
    fn pairs_round_trip_and_merge() {
        let mut a = Latency::new();
        a.record_n_us(250, 3);
        a.record_us(0); // clamped to 1 µs
        a.record_us(u64::MAX); // clamped to the top
        let b = Latency::from_pairs(&a.to_pairs());
        assert_eq!(b.count(), 5);
        let mut c = Latency::new();
        c.merge(&a);
        c.merge(&b);
        assert_eq!(c.count(), 10);
        assert!(Latency::new().summary().is_none());
    }
}
