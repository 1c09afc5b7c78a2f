//! The one publisher: an RTMP connection from a monoio thread of the parent
//! process that publishes the synthetic stream live, paced to its schedule.
//!
//! ```text
//! connect ─ handshake, connect(app), releaseStream/FCPublish, createStream ─ publish(name, live)
//!   ─ NetStream.Publish.Start ─ "publishing at t0" ─ onMetaData, AVC and AAC sequence headers
//!   ─ loop until stop: sleep until the next tag is due ─ stamp it ─ send every due tag ─ one write
//! reader task: reads the server's messages (acknowledgements, pings) into the same session
//! ```
//!
//! Video frame k is due at t0 + k/fps, audio frame j at t0 + j x 1024/48000 s;
//! RTMP timestamps are milliseconds since t0. A tag is stamped when it is
//! handed to the session, so its lateness (publisher lag = stamp - due) is
//! not counted as server latency. When writes block (server backpressure)
//! tags fall behind; a tag more than one GOP late is dropped (and video
//! resumes at the next keyframe) so the publisher never bursts more than
//! one GOP to catch up. Dropped tags use no sequence number, so viewers see
//! no gap for them.

use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use monoio::{
    buf::IoBufMut as _,
    io::{
        AsyncReadRent as _, AsyncWriteRentExt as _, CancelHandle, CancelableAsyncReadRent as _,
        Canceller, OwnedReadHalf, OwnedWriteHalf, Splitable as _,
    },
    net::TcpStream,
};
use serde::Serialize;
use shoal_protocols::rtmp::{
    status, ClientConfig, ClientEvent, ClientSession, MediaKind, PublishType,
};

use super::media::{
    aac_sequence_header, avc_sequence_header, write_audio_body, write_video_body, Probe,
    StreamShape, Track,
};
use crate::{
    clock::{duration_ns, monotonic_ns, sleep_until_ns, until_ns},
    net::connect_from,
    report::{new_latency_histogram, LatencySummaryUs},
    runtime::spawn_pinned,
};

/// Bytes read at once from the server.
const READ_BYTES: usize = 16 * 1024;

/// What the publisher is told to do.
#[derive(Debug, Clone)]
pub(crate) struct PublisherPlan {
    pub(crate) target: SocketAddr,
    pub(crate) app: String,
    pub(crate) stream: String,
    pub(crate) shape: StreamShape,
    /// Connect to Publish.Start.
    pub(crate) setup_timeout: Duration,
    /// The publisher stops by itself after this long, whatever happens.
    pub(crate) life_limit: Duration,
    pub(crate) cpu: usize,
}

/// What the parent tells the running publisher.
#[derive(Debug, Default)]
struct PublisherControl {
    stop: AtomicBool,
    /// The measured window (0 until known).
    measure_start_ns: AtomicU64,
    end_ns: AtomicU64,
}

impl PublisherControl {
    fn in_window(&self, ns: u64) -> bool {
        let start = self.measure_start_ns.load(Ordering::Relaxed);
        start != 0 && (start..self.end_ns.load(Ordering::Relaxed)).contains(&ns)
    }
}

/// What the publisher did.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct PublisherReport {
    pub(crate) tags_sent: u64,
    pub(crate) video_tags_sent: u64,
    pub(crate) audio_tags_sent: u64,
    /// Tag body bytes sent (sequence headers and metadata included).
    pub(crate) body_bytes_sent: u64,
    /// Media tags stamped in the measured window: each one should reach
    /// every viewer.
    pub(crate) tags_sent_measured: u64,
    /// Tags more than one GOP late, not sent.
    pub(crate) tags_dropped: u64,
    /// Lateness of the tags due in the measured window, µs.
    pub(crate) lag_us: Option<LatencySummaryUs>,
    /// Largest lateness over the whole run, µs.
    pub(crate) lag_max_us: u64,
    /// Why it stopped early, if it did.
    pub(crate) error: Option<String>,
}

enum PublisherEvent {
    /// Publish.Start arrived; media starts at this instant.
    Publishing(u64),
    Finished(PublisherReport),
}

/// The running publisher thread. Dropping it tells the thread to stop.
pub(crate) struct Publisher {
    control: Arc<PublisherControl>,
    events: mpsc::Receiver<PublisherEvent>,
    thread: Option<JoinHandle<()>>,
    finished: Option<PublisherReport>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("finished", &self.finished.is_some())
            .finish()
    }
}

impl Publisher {
    /// Starts the publisher thread (pinned to `plan.cpu`).
    pub(crate) fn start(plan: PublisherPlan) -> anyhow::Result<Self> {
        let control = Arc::new(PublisherControl::default());
        let (tx, events) = mpsc::channel();
        let on_build_error = {
            let tx = tx.clone();
            move |reason: String| {
                let _ = tx.send(PublisherEvent::Finished(PublisherReport {
                    error: Some(reason),
                    ..PublisherReport::default()
                }));
            }
        };
        let shared = Arc::clone(&control);
        let cpu = plan.cpu;
        let thread = spawn_pinned(
            "flv-publisher".to_owned(),
            cpu,
            move || publish(plan, shared, tx),
            on_build_error,
        )
        .context("cannot start the publisher thread")?;
        Ok(Self {
            control,
            events,
            thread: Some(thread),
            finished: None,
        })
    }

    /// Waits for Publish.Start; the instant media started.
    pub(crate) fn wait_publishing(&mut self, limit: Duration) -> anyhow::Result<u64> {
        match self.events.recv_timeout(limit) {
            Ok(PublisherEvent::Publishing(t0)) => Ok(t0),
            Ok(PublisherEvent::Finished(report)) => {
                let why = report
                    .error
                    .clone()
                    .unwrap_or_else(|| "it stopped".to_owned());
                self.finished = Some(report);
                bail!("the publisher could not publish: {why}")
            }
            Err(_) => bail!("the publisher did not start publishing within {limit:?}"),
        }
    }

    /// The error the publisher stopped with, if it already has.
    pub(crate) fn failure(&mut self) -> Option<String> {
        if self.finished.is_none() {
            if let Ok(PublisherEvent::Finished(report)) = self.events.try_recv() {
                self.finished = Some(report);
            }
        }
        self.finished.as_ref().map(|r| {
            r.error
                .clone()
                .unwrap_or_else(|| "it stopped early".to_owned())
        })
    }

    /// Tells the publisher which tags are in the measured window.
    pub(crate) fn set_window(&self, measure_start_ns: u64, end_ns: u64) {
        self.control.end_ns.store(end_ns, Ordering::Relaxed);
        self.control
            .measure_start_ns
            .store(measure_start_ns, Ordering::Relaxed);
    }

    /// Stops the publisher and returns what it did (waits at most `limit`).
    pub(crate) fn stop(mut self, limit: Duration) -> PublisherReport {
        self.control.stop.store(true, Ordering::Relaxed);
        let report = match self.finished.take() {
            Some(report) => report,
            None => loop {
                match self.events.recv_timeout(limit) {
                    Ok(PublisherEvent::Finished(report)) => break report,
                    Ok(PublisherEvent::Publishing(_)) => {}
                    Err(_) => {
                        break PublisherReport {
                            error: Some(format!("the publisher did not stop within {limit:?}")),
                            ..PublisherReport::default()
                        }
                    }
                }
            },
        };
        if let Some(thread) = self.thread.take() {
            if report.error.is_none() || thread.is_finished() {
                let _ = thread.join();
            }
        }
        report
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
    }
}

async fn publish(
    plan: PublisherPlan,
    control: Arc<PublisherControl>,
    events: mpsc::Sender<PublisherEvent>,
) {
    let mut report = PublisherReport::default();
    if let Err(e) = run(&plan, &control, &events, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    let _ = events.send(PublisherEvent::Finished(report));
}

type Reader = OwnedReadHalf<TcpStream>;
type Writer = OwnedWriteHalf<TcpStream>;

/// Writes what the session has pending; `out` is reused.
async fn flush(
    session: &RefCell<ClientSession>,
    writer: &mut Writer,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    {
        let mut session = session.borrow_mut();
        let pending = session.pending_output();
        if pending.is_empty() {
            return Ok(());
        }
        out.clear();
        out.extend_from_slice(pending);
        let n = pending.len();
        session.consume_output(n);
    }
    let (result, buf) = writer.write_all(std::mem::take(out)).await;
    *out = buf;
    result.context("cannot write to the server")?;
    Ok(())
}

/// Feeds `buf` to the session (keeping an unfinished chunk head) and
/// returns its events.
fn take_input(
    session: &RefCell<ClientSession>,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Vec<ClientEvent>> {
    let mut session = session.borrow_mut();
    let mut at = 0;
    loop {
        let progress = session
            .handle_input(buf.get(at..).unwrap_or_default())
            .context("bad RTMP from the server")?;
        at += progress.consumed;
        if progress.media.is_none() {
            break;
        }
    }
    buf.drain(..at.min(buf.len()));
    Ok(std::iter::from_fn(|| session.poll_event()).collect())
}

/// Connects and publishes; returns the message stream id.
async fn set_up(
    plan: &PublisherPlan,
    session: &RefCell<ClientSession>,
    reader: &mut Reader,
    writer: &mut Writer,
    inbox: &mut Vec<u8>,
) -> anyhow::Result<u32> {
    let mut out = Vec::new();
    loop {
        flush(session, writer, &mut out).await?;
        let buf = std::mem::take(inbox);
        let (filled, capacity) = (buf.len(), buf.capacity());
        let (read, buf) = reader.read(buf.slice_mut(filled..capacity)).await;
        *inbox = buf.into_inner();
        if read.context("cannot read from the server")? == 0 {
            bail!("the server closed the connection during publish setup");
        }
        for event in take_input(session, inbox)? {
            match event {
                ClientEvent::ConnectRejected { code, description } => {
                    bail!("connect refused: {code} ({description})")
                }
                ClientEvent::CommandFailed { name, code } if name == "createStream" => {
                    bail!("createStream failed: {code}")
                }
                ClientEvent::StreamCreated { stream_id } => {
                    session
                        .borrow_mut()
                        .publish(stream_id, &plan.stream, PublishType::Live);
                }
                ClientEvent::Status {
                    stream_id, code, ..
                } if code == status::PUBLISH_START => {
                    flush(session, writer, &mut out).await?;
                    return Ok(stream_id);
                }
                ClientEvent::Status {
                    level,
                    code,
                    description,
                    ..
                } if level == "error" => bail!("publish refused: {code} ({description})"),
                _ => {}
            }
        }
        if inbox.len() == inbox.capacity() {
            bail!("an RTMP chunk head does not fit the publisher's read buffer");
        }
    }
}

/// Reads the server's messages until cancelled; an end of stream, an error
/// or an error status is left in `failure`.
async fn read_server(
    mut reader: Reader,
    session: Rc<RefCell<ClientSession>>,
    failure: Rc<RefCell<Option<String>>>,
    cancel: CancelHandle,
    mut inbox: Vec<u8>,
) {
    loop {
        if inbox.len() == inbox.capacity() {
            inbox.reserve(READ_BYTES);
        }
        let (filled, capacity) = (inbox.len(), inbox.capacity());
        let (read, buf) = reader
            .cancelable_read(inbox.slice_mut(filled..capacity), cancel.clone())
            .await;
        inbox = buf.into_inner();
        let why = match read {
            Ok(0) => "the server closed the publisher's connection".to_owned(),
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
            Err(e) => format!("reading from the server failed: {e}"),
            Ok(_) => match take_input(&session, &mut inbox) {
                Ok(events) => match events.into_iter().find_map(|e| match e {
                    ClientEvent::Status {
                        level,
                        code,
                        description,
                        ..
                    } if level == "error" => Some(format!("{code} ({description})")),
                    _ => None,
                }) {
                    Some(status) => format!("the server sent an error status: {status}"),
                    None => continue,
                },
                Err(e) => format!("{e:#}"),
            },
        };
        *failure.borrow_mut() = Some(why);
        return;
    }
}

async fn run(
    plan: &PublisherPlan,
    control: &PublisherControl,
    events: &mpsc::Sender<PublisherEvent>,
    report: &mut PublisherReport,
) -> anyhow::Result<()> {
    let stream = connect_from(None, plan.target, plan.setup_timeout)
        .await
        .with_context(|| format!("cannot connect to {}", plan.target))?;
    let (mut reader, mut writer) = stream.into_split();
    let seed = u64::from(std::process::id());
    let session = Rc::new(RefCell::new(ClientSession::new(
        ClientConfig::default(),
        0,
        seed,
    )));
    {
        let mut s = session.borrow_mut();
        s.connect(&plan.app, &format!("rtmp://{}/{}", plan.target, plan.app));
        s.announce_publish(&plan.stream);
        s.create_stream();
    }
    let mut inbox = Vec::with_capacity(READ_BYTES);
    let setup = set_up(plan, &session, &mut reader, &mut writer, &mut inbox);
    let stream_id = monoio::time::timeout(plan.setup_timeout, setup)
        .await
        .map_err(|_| anyhow!("no NetStream.Publish.Start within {:?}", plan.setup_timeout))??;

    let t0 = monotonic_ns();
    let _ = events.send(PublisherEvent::Publishing(t0));
    let shape = &plan.shape;
    {
        let mut s = session.borrow_mut();
        s.send_metadata(stream_id, &shape.metadata());
        let avc = avc_sequence_header();
        s.send_media(stream_id, MediaKind::Video, 0, &avc);
        report.body_bytes_sent += avc.len() as u64;
        if shape.audio_tag_bytes.is_some() {
            let aac = aac_sequence_header();
            s.send_media(stream_id, MediaKind::Audio, 0, &aac);
            report.body_bytes_sent += aac.len() as u64;
        }
    }
    let mut out = Vec::new();
    flush(&session, &mut writer, &mut out).await?;

    let failure = Rc::new(RefCell::new(None));
    let canceller = Canceller::new();
    let reader_task = monoio::spawn(read_server(
        reader,
        Rc::clone(&session),
        Rc::clone(&failure),
        canceller.handle(),
        inbox,
    ));
    let live = Live {
        plan,
        control,
        session: &session,
        failure: &failure,
        stream_id,
        t0,
    };
    let paced = live.pace(&mut writer, &mut out, report).await;
    canceller.cancel();
    reader_task.await;
    paced?;
    if let Some(why) = failure.borrow_mut().take() {
        bail!(why);
    }
    Ok(())
}

/// The publishing connection once Publish.Start arrived.
struct Live<'a> {
    plan: &'a PublisherPlan,
    control: &'a PublisherControl,
    session: &'a RefCell<ClientSession>,
    /// Set by the reader task when the server ends the connection.
    failure: &'a RefCell<Option<String>>,
    stream_id: u32,
    /// When media started (timestamp 0).
    t0: u64,
}

impl Live<'_> {
    /// Sends the media on schedule until told to stop.
    async fn pace(
        &self,
        writer: &mut Writer,
        out: &mut Vec<u8>,
        report: &mut PublisherReport,
    ) -> anyhow::Result<()> {
        let Self {
            plan,
            control,
            session,
            failure,
            stream_id,
            t0,
        } = *self;
        let shape = &plan.shape;
        let gop_ns = shape.gop_ns();
        let give_up_ns = t0 + duration_ns(plan.life_limit);
        let mut lag_us = new_latency_histogram();
        let (mut video_k, mut audio_j) = (0u64, 0u64);
        let mut seq = [0u64; 2];
        let mut video_resync = false;
        let mut body = Vec::with_capacity(shape.keyframe_bytes);
        loop {
            if control.stop.load(Ordering::Relaxed) || failure.borrow().is_some() {
                break;
            }
            if until_ns(give_up_ns).is_zero() {
                bail!("still publishing after {:?}: stopped", plan.life_limit);
            }
            let video_due = t0 + shape.video_due_ns(video_k);
            let audio_due = match shape.audio_tag_bytes {
                Some(_) => t0 + StreamShape::audio_due_ns(audio_j),
                None => u64::MAX,
            };
            let due = video_due.min(audio_due);
            let now = monotonic_ns();
            if due > now {
                flush(session, writer, out).await?;
                sleep_until_ns(due).await;
                continue;
            }
            let track = if video_due <= audio_due {
                Track::Video
            } else {
                Track::Audio
            };
            let frame = match track {
                Track::Video => video_k,
                Track::Audio => audio_j,
            };
            match track {
                Track::Video => video_k += 1,
                Track::Audio => audio_j += 1,
            }
            let keyframe = track == Track::Video && shape.is_keyframe(frame);
            let late_ns = now - due;
            if late_ns > gop_ns || (track == Track::Video && video_resync && !keyframe) {
                report.tags_dropped += 1;
                video_resync |= track == Track::Video;
                continue;
            }
            if keyframe {
                video_resync = false;
            }
            let sent_ns = monotonic_ns();
            let probe = Probe {
                seq: seq[track as usize],
                sent_ns,
            };
            seq[track as usize] += 1;
            let (kind, counter) = match track {
                Track::Video => {
                    write_video_body(&mut body, keyframe, shape.video_bytes(frame), probe);
                    (MediaKind::Video, &mut report.video_tags_sent)
                }
                Track::Audio => {
                    write_audio_body(&mut body, shape.audio_tag_bytes.unwrap_or(0), probe);
                    (MediaKind::Audio, &mut report.audio_tags_sent)
                }
            };
            *counter += 1;
            let timestamp_ms = ((due - t0) / 1_000_000) as u32;
            session
                .borrow_mut()
                .send_media(stream_id, kind, timestamp_ms, &body);
            report.tags_sent += 1;
            report.body_bytes_sent += body.len() as u64;
            let lag = sent_ns.saturating_sub(due) / 1_000;
            report.lag_max_us = report.lag_max_us.max(lag);
            if control.in_window(due) {
                lag_us.saturating_record(lag.max(1));
            }
            if control.in_window(sent_ns) {
                report.tags_sent_measured += 1;
            }
        }
        flush(session, writer, out).await?;
        report.lag_us = LatencySummaryUs::of(&lag_us);
        Ok(())
    }
}
