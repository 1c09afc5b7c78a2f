//! Copies a child's output to our standard error, line by line, each line
//! behind a prefix (`controlplane | `).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

/// Longest piece of a line relayed at once; a longer line is cut into
/// pieces of this size, so a child that never ends a line cannot make us
/// buffer without bound.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Tells someone when a line containing `needle` went by.
#[derive(Debug)]
pub(crate) struct LineWatch {
    /// The text to look for.
    pub(crate) needle: &'static str,
    /// Told once per matching line (a full channel drops the news).
    pub(crate) seen: SyncSender<()>,
}

/// Starts a thread that relays `reader` to standard error until its end.
pub(crate) fn spawn(
    reader: impl Read + Send + 'static,
    prefix: &'static str,
    watch: Option<LineWatch>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("relay {}", prefix.trim_end_matches([' ', '|'])))
        .spawn(move || relay(reader, prefix, watch.as_ref(), &mut io::stderr()))
}

/// Relays lines until the end of `reader`; each prefixed line is one
/// `write_all` (so lines of several relays do not mix on standard error).
pub(crate) fn relay(
    reader: impl Read,
    prefix: &str,
    watch: Option<&LineWatch>,
    sink: &mut dyn Write,
) {
    let mut reader = BufReader::with_capacity(MAX_LINE_BYTES, reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let available = match reader.fill_buf() {
            Ok([]) => break,
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let room = MAX_LINE_BYTES - line.len();
        let (take, ended) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) if pos < room => (pos + 1, true),
            _ => (available.len().min(room), false),
        };
        line.extend_from_slice(available.get(..take).unwrap_or_default());
        reader.consume(take);
        if ended || line.len() >= MAX_LINE_BYTES {
            emit(&mut line, prefix, watch, sink);
        }
    }
    if !line.is_empty() {
        emit(&mut line, prefix, watch, sink);
    }
}

/// Writes `prefix` + `line` (with its newline) at once and empties `line`.
fn emit(line: &mut Vec<u8>, prefix: &str, watch: Option<&LineWatch>, sink: &mut dyn Write) {
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    if let Some(w) = watch {
        if String::from_utf8_lossy(line).contains(w.needle) {
            let _ = w.seen.try_send(());
        }
    }
    let mut prefixed = Vec::with_capacity(prefix.len() + line.len());
    prefixed.extend_from_slice(prefix.as_bytes());
    prefixed.extend_from_slice(line);
    let _ = sink.write_all(&prefixed).and_then(|()| sink.flush());
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    fn relayed(input: &[u8], watch: Option<&LineWatch>) -> String {
        let mut out: Vec<u8> = Vec::new();
        relay(input, "cp | ", watch, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_get_the_prefix_and_a_last_partial_line_is_ended() {
        assert_eq!(
            relayed(b"one\ntwo\nthree", None),
            "cp | one\ncp | two\ncp | three\n"
        );
        assert_eq!(relayed(b"", None), "");
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let text = relayed(&long, None);
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| l.starts_with("cp | ")));
    }

    #[test]
    fn a_watched_line_is_reported() {
        let (tx, rx) = sync_channel(1);
        let watch = LineWatch {
            needle: "shoal-dataplane ready",
            seen: tx,
        };
        relayed(
            b"starting\nINFO shoal-dataplane ready cores=2\n",
            Some(&watch),
        );
        assert!(rx.try_recv().is_ok());
    }
}
