//! One viewer connection on a runtime thread: HTTP-FLV (`GET
//! /{app}/{name}.flv`, chunked body) or RTMP play, from connect to the end
//! of the run, feeding every tag to its [`TagWatch`].
//!
//! ```text
//! connect ─ request (GET, or connect/createStream/play) ─ 200 / Play.Start: established
//!         ─ first video frame: started ─ read until the thread cancels the reads
//!           (or the server ends the stream) ─ counts
//! ```
//!
//! Setup (connect to established) is bounded by `--connect-timeout`. One
//! read buffer per viewer (`--read-buffer`), reused from its start; the
//! HTTP-FLV path copies nothing but tag heads and probes, the RTMP path
//! lets `ClientSession` reassemble messages cut in several chunks.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    net::{Ipv4Addr, SocketAddr},
    rc::Rc,
    task::{Poll, Waker},
    time::Duration,
};

use hdrhistogram::Histogram;
use monoio::{
    buf::IoBufMut as _,
    io::{AsyncWriteRentExt as _, CancelHandle, CancelableAsyncReadRent as _},
    net::TcpStream,
};
use shoal_protocols::rtmp::{status, ClientConfig, ClientEvent, ClientSession, MediaKind};

use super::{
    media::{BODY_PREFIX_BYTES, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO},
    scan::{parse_response_head, Dechunker, FlvScanner},
    tally::{ConnectSummary, ViewerCounts, ViewerError},
    watch::{RunClock, TagWatch, ViewerEnd},
    Proto,
};
use crate::{
    clock::{duration_ns, monotonic_ns, until_ns},
    net::connect_from,
};

/// What every viewer of a thread does.
#[derive(Debug)]
pub(crate) struct ViewerPlan {
    pub(crate) proto: Proto,
    pub(crate) target: SocketAddr,
    pub(crate) app: String,
    pub(crate) stream: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_buffer_bytes: usize,
    pub(crate) stall_gap: Duration,
}

/// Bounds how many viewers of a thread are setting up at once, and counts
/// the ones that are settled (started, or failed).
pub(crate) struct SetupGate {
    limit: usize,
    in_setup: Cell<usize>,
    settled: Cell<u64>,
    /// The thread's task waiting on the gate (there is only one).
    waiter: Cell<Option<Waker>>,
}

impl std::fmt::Debug for SetupGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupGate")
            .field("limit", &self.limit)
            .field("in_setup", &self.in_setup.get())
            .field("settled", &self.settled.get())
            .finish()
    }
}

impl SetupGate {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_setup: Cell::new(0),
            settled: Cell::new(0),
            waiter: Cell::new(None),
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }

    async fn wait_for(&self, deadline_ns: u64, ready: impl Fn(&Self) -> bool) -> bool {
        let condition = poll_fn(|cx| {
            if ready(self) {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        monoio::time::timeout(until_ns(deadline_ns), condition)
            .await
            .is_ok()
    }

    /// Takes a setup slot, waiting for one until `deadline_ns`.
    pub(crate) async fn take_slot(&self, deadline_ns: u64) -> bool {
        let free = self
            .wait_for(deadline_ns, |g| g.in_setup.get() < g.limit)
            .await;
        if free {
            self.in_setup.set(self.in_setup.get() + 1);
        }
        free
    }

    /// Waits until `viewers` are settled or `deadline_ns` passes.
    pub(crate) async fn all_settled(&self, viewers: u64, deadline_ns: u64) -> bool {
        self.wait_for(deadline_ns, |g| g.settled.get() >= viewers)
            .await
    }
}

/// What the viewers of one runtime thread share.
pub(crate) struct ThreadRun {
    pub(crate) plan: ViewerPlan,
    /// Set when the parent's start time arrives.
    pub(crate) clock: Cell<Option<RunClock>>,
    pub(crate) latency_us: RefCell<Histogram<u64>>,
    pub(crate) connect: RefCell<ConnectSummary>,
    pub(crate) gate: SetupGate,
    /// Ends every read once the run is over.
    pub(crate) cancel: CancelHandle,
}

impl std::fmt::Debug for ThreadRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadRun")
            .field("plan", &self.plan)
            .field("clock", &self.clock.get())
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

/// A viewer's progress through setup, each step reported once.
struct Ticket<'a> {
    run: &'a ThreadRun,
    slot_held: bool,
    settled: bool,
    context: String,
}

impl Ticket<'_> {
    fn release_slot(&mut self) {
        if std::mem::take(&mut self.slot_held) {
            let gate = &self.run.gate;
            gate.in_setup.set(gate.in_setup.get().saturating_sub(1));
            gate.wake();
        }
    }

    fn settle(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            let gate = &self.run.gate;
            gate.settled.set(gate.settled.get() + 1);
            gate.wake();
        }
    }

    fn established(&mut self) {
        if self.slot_held {
            self.run.connect.borrow_mut().established += 1;
            self.release_slot();
        }
    }

    fn started(&mut self) {
        self.run.connect.borrow_mut().started += 1;
        self.settle();
    }

    fn failed(&mut self, error: &ViewerError) {
        self.run
            .connect
            .borrow_mut()
            .failures
            .record(error, &self.context);
        self.release_slot();
        self.settle();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.release_slot();
        self.settle();
    }
}

/// Runs viewer `index` (run-wide) to the end; its setup slot must be taken.
pub(crate) async fn run_viewer(
    index: u64,
    source: Option<Ipv4Addr>,
    run: Rc<ThreadRun>,
) -> ViewerCounts {
    let plan = &run.plan;
    let context = match source {
        Some(source) => format!("viewer {index} ({source} -> {})", plan.target),
        None => format!("viewer {index} (-> {})", plan.target),
    };
    let mut ticket = Ticket {
        run: &run,
        slot_held: true,
        settled: false,
        context,
    };
    let setup_deadline = monotonic_ns() + duration_ns(plan.connect_timeout);
    let stream = match connect_from(source, plan.target, plan.connect_timeout).await {
        Ok(stream) => stream,
        Err(e) => {
            ticket.failed(&ViewerError::io(&e, "connect"));
            return ViewerCounts::default();
        }
    };
    let mut viewer = Viewer {
        run: &run,
        stream,
        buf: Vec::with_capacity(plan.read_buffer_bytes),
        watch: TagWatch::new(duration_ns(plan.stall_gap)),
        ticket,
        setup_deadline,
        playing: false,
    };
    let end = match plan.proto {
        Proto::HttpFlv => viewer.http_flv().await,
        Proto::Rtmp => viewer.rtmp().await,
    };
    let Viewer {
        watch,
        mut ticket,
        playing,
        ..
    } = viewer;
    match end {
        Err(error) if !playing => {
            ticket.failed(&error);
            ViewerCounts::default()
        }
        Err(error) => watch.finish(&ViewerEnd::Failed(error), run.clock.get()),
        Ok(end) if !playing => {
            // Stopped or closed before it got going.
            let error = match end {
                ViewerEnd::ByServer(e) | ViewerEnd::Failed(e) => e,
                ViewerEnd::Stopped => ViewerError::new("SetupUnfinished", "the run ended first"),
            };
            ticket.failed(&error);
            ViewerCounts::default()
        }
        Ok(end) => watch.finish(&end, run.clock.get()),
    }
}

/// One read's outcome.
enum Read {
    Data,
    /// The thread cancelled the read: the run is over.
    Stopped,
    Eof,
}

struct Viewer<'a> {
    run: &'a ThreadRun,
    stream: TcpStream,
    buf: Vec<u8>,
    watch: TagWatch,
    ticket: Ticket<'a>,
    setup_deadline: u64,
    /// Established: setup is over.
    playing: bool,
}

impl Viewer<'_> {
    /// Appends one read to `buf` (bounded by the setup deadline until the
    /// viewer is established) and counts the bytes.
    async fn read(&mut self) -> Result<(Read, u64), ViewerError> {
        let buf = std::mem::take(&mut self.buf);
        let (filled, capacity) = (buf.len(), buf.capacity());
        let read = self
            .stream
            .cancelable_read(buf.slice_mut(filled..capacity), self.run.cancel.clone());
        let (result, buf) = if self.playing {
            read.await
        } else {
            match monoio::time::timeout(until_ns(self.setup_deadline), read).await {
                Ok(done) => done,
                Err(_) => return Err(setup_timed_out(self.run.plan.connect_timeout)),
            }
        };
        self.buf = buf.into_inner();
        let now = monotonic_ns();
        match result {
            Ok(0) => Ok((Read::Eof, now)),
            Ok(n) => {
                self.watch.on_bytes(n, now, self.run.clock.get());
                Ok((Read::Data, now))
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Ok((Read::Stopped, now)),
            Err(e) => Err(ViewerError::io(&e, "read")),
        }
    }

    async fn write(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, ViewerError> {
        let write = self.stream.write_all(bytes);
        let (result, bytes) = if self.playing {
            write.await
        } else {
            monoio::time::timeout(until_ns(self.setup_deadline), write)
                .await
                .map_err(|_| setup_timed_out(self.run.plan.connect_timeout))?
        };
        result.map_err(|e| ViewerError::io(&e, "write"))?;
        Ok(bytes)
    }

    fn established(&mut self) {
        self.playing = true;
        self.ticket.established();
    }

    /// Notes one whole tag received at `now_ns`.
    fn tag(&mut self, tag_type: u8, prefix: &[u8], now_ns: u64) {
        let first = self.watch.on_tag(
            tag_type,
            prefix,
            now_ns,
            self.run.clock.get(),
            &self.run.latency_us,
        );
        if first {
            self.ticket.started();
        }
    }

    /// An end of stream or a read error once established.
    fn closed(&self, read: Result<Read, ViewerError>) -> Option<Result<ViewerEnd, ViewerError>> {
        match read {
            Ok(Read::Data) => None,
            Ok(Read::Stopped) => Some(Ok(ViewerEnd::Stopped)),
            Ok(Read::Eof) => Some(Ok(ViewerEnd::ByServer(ViewerError::new(
                "ClosedByServer",
                "end of stream",
            )))),
            Err(e) if self.playing => Some(Ok(ViewerEnd::ByServer(e))),
            Err(e) => Some(Err(e)),
        }
    }

    async fn http_flv(&mut self) -> Result<ViewerEnd, ViewerError> {
        let run = self.run;
        let plan = &run.plan;
        let request = format!(
            "GET /{}/{}.flv HTTP/1.1\r\nHost: {}\r\nUser-Agent: shoal-bench\r\nAccept: */*\r\n\r\n",
            plan.app, plan.stream, plan.target
        );
        self.write(request.into_bytes()).await?;
        let (head, now) = loop {
            let (read, now) = split_read(self.read().await);
            if let Some(end) = self.closed(read) {
                return end;
            }
            match parse_response_head(&self.buf) {
                Ok(Some(head)) => break (head, now),
                Ok(None) => {}
                Err(e) => return Err(ViewerError::new("BadResponse", e)),
            }
            if self.buf.len() == self.buf.capacity() {
                return Err(ViewerError::new("BadResponse", "response head too large"));
            }
        };
        if head.status != 200 {
            return Err(ViewerError::new(
                format!("HttpStatus{}", head.status),
                format!("GET answered {}", head.status),
            ));
        }
        self.established();
        let mut dechunker = head.chunked.then(Dechunker::new);
        let mut scanner = FlvScanner::new();
        let mut from = head.head_bytes;
        let mut now = now;
        loop {
            let buf = std::mem::take(&mut self.buf);
            let body = buf.get(from..).unwrap_or_default();
            let mut on_tag =
                |tag: super::scan::SeenTag<'_>| self.tag(tag.tag_type, tag.prefix, now);
            let fed = match dechunker.as_mut() {
                Some(d) => d.feed(body, |data| scanner.feed(data, &mut on_tag)),
                None => scanner.feed(body, &mut on_tag),
            };
            self.buf = buf;
            self.buf.clear();
            fed.map_err(|e| ViewerError::new("FlvMalformed", e.to_string()))?;
            if dechunker.as_ref().is_some_and(Dechunker::is_done) {
                return Ok(ViewerEnd::ByServer(ViewerError::new(
                    "StreamEnded",
                    "last chunk of the body",
                )));
            }
            from = 0;
            let (read, at) = split_read(self.read().await);
            now = at;
            if let Some(end) = self.closed(read) {
                return end;
            }
        }
    }

    async fn rtmp(&mut self) -> Result<ViewerEnd, ViewerError> {
        let run = self.run;
        let plan = &run.plan;
        let seed = u64::from(std::process::id()) << 32 ^ self.setup_deadline;
        let mut session = ClientSession::new(ClientConfig::default(), 0, seed);
        session.connect(&plan.app, &format!("rtmp://{}/{}", plan.target, plan.app));
        session.create_stream();
        let stream_name = plan.stream.as_str();
        let mut out = Vec::new();
        loop {
            if !session.pending_output().is_empty() {
                out.clear();
                out.extend_from_slice(session.pending_output());
                session.consume_output(out.len());
                out = self.write(out).await?;
            }
            if self.buf.len() == self.buf.capacity() {
                return Err(ViewerError::new(
                    "RtmpProtocol",
                    "a chunk head does not fit the read buffer",
                ));
            }
            let (read, now) = split_read(self.read().await);
            if let Some(end) = self.closed(read) {
                return end;
            }
            let buf = std::mem::take(&mut self.buf);
            let mut at = 0;
            let outcome = loop {
                let progress = match session.handle_input(buf.get(at..).unwrap_or_default()) {
                    Ok(progress) => progress,
                    Err(e) => break Err(ViewerError::new("RtmpProtocol", e.to_string())),
                };
                at += progress.consumed;
                let Some(media) = progress.media else {
                    break Ok(None);
                };
                let tag_type = match media.kind {
                    MediaKind::Audio => TAG_AUDIO,
                    MediaKind::Video => TAG_VIDEO,
                    MediaKind::Data => TAG_SCRIPT,
                };
                let prefix = media
                    .payload
                    .get(..BODY_PREFIX_BYTES)
                    .unwrap_or(media.payload);
                if !self.playing {
                    // Media before Play.Start: the server plays already.
                    self.established();
                }
                self.tag(tag_type, prefix, now);
                if let Some(end) = self.rtmp_events(&mut session, stream_name) {
                    break end.map(Some);
                }
            };
            self.buf = buf;
            self.buf.drain(..at.min(self.buf.len()));
            if let Some(end) = outcome? {
                return Ok(end);
            }
            if let Some(end) = self.rtmp_events(&mut session, stream_name) {
                return end;
            }
        }
    }

    /// Acts on the session's events; `Some` when the viewer is over.
    fn rtmp_events(
        &mut self,
        session: &mut ClientSession,
        stream_name: &str,
    ) -> Option<Result<ViewerEnd, ViewerError>> {
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::StreamCreated { stream_id } => session.play(stream_id, stream_name),
                ClientEvent::Status { code, .. } if code == status::PLAY_START && !self.playing => {
                    self.established();
                }
                ClientEvent::Status {
                    level,
                    code,
                    description,
                    ..
                } if level == "error"
                    || code == status::PLAY_STREAM_NOT_FOUND
                    || code == status::PLAY_FAILED
                    || code == status::PLAY_UNPUBLISH_NOTIFY =>
                {
                    let error = ViewerError::new(code, description);
                    return Some(if self.playing {
                        Ok(ViewerEnd::ByServer(error))
                    } else {
                        Err(error)
                    });
                }
                ClientEvent::ConnectRejected { code, description } => {
                    return Some(Err(ViewerError::new(
                        "ConnectRejected",
                        format!("{code}: {description}"),
                    )));
                }
                ClientEvent::CommandFailed { name, code } => {
                    return Some(Err(ViewerError::new(
                        "CommandFailed",
                        format!("{name}: {code}"),
                    )));
                }
                ClientEvent::StreamEof { .. } if self.playing => {
                    return Some(Ok(ViewerEnd::ByServer(ViewerError::new(
                        "StreamEnded",
                        "Stream EOF",
                    ))));
                }
                _ => {}
            }
        }
        None
    }
}

fn setup_timed_out(limit: Duration) -> ViewerError {
    ViewerError::new(
        "SetupTimedOut",
        format!("not playing within {limit:?} of connecting"),
    )
}

/// A read's outcome and its completion time (0 for an error).
fn split_read(read: Result<(Read, u64), ViewerError>) -> (Result<Read, ViewerError>, u64) {
    match read {
        Ok((read, now)) => (Ok(read), now),
        Err(e) => (Err(e), 0),
    }
}
