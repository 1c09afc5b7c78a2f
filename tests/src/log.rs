//! Output lines of a child process, captured by a thread, and what one
//! line of the data plane's log says.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One line a process wrote, with the moment the test read it.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When the reader thread got it.
    pub at: Instant,
    /// The line, without its newline.
    pub text: String,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<LogLine>,
    /// The writer closed the stream (the process exited).
    closed: bool,
}

/// Lines of one output stream of a child process, filled by a reader
/// thread; waiters are woken on every new line.
#[derive(Debug, Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

impl Log {
    /// Starts a thread that reads `from` line by line into a new log,
    /// echoing each line to the test's stderr with `tag`.
    pub(crate) fn capture(from: impl Read + Send + 'static, tag: String) -> Self {
        let log = Self::default();
        let writer = log.clone();
        thread::Builder::new()
            .name(format!("capture {tag}"))
            .spawn(move || {
                let mut reader = BufReader::new(from);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&raw).trim_end().to_owned();
                            eprintln!("[{tag}] {text}");
                            writer.push(text);
                        }
                    }
                }
                writer.close();
            })
            .expect("start a capture thread");
        log
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, text: String) {
        self.state().lines.push(LogLine {
            at: Instant::now(),
            text,
        });
        self.inner.1.notify_all();
    }

    fn close(&self) {
        self.state().closed = true;
        self.inner.1.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.state().lines.clone()
    }

    /// Every line so far, as text.
    pub fn text(&self) -> String {
        self.state()
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Waits until `select` holds, given every line so far, or the time is
    /// up or the stream ended without it; `Err` then says which.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        mut select: impl FnMut(&[LogLine]) -> Option<T>,
    ) -> Result<T, &'static str> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(found) = select(&state.lines) {
                return Ok(found);
            }
            if state.closed {
                return Err("the process closed its output");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out");
            }
            state = self
                .inner
                .1
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The thread a log line came from (`main`, `shoal-core-0`, ...): the token
/// after the level.
pub fn thread_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| matches!(*w, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"))?;
    words.next()
}

/// The core a log line came from, when a core thread wrote it.
pub fn core_of(line: &str) -> Option<usize> {
    thread_of(line)?.strip_prefix("shoal-core-")?.parse().ok()
}

/// Whether a log line carries the field `key=value` exactly (the value
/// plain or quoted, as the log prints it).
pub fn has_field(line: &str, key: &str, value: &str) -> bool {
    let plain = format!("{key}={value}");
    let quoted = format!("{key}={value:?}");
    line.split_whitespace().any(|w| w == plain || w == quoted)
}
