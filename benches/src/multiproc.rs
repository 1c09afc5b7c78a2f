//! Running one scenario in several processes (each process holds at most
//! ~20k sockets): the parent re-executes itself once per child and talks to
//! each child over its stdin/stdout.
//!
//! ```text
//! child  -> parent   one JSON object per line on stdout (scenario messages)
//! parent -> child    "start <CLOCK_MONOTONIC ns>\n"   begin at that instant
//!                    "stop\n"                         end a hold early
//!                    end of file                      the parent is gone: give up
//! ```
//!
//! Children write nothing else on stdout; diagnostics go to stderr, which is
//! shared with the parent.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use serde::{de::DeserializeOwned, Serialize};

use crate::clock::{monotonic_ns, until_ns};

/// Hidden flag naming a child's index.
pub(crate) const CHILD_INDEX_FLAG: &str = "--child-index";
/// Hidden flag naming how many children the run has.
pub(crate) const CHILD_COUNT_FLAG: &str = "--child-count";

/// How often a waiting runtime thread looks at the parent's commands.
const CONTROL_POLL: Duration = Duration::from_millis(1);
/// How long children get to exit after their last message.
const EXIT_GRACE: Duration = Duration::from_secs(10);

enum ChildEvent<M> {
    Message(M),
    BadLine(String),
    Exited,
}

struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    exited: bool,
}

/// The children of one run. Dropping the group kills children still running.
pub(crate) struct ChildGroup<M> {
    children: Vec<ChildProcess>,
    events: mpsc::Receiver<(usize, ChildEvent<M>)>,
}

impl<M> std::fmt::Debug for ChildGroup<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildGroup")
            .field("children", &self.children.len())
            .finish()
    }
}

impl<M: DeserializeOwned + std::fmt::Debug + Send + 'static> ChildGroup<M> {
    /// Starts `count` copies of this executable with this process's arguments
    /// plus the hidden child flags.
    pub(crate) fn spawn(count: u32) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let (tx, events) = mpsc::channel();
        let mut group = Self {
            children: Vec::new(),
            events,
        };
        for index in 0..count {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg(CHILD_INDEX_FLAG)
                .arg(index.to_string())
                .arg(CHILD_COUNT_FLAG)
                .arg(count.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("cannot start child process {index}"))?;
            let stdout = child.stdout.take().context("child stdout is not piped")?;
            let stdin = child.stdin.take();
            group.children.push(ChildProcess {
                child,
                stdin,
                exited: false,
            });
            let tx = tx.clone();
            let k = index as usize;
            thread::Builder::new()
                .name(format!("child-{index}-stdout"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let event = match serde_json::from_str::<M>(&line) {
                            Ok(message) => ChildEvent::Message(message),
                            Err(_) => ChildEvent::BadLine(line),
                        };
                        if tx.send((k, event)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((k, ChildEvent::Exited));
                })
                .context("cannot start a reader thread")?;
        }
        Ok(group)
    }

    /// Writes one command line to every child.
    pub(crate) fn broadcast(&mut self, line: &str) -> anyhow::Result<()> {
        for (k, child) in self.children.iter_mut().enumerate() {
            let stdin = child
                .stdin
                .as_mut()
                .ok_or_else(|| anyhow!("child {k} has no stdin"))?;
            writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .with_context(|| format!("cannot write to child {k}"))?;
        }
        Ok(())
    }

    /// Waits (until `deadline_ns`) for one message from every child that
    /// `pick` accepts; any other message, a bad line or an early exit fails.
    pub(crate) fn collect<T>(
        &mut self,
        deadline_ns: u64,
        what: &str,
        mut pick: impl FnMut(M) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut got: Vec<Option<T>> = self.children.iter().map(|_| None).collect();
        if let Some(k) = self.children.iter().position(|c| c.exited) {
            bail!("child {k} exited before sending its {what}");
        }
        while let Some(missing) = got.iter().position(Option::is_none) {
            let left = until_ns(deadline_ns);
            if left.is_zero() {
                bail!("timed out waiting for child {missing}'s {what}");
            }
            let (k, event) = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("timed out waiting for child {missing}'s {what}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("all children closed their output before sending their {what}")
                }
            };
            match event {
                ChildEvent::Message(message) => {
                    let mut shown = format!("{message:?}");
                    shown.truncate(200);
                    match pick(message) {
                        Some(value) => got[k] = Some(value),
                        None => {
                            bail!("child {k} sent {shown} while the parent waited for its {what}")
                        }
                    }
                }
                ChildEvent::BadLine(line) => bail!("child {k} wrote an unexpected line: {line:?}"),
                ChildEvent::Exited => {
                    self.children[k].exited = true;
                    if got[k].is_none() {
                        let status = self.children[k].child.wait().ok();
                        bail!(
                            "child {k} exited before sending its {what} ({})",
                            status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
                        );
                    }
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Closes the children's stdin and waits for them to exit, killing any
    /// that are still running after a grace period.
    pub(crate) fn wait(mut self) -> anyhow::Result<()> {
        let deadline = monotonic_ns() + crate::clock::duration_ns(EXIT_GRACE);
        let mut failed = Vec::new();
        for (k, child) in self.children.iter_mut().enumerate() {
            drop(child.stdin.take());
            loop {
                match child.child.try_wait()? {
                    Some(status) => {
                        if !status.success() {
                            failed.push(format!("child {k}: {status}"));
                        }
                        break;
                    }
                    None if until_ns(deadline).is_zero() => {
                        let _ = child.child.kill();
                        let _ = child.child.wait();
                        failed.push(format!("child {k}: killed after not exiting"));
                        break;
                    }
                    None => thread::sleep(Duration::from_millis(5)),
                }
            }
            child.exited = true;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("children failed: {}", failed.join("; "))
        }
    }
}

impl<M> Drop for ChildGroup<M> {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            if !child.exited && matches!(child.child.try_wait(), Ok(None)) {
                let _ = child.child.kill();
            }
            let _ = child.child.wait();
        }
    }
}

/// What the parent has told this child so far.
#[derive(Debug, Default)]
pub(crate) struct ParentCommands {
    /// 0 until "start" arrives.
    start_ns: AtomicU64,
    stop: AtomicBool,
    parent_gone: AtomicBool,
}

impl ParentCommands {
    /// Starts a thread that reads the parent's commands from stdin.
    pub(crate) fn listen() -> anyhow::Result<Arc<Self>> {
        let commands = Arc::new(Self::default());
        let shared = Arc::clone(&commands);
        thread::Builder::new()
            .name("parent-commands".to_owned())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    shared.apply(&line);
                }
                shared.parent_gone.store(true, Ordering::Release);
            })
            .context("cannot start the parent command reader")?;
        Ok(commands)
    }

    fn apply(&self, line: &str) {
        let mut words = line.split_ascii_whitespace();
        match (words.next(), words.next()) {
            (Some("start"), Some(ns)) => match ns.parse::<u64>() {
                Ok(ns) if ns > 0 => self.start_ns.store(ns, Ordering::Release),
                _ => eprintln!("shoal-bench child: bad start time {ns:?}"),
            },
            (Some("stop"), None) => self.stop.store(true, Ordering::Release),
            _ => eprintln!("shoal-bench child: unknown command {line:?}"),
        }
    }

    /// Waits for the common start time; `None` if the parent went away or
    /// sent nothing before `deadline_ns`.
    pub(crate) async fn start_ns(&self, deadline_ns: u64) -> Option<u64> {
        loop {
            match self.start_ns.load(Ordering::Acquire) {
                0 => {}
                ns => return Some(ns),
            }
            if self.parent_gone.load(Ordering::Acquire) || until_ns(deadline_ns).is_zero() {
                return None;
            }
            monoio::time::sleep(CONTROL_POLL).await;
        }
    }

    /// Waits for "stop", the parent going away, or `deadline_ns`.
    pub(crate) async fn stopped(&self, deadline_ns: u64) {
        while !self.stop.load(Ordering::Acquire)
            && !self.parent_gone.load(Ordering::Acquire)
            && !until_ns(deadline_ns).is_zero()
        {
            monoio::time::sleep(CONTROL_POLL * 10).await;
        }
    }
}

/// File descriptors a process keeps for itself (stdio, io_uring, pipes...)
/// in [`check_socket_budget`].
pub(crate) const FD_RESERVE: u64 = 100;

/// Units given to part `index` of `parts` when `total` are split evenly
/// (the first `total % parts` parts get one more).
pub(crate) fn share(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

/// Units given to the parts before `index`.
pub(crate) fn shares_before(total: u64, parts: u64, index: u64) -> u64 {
    index * (total / parts) + index.min(total % parts)
}

/// Checks that `units` (each holding `sockets_per_unit` client sockets,
/// never split between processes) spread over `procs` processes fit the
/// per-process open-file limit (less [`FD_RESERVE`]) and the ephemeral ports
/// of `source_addrs` source addresses; the error says how to change the
/// process count (the scenario's `procs_flag`) or `--source-addrs`.
pub(crate) fn check_socket_budget(
    units: u64,
    sockets_per_unit: u64,
    procs: u64,
    procs_flag: &str,
    fd_limit: u64,
    source_addrs: u64,
    ephemeral_ports: u64,
) -> Result<(), String> {
    let usable = fd_limit.saturating_sub(FD_RESERVE);
    let sockets = units * sockets_per_unit;
    let per_process = share(units, procs.max(1), 0) * sockets_per_unit;
    if per_process > usable {
        return Err(format!(
            "{per_process} sockets per process exceed the open-file limit ({fd_limit}, \
             {FD_RESERVE} kept in reserve): use {procs_flag} {} or more",
            sockets.div_ceil(usable.max(sockets_per_unit).max(1))
        ));
    }
    let per_source = sockets.div_ceil(source_addrs.max(1));
    if per_source > ephemeral_ports {
        return Err(format!(
            "{per_source} sockets per source address exceed the {ephemeral_ports} ephemeral \
             ports: use a --source-addrs range of {} addresses or more",
            sockets.div_ceil(ephemeral_ports.max(1))
        ));
    }
    Ok(())
}

/// Sends one message to the parent (one JSON line on stdout).
pub(crate) fn send_to_parent<T: Serialize>(message: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(message)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_total_in_order() {
        for total in [0, 1, 7, 10_000, 38_001] {
            for parts in 1..=5 {
                let mut before = 0;
                for index in 0..parts {
                    assert_eq!(shares_before(total, parts, index), before);
                    before += share(total, parts, index);
                }
                assert_eq!(before, total, "total {total} parts {parts}");
            }
        }
    }

    #[test]
    fn socket_budget() {
        let err = check_socket_budget(38_000, 1, 1, "--procs", 20_000, 8, 28_232).unwrap_err();
        assert!(err.contains("--procs 2"), "{err}");
        assert!(check_socket_budget(38_000, 1, 2, "--procs", 20_000, 8, 28_232).is_ok());
        let err = check_socket_budget(38_000, 1, 2, "--procs", 20_000, 1, 28_232).unwrap_err();
        assert!(err.contains("range of 2"), "{err}");
        // 10k pairs = 20k sockets: one process cannot hold them, two can.
        let err = check_socket_budget(10_000, 2, 1, "--processes", 20_000, 8, 28_232).unwrap_err();
        assert!(err.contains("--processes 2"), "{err}");
        assert!(check_socket_budget(10_000, 2, 2, "--processes", 20_000, 8, 28_232).is_ok());
        // 60k idle sockets from one source address run out of ports.
        let err = check_socket_budget(60_000, 1, 4, "--processes", 20_000, 1, 28_232).unwrap_err();
        assert!(err.contains("--source-addrs range of 3"), "{err}");
        assert!(check_socket_budget(60_000, 1, 4, "--processes", 20_000, 3, 28_232).is_ok());
    }

    #[test]
    fn commands_parse() {
        let commands = ParentCommands::default();
        commands.apply("start 12345");
        assert_eq!(commands.start_ns.load(Ordering::Acquire), 12345);
        commands.apply("start zero");
        commands.apply("start 0");
        assert_eq!(commands.start_ns.load(Ordering::Acquire), 12345);
        assert!(!commands.stop.load(Ordering::Acquire));
        commands.apply("stop");
        assert!(commands.stop.load(Ordering::Acquire));
    }
}
