//! Readers for the server's cost (/proc/PID/stat CPU time, /proc/PID/status
//! VmRSS) and for the host limits that bound how many sockets one run can open.

use std::{fs, io};

use anyhow::{anyhow, Context as _};

/// CPU time and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcSample {
    /// utime + stime, in clock ticks.
    pub(crate) cpu_ticks: u64,
    pub(crate) rss_kib: u64,
}

/// Samples `/proc/PID/stat` and `/proc/PID/status` of one process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessWatch {
    pid: u32,
    ticks_per_s: u64,
}

impl ProcessWatch {
    /// Checks that the process exists and can be read.
    pub(crate) fn new(pid: u32) -> anyhow::Result<Self> {
        let watch = Self {
            pid,
            ticks_per_s: clock_ticks_per_s()?,
        };
        watch
            .sample()
            .with_context(|| format!("cannot read /proc/{pid} (is --server-pid right?)"))?;
        Ok(watch)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn sample(&self) -> anyhow::Result<ProcSample> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        Ok(ProcSample {
            cpu_ticks: parse_stat_cpu_ticks(&stat)
                .ok_or_else(|| anyhow!("unexpected /proc/{}/stat: {stat:?}", self.pid))?,
            rss_kib: parse_status_rss_kib(&status)
                .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid))?,
        })
    }

    /// CPU seconds spent between two samples.
    pub(crate) fn cpu_s_between(&self, before: ProcSample, after: ProcSample) -> f64 {
        after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / self.ticks_per_s as f64
    }
}

/// Several processes sampled as one server (a master and its workers):
/// their CPU ticks and RSS summed.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSetWatch {
    watches: Vec<ProcessWatch>,
}

impl ProcessSetWatch {
    /// Checks that every process exists and can be read; `None` for no pid.
    pub(crate) fn new(pids: &[u32]) -> anyhow::Result<Option<Self>> {
        if pids.is_empty() {
            return Ok(None);
        }
        let watches = pids
            .iter()
            .map(|&pid| ProcessWatch::new(pid))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Self { watches }))
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.watches.iter().map(ProcessWatch::pid).collect()
    }

    /// The sum over every process; fails if one cannot be read.
    pub(crate) fn sample(&self) -> anyhow::Result<ProcSample> {
        let mut sum = ProcSample {
            cpu_ticks: 0,
            rss_kib: 0,
        };
        for watch in &self.watches {
            let one = watch
                .sample()
                .with_context(|| format!("pid {}", watch.pid()))?;
            sum.cpu_ticks += one.cpu_ticks;
            sum.rss_kib += one.rss_kib;
        }
        Ok(sum)
    }

    /// CPU seconds spent between two samples (all processes).
    pub(crate) fn cpu_s_between(&self, before: ProcSample, after: ProcSample) -> f64 {
        self.watches
            .first()
            .map_or(0.0, |watch| watch.cpu_s_between(before, after))
    }

    /// One sample (if any processes are watched); a failed read is reported
    /// on stderr (with `when`) and gives `None`.
    pub(crate) fn sample_or_warn(set: Option<&Self>, when: &str) -> Option<ProcSample> {
        let set = set?;
        match set.sample() {
            Ok(sample) => Some(sample),
            Err(e) => {
                eprintln!("shoal-bench: cannot sample the server {when}: {e:#}");
                None
            }
        }
    }
}

/// One sample of `server` (if any); a failed read is reported on stderr
/// (with `when`, e.g. "at the end of the measured window") and gives `None`.
pub(crate) fn sample_or_warn(server: Option<&ProcessWatch>, when: &str) -> Option<ProcSample> {
    let server = server?;
    match server.sample() {
        Ok(sample) => Some(sample),
        Err(e) => {
            eprintln!(
                "shoal-bench: cannot sample server pid {} {when}: {e:#}",
                server.pid()
            );
            None
        }
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line.
///
/// The command name (field 2) is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm: field 3 (state) is index 0, so field N is index N - 3.
    let mut fields = after_comm.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:` line of `/proc/PID/status`, in KiB.
pub(crate) fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_ascii_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

fn clock_ticks_per_s() -> anyhow::Result<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| anyhow!("sysconf(_SC_CLK_TCK) failed"))
}

/// Soft limit on open files of this process (children inherit it).
pub(crate) fn open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// How many ephemeral ports the kernel hands out (`ip_local_port_range`).
pub(crate) fn ephemeral_port_count() -> io::Result<u64> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    parse_port_range_count(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected ip_local_port_range {text:?}"),
        )
    })
}

fn parse_port_range_count(text: &str) -> Option<u64> {
    let mut parts = text.split_ascii_whitespace();
    let low: u64 = parts.next()?.parse().ok()?;
    let high: u64 = parts.next()?.parse().ok()?;
    (high >= low).then(|| high - low + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_plain_comm() {
        let line = "4242 (shoal-dataplane) S 1 4242 4242 0 -1 4194560 2301 0 0 0 \
                    157 31 0 0 20 0 3 0 123456 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17642 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(157 + 31));
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 9 4 0 0 20 0 1 0 5 1 1 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(13));
    }

    #[test]
    fn stat_truncated_or_garbled() {
        assert_eq!(parse_stat_cpu_ticks("77 (x) R 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("no parens at all"), None);
        assert_eq!(
            parse_stat_cpu_ticks("7 (x) R 1 7 7 0 -1 0 0 0 0 0 nine 4 0"),
            None
        );
    }

    #[test]
    fn stat_of_this_process_parses() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&stat).is_some());
        let status = fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_status_rss_kib(&status).unwrap() > 0);
    }

    #[test]
    fn process_set_sums_its_processes() {
        assert!(ProcessSetWatch::new(&[]).unwrap().is_none());
        let me = std::process::id();
        let one = ProcessSetWatch::new(&[me]).unwrap().unwrap();
        let two = ProcessSetWatch::new(&[me, me]).unwrap().unwrap();
        assert_eq!(two.pids(), [me, me]);
        let (a, b) = (one.sample().unwrap(), two.sample().unwrap());
        assert!(b.rss_kib >= a.rss_kib && b.rss_kib > 0);
        assert!(two.cpu_s_between(a, b) >= 0.0);
        assert!(ProcessSetWatch::new(&[me, u32::MAX]).is_err());
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tshoal\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(5120));
        assert_eq!(parse_status_rss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(parse_status_rss_kib("VmRSS:\t 12 MB\n"), None);
    }

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range_count("32768\t60999\n"), Some(28232));
        assert_eq!(parse_port_range_count("10 5"), None);
        assert_eq!(parse_port_range_count(""), None);
    }
}
