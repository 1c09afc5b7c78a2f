//! The pause before each retry of a webhook batch: exponential, capped,
//! jittered so that the lanes and cores that failed together do not all
//! come back at the same instant.
//!
//! ```text
//! retry:    1       2       3       4      5      6 …
//! ceiling:  100ms   200ms   400ms   800ms  1.6s   3.2s  5s  5s …
//! pause:    uniform in [ceiling/2, ceiling]
//! ```

use std::time::Duration;

/// The first retry's ceiling.
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The largest ceiling.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(5);

/// Retry pauses, with its own small random source (xorshift64).
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    state: u64,
}

impl Backoff {
    /// `seed` picks the jitter sequence (any value; 0 is replaced).
    pub(super) fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    /// The ceiling of retry `retry` (1-based): 100ms doubling, at most 5s.
    pub(super) fn ceiling(retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(16);
        FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY)
    }

    /// The pause before retry `retry`: a point in the upper half of its
    /// ceiling.
    pub(super) fn pause(&mut self, retry: u32) -> Duration {
        let ceiling = Self::ceiling(retry);
        let half = ceiling / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.next() % (span + 1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_100ms_to_5s() {
        let ms: Vec<u128> = (1..=8).map(|r| Backoff::ceiling(r).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(Backoff::ceiling(u32::MAX), MAX_RETRY);
        assert_eq!(Backoff::ceiling(0), FIRST_RETRY);
    }

    #[test]
    fn pauses_stay_in_the_upper_half_and_vary() {
        let mut b = Backoff::new(7);
        for retry in 1..=10 {
            let ceiling = Backoff::ceiling(retry);
            let pauses: Vec<Duration> = (0..50).map(|_| b.pause(retry)).collect();
            assert!(
                pauses.iter().all(|p| *p >= ceiling / 2 && *p <= ceiling),
                "{retry}: {pauses:?}"
            );
            assert!(pauses.iter().any(|p| *p != pauses[0]), "no jitter");
        }
        // Different seeds, different sequences.
        let a: Vec<Duration> = (0..5).map(|_| Backoff::new(1).pause(3)).collect();
        let mut other = Backoff::new(2);
        let b: Vec<Duration> = (0..5).map(|_| other.pause(3)).collect();
        assert_ne!(a, b);
    }
}
