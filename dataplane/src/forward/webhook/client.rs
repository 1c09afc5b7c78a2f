//! One request on a webhook lane's keep-alive connection: connect if
//! needed, write the POST, read the answer whole (its body discarded), and
//! say what the status means for the batch.
//!
//! ```text
//! conn? ──no──▶ connect ──▶ sendmsg(head, body) ──▶ read ──▶ ResponseReader ──▶ status
//!   │                                                            └─ not reusable: close
//!   └─ a reused connection that fails before any answer byte: once more on a fresh one
//! ```
//!
//! The caller bounds the whole exchange with the route's `timeout` and
//! drops the connection whenever it did not end cleanly.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shoal_protocols::http1::{HeadLimits, ResponseReader};

use crate::outq::send_vectored;

/// Most bytes of an answer's head.
const MAX_ANSWER_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines of an answer's head.
const MAX_ANSWER_HEADERS: usize = 64;
/// Most bytes of an answer's body that are read (and dropped) to keep the
/// connection; a longer body closes it instead.
const MAX_ANSWER_BODY_BYTES: u64 = 1024 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// What a batch's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 408, 429, 5xx: the same batch again, after a pause.
    Retry,
    /// Anything else (other 4xx, 3xx: redirects are not followed): the
    /// batch is dropped without retry.
    Refused,
}

/// The verdict on a status.
pub(super) fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Refused,
    }
}

/// Where a lane's requests go and the fixed part of their head.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    /// `POST {path} HTTP/1.1` and the fixed header lines, up to and
    /// including `Content-Length: `.
    pub(super) head_prefix: Box<[u8]>,
}

impl Target {
    pub(super) fn new(addr: SocketAddr, authority: &str, path: &str) -> Self {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: shoal-dataplane\r\n\
             Content-Type: application/json\r\nContent-Length: "
        );
        Self {
            addr,
            head_prefix: head.into_bytes().into_boxed_slice(),
        }
    }

    /// The whole head of a request whose body has `body_len` bytes.
    fn head(&self, body_len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.head_prefix);
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Why an exchange failed (the batch may be retried).
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) what: &'static str,
    pub(super) error: io::Error,
    /// The connection was reused and no byte of an answer came: the server
    /// had most likely closed it while idle.
    stale: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

/// A lane's connection and the buffers its exchanges reuse.
#[derive(Debug, Default)]
pub(super) struct LaneConn {
    stream: Option<TcpStream>,
    head: Vec<u8>,
    answer: Vec<u8>,
    /// Connections opened, requests sent on them (for the tests' view of
    /// reuse, and the logs).
    pub(super) connects: u64,
}

impl LaneConn {
    pub(super) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Closes the connection (it did not end an exchange cleanly, sat idle,
    /// or the route stopped).
    pub(super) fn close(&mut self) {
        self.stream = None;
    }

    /// POSTs `body` and returns the answer's status. `connect_timeout`
    /// bounds the connect alone; the caller bounds the whole call.
    pub(super) async fn exchange(
        &mut self,
        target: &Target,
        body: &[u8],
        connect_timeout: Duration,
    ) -> Result<u16, Failure> {
        for _ in 0..2 {
            let reused = self.stream.is_some();
            if !reused {
                let stream = TcpStream::connect_timeout(target.addr, connect_timeout)
                    .await
                    .map_err(|e| Failure {
                        what: "cannot connect",
                        error: io::Error::other(e.to_string()),
                        stale: false,
                    })?;
                let _ = stream.set_nodelay(true);
                self.connects += 1;
                self.stream = Some(stream);
            }
            match self.request(target, body).await {
                Ok((status, reusable)) => {
                    if !reusable {
                        self.stream = None;
                    }
                    return Ok(status);
                }
                Err(mut failure) => {
                    self.stream = None;
                    if reused && failure.stale {
                        continue;
                    }
                    failure.stale = false;
                    return Err(failure);
                }
            }
        }
        Err(Failure {
            what: "connection closed",
            error: io::Error::from(io::ErrorKind::ConnectionReset),
            stale: false,
        })
    }

    /// Writes the request and reads its answer on the open connection:
    /// (status, whether the connection may carry the next request).
    async fn request(&mut self, target: &Target, body: &[u8]) -> Result<(u16, bool), Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure {
                what: "no connection",
                error: io::Error::from(io::ErrorKind::NotConnected),
                stale: false,
            });
        };
        target.head(body.len(), &mut self.head);
        let fail = |what: &'static str, stale: bool| {
            move |error: io::Error| Failure { what, error, stale }
        };
        // Head and body in one sendmsg when the socket takes them; the rest
        // (if any) as the socket drains.
        let sent = match send_vectored(stream.as_raw_fd(), [self.head.as_slice(), body], None) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(fail("cannot send", true)(e)),
        };
        let head_left = self.head.get(sent..).unwrap_or_default();
        if !head_left.is_empty() {
            stream
                .write_all(head_left)
                .await
                .map_err(fail("cannot send", true))?;
        }
        let body_left = body
            .get(sent.saturating_sub(self.head.len())..)
            .unwrap_or_default();
        if !body_left.is_empty() {
            stream
                .write_all(body_left)
                .await
                .map_err(fail("cannot send", true))?;
        }
        let mut reader = ResponseReader::new(
            HeadLimits {
                max_head_bytes: MAX_ANSWER_HEAD_BYTES,
                max_headers: MAX_ANSWER_HEADERS,
            },
            MAX_ANSWER_BODY_BYTES,
        );
        self.answer.clear();
        let mut received = 0usize;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(fail("cannot read the answer", received == 0))?;
            if n == 0 {
                return Err(Failure {
                    what: "connection closed before the answer ended",
                    error: io::Error::from(io::ErrorKind::UnexpectedEof),
                    stale: received == 0,
                });
            }
            received += n;
            self.answer
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            let progress = reader.advance(&self.answer).map_err(|e| Failure {
                what: "unreadable answer",
                error: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                stale: false,
            })?;
            self.answer
                .drain(..progress.consumed.min(self.answer.len()));
            if let Some(end) = progress.end {
                // Bytes past the answer were not asked for: start afresh.
                let reusable = end.reusable && self.answer.is_empty();
                self.answer.clear();
                return Ok((end.status, reusable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_verdicts() {
        for (status, verdict) in [
            (200, Verdict::Delivered),
            (204, Verdict::Delivered),
            (299, Verdict::Delivered),
            (408, Verdict::Retry),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (503, Verdict::Retry),
            (400, Verdict::Refused),
            (404, Verdict::Refused),
            (413, Verdict::Refused),
            (301, Verdict::Refused),
        ] {
            assert_eq!(classify(status), verdict, "{status}");
        }
    }

    /// A receiver on a std thread that answers each connection's requests
    /// with the scripted answers, one list per connection, then closes it.
    fn scripted_receiver(
        connections: Vec<Vec<&'static [u8]>>,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answers in connections {
                let (mut stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                for answer in answers {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    // Head, then a body of Content-Length bytes.
                    let body_len = loop {
                        let n = stream.read(&mut buf).unwrap();
                        assert!(n > 0, "the client closed early");
                        got.extend_from_slice(&buf[..n]);
                        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&got[..end]).to_string();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .unwrap()
                                .parse()
                                .unwrap();
                            break end + 4 + len;
                        }
                    };
                    while got.len() < body_len {
                        let n = stream.read(&mut buf).unwrap();
                        got.extend_from_slice(&buf[..n]);
                    }
                    requests.push(String::from_utf8(got).unwrap());
                    stream.write_all(answer).unwrap();
                }
            }
            requests
        });
        (addr, handle)
    }

    #[test]
    fn connections_are_kept_reopened_when_stale_and_closed_when_asked() {
        let (addr, receiver) = scripted_receiver(vec![
            // Two answers on one connection (length, then chunked), then
            // the receiver closes it while idle.
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n",
            ],
            // The stale connection is replaced without a failure; this
            // answer asks to close.
            vec![b"HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"],
            vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
        ]);
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let target = Target::new(addr, &addr.to_string(), "/in");
            let mut conn = LaneConn::default();
            let timeout = Duration::from_secs(5);
            assert_eq!(
                conn.exchange(&target, b"{\"n\":1}", timeout).await.unwrap(),
                200
            );
            assert_eq!(
                conn.exchange(&target, b"{\"n\":2}", timeout).await.unwrap(),
                503
            );
            assert_eq!((conn.connects, conn.is_open()), (1, true));
            // Let the receiver close the idle connection.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                conn.exchange(&target, b"{\"n\":3}", timeout).await.unwrap(),
                400
            );
            assert_eq!((conn.connects, conn.is_open()), (2, false));
            assert_eq!(
                conn.exchange(&target, b"{\"n\":4}", timeout).await.unwrap(),
                204
            );
            assert_eq!(conn.connects, 3);
        });
        let requests = receiver.join().unwrap();
        assert_eq!(requests.len(), 4);
        assert!(
            requests[0].starts_with("POST /in HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(
            requests[3].ends_with("\r\n\r\n{\"n\":4}"),
            "{}",
            requests[3]
        );
    }

    #[test]
    fn a_refused_connection_is_a_failure() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let target = Target::new(addr, &addr.to_string(), "/");
            let mut conn = LaneConn::default();
            let e = conn
                .exchange(&target, b"{}", Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_eq!(e.what, "cannot connect", "{e}");
            assert!(!conn.is_open());
        });
    }

    #[test]
    fn heads_carry_host_type_and_length() {
        let t = Target::new(
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:9000",
            "/in?x=1",
        );
        let mut head = Vec::new();
        t.head(42, &mut head);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /in?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: shoal-dataplane\r\n\
             Content-Type: application/json\r\nContent-Length: 42\r\n\r\n"
        );
    }
}
