//! A small fixed-bucket latency histogram, one per core.
//!
//! Buckets are log-linear: every power of two of nanoseconds is split into
//! 16 equal sub-buckets, so a recorded value is known to within 1/16
//! (6.25 %) of itself. The table is fixed (no allocation after creation)
//! and owned by one core: recording is a few integer operations and one
//! array increment, with no atomics.

use std::time::Duration;

use shoal_protocols::figures::LatencyFigures;

/// Sub-buckets per power of two, as a power of two.
const SUB_BUCKET_BITS: u32 = 4;
/// Sub-buckets per power of two.
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Values are clamped below 2^40 ns (about 18 minutes).
const MAX_VALUE_BITS: u32 = 40;
/// Buckets in the table.
const BUCKETS: usize = ((MAX_VALUE_BITS - SUB_BUCKET_BITS + 1) as usize) * SUB_BUCKETS as usize;

/// Counts of durations, in log-linear nanosecond buckets.
#[derive(Clone)]
pub(crate) struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    samples: u64,
    max_ns: u64,
    sum_ns: u64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("samples", &self.samples)
            .field("max_ns", &self.max_ns)
            .finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            samples: 0,
            max_ns: 0,
            sum_ns: 0,
        }
    }
}

/// The bucket of a value in nanoseconds (already clamped).
fn bucket_of(ns: u64) -> usize {
    if ns < SUB_BUCKETS {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros();
    let mantissa = (ns >> (exponent - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
    ((exponent - SUB_BUCKET_BITS + 1) as usize) * SUB_BUCKETS as usize + mantissa as usize
}

/// The largest value in nanoseconds that falls in `bucket`.
fn bucket_high_ns(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let exponent = bucket / SUB_BUCKETS + u64::from(SUB_BUCKET_BITS) - 1;
    let mantissa = bucket % SUB_BUCKETS;
    let width = 1u64 << (exponent - u64::from(SUB_BUCKET_BITS));
    ((SUB_BUCKETS + mantissa) << (exponent - u64::from(SUB_BUCKET_BITS))) + width - 1
}

fn ns_to_us_rounded_up(ns: u64) -> u64 {
    ns.div_ceil(1000)
}

impl LatencyHistogram {
    /// Adds one sample.
    pub(crate) fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX)
            .min((1 << MAX_VALUE_BITS) - 1);
        if let Some(count) = self.counts.get_mut(bucket_of(ns)) {
            *count += 1;
        }
        self.samples += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// For each bound (ns, ascending), the samples at or below it; a
    /// sample counts below a bound when its whole bucket does, so a count
    /// is exact to within a bucket's width (1/16 of the value).
    pub(crate) fn cumulative(&self, bounds_ns: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(bounds_ns.len());
        let mut seen = 0u64;
        let mut bucket = 0usize;
        for &bound in bounds_ns {
            while bucket < BUCKETS && bucket_high_ns(bucket) <= bound {
                seen += self.counts.get(bucket).copied().unwrap_or(0);
                bucket += 1;
            }
            out.push(seen);
        }
        out
    }

    /// The sum of every sample, ns.
    pub(crate) fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// Samples recorded since the last reset.
    pub(crate) fn count(&self) -> u64 {
        self.samples
    }

    /// The value (upper bound of its bucket, in ns) below which `quantile`
    /// of the samples fall.
    fn quantile_ns(&self, quantile: f64) -> u64 {
        if self.samples == 0 {
            return 0;
        }
        let rank = ((quantile * self.samples as f64).ceil() as u64).clamp(1, self.samples);
        let mut seen = 0u64;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high_ns(bucket).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// Percentiles in microseconds (rounded up).
    pub(crate) fn figures(&self) -> LatencyFigures {
        LatencyFigures {
            samples: self.samples,
            p50_us: ns_to_us_rounded_up(self.quantile_ns(0.50)),
            p90_us: ns_to_us_rounded_up(self.quantile_ns(0.90)),
            p99_us: ns_to_us_rounded_up(self.quantile_ns(0.99)),
            p999_us: ns_to_us_rounded_up(self.quantile_ns(0.999)),
            max_us: ns_to_us_rounded_up(self.max_ns),
        }
    }

    /// Forgets every sample (a new reporting period starts).
    pub(crate) fn reset(&mut self) {
        if self.samples > 0 {
            self.counts.fill(0);
            self.samples = 0;
            self.max_ns = 0;
            self.sum_ns = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_follow_the_bounds() {
        let mut h = LatencyHistogram::default();
        for us in [5u64, 50, 500, 5_000] {
            h.record(Duration::from_micros(us));
        }
        let bounds = [1_000, 10_000, 100_000, 1_000_000, 10_000_000];
        assert_eq!(h.cumulative(&bounds), vec![0, 1, 2, 3, 4]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns(), 5_555_000);
    }

    #[test]
    fn buckets_are_contiguous_and_within_a_sixteenth() {
        let mut previous_high = None;
        for bucket in 0..BUCKETS {
            let high = bucket_high_ns(bucket);
            if let Some(p) = previous_high {
                assert_eq!(bucket_of(p + 1), bucket, "bucket {bucket} starts after {p}");
            }
            assert_eq!(bucket_of(high), bucket);
            previous_high = Some(high);
        }
        assert_eq!(previous_high, Some((1 << MAX_VALUE_BITS) - 1));
        for v in [17u64, 1000, 123_456, 9_999_999] {
            let high = bucket_high_ns(bucket_of(v));
            assert!(high >= v && (high - v) * 16 <= v, "{v} -> {high}");
        }
    }

    #[test]
    fn percentiles_follow_the_samples_and_reset_clears_them() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.figures(), LatencyFigures::default());
        // 90 samples of 10 µs, 9 of 100 µs, one of 5 ms.
        for _ in 0..90 {
            h.record(Duration::from_micros(10));
        }
        for _ in 0..9 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(5));
        let f = h.figures();
        assert_eq!(f.samples, 100);
        assert!((10..=11).contains(&f.p50_us), "{f:?}");
        assert!((10..=11).contains(&f.p90_us), "{f:?}");
        assert!((100..=107).contains(&f.p99_us), "{f:?}");
        assert_eq!(f.p999_us, 5000, "{f:?}");
        assert_eq!(f.max_us, 5000);
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.figures(), LatencyFigures::default());
        // A value beyond the table lands in the last bucket.
        h.record(Duration::from_secs(100_000));
        assert_eq!(h.figures().samples, 1);
    }
}
