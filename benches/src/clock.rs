//! CLOCK_MONOTONIC in nanoseconds: the one clock shared by every process of a
//! run, used for probe timestamps and for the common start time.

use std::time::Duration;

/// Nanoseconds on CLOCK_MONOTONIC.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is always
    // available on Linux, so the call only writes into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    // tv_sec and tv_nsec are non-negative for CLOCK_MONOTONIC.
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time left until `deadline_ns`, zero if it has passed.
pub(crate) fn until_ns(deadline_ns: u64) -> Duration {
    Duration::from_nanos(deadline_ns.saturating_sub(monotonic_ns()))
}

/// A duration as nanoseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Sleeps on the monoio timer until `deadline_ns` (millisecond resolution).
pub(crate) async fn sleep_until_ns(deadline_ns: u64) {
    let left = until_ns(deadline_ns);
    if !left.is_zero() {
        monoio::time::sleep(left).await;
    }
}

/// Blocks the calling OS thread until `deadline_ns`.
pub(crate) fn block_until_ns(deadline_ns: u64) {
    loop {
        let left = until_ns(deadline_ns);
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left);
    }
}
