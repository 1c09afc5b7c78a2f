//! Numbers for people: durations and sizes in one word each, so table rows
//! still split on whitespace.

use std::time::Duration;

/// `42s`, `5m12s`, `3h04m`, `2d03h`; `0s` for less than a second.
pub(crate) fn compact_duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{:02}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// An age with a tenth of a second: `0.4s`, then as
/// [`compact_duration_ms`] from a minute on.
pub(crate) fn age_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    } else {
        compact_duration_ms(ms)
    }
}

/// `512B`, `4.0KiB`, `12.3MiB`, `1.5GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS.get(unit).copied().unwrap_or("TiB"))
}

/// Events per second from a count over a duration.
pub(crate) fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_one_word() {
        assert_eq!(compact_duration_ms(999), "0s");
        assert_eq!(compact_duration_ms(42_000), "42s");
        assert_eq!(compact_duration_ms(312_000), "5m12s");
        assert_eq!(compact_duration_ms(3 * 3_600_000 + 4 * 60_000), "3h04m");
        assert_eq!(compact_duration_ms(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
        assert_eq!(age_ms(420), "0.4s");
        assert_eq!(age_ms(12_345), "12.3s");
        assert_eq!(age_ms(120_000), "2m00s");
    }

    #[test]
    fn sizes_are_one_word() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(4096), "4.0KiB");
        assert_eq!(bytes(12_897_485), "12.3MiB");
        assert_eq!(bytes(3 << 30), "3.0GiB");
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(100, Duration::from_millis(500)), 200.0);
        assert_eq!(per_second(100, Duration::ZERO), 0.0);
    }
}
