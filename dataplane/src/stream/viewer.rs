//! One viewer of a stream: its bounded queue (the connection's write half,
//! holding shared tags, never copies) and what it does when it falls
//! behind: skip to the next keyframe, and after `max_viewer_lag` of
//! skipping, end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Instant;

use shoal_protocols::config::StreamSettings;
use shoal_protocols::flv::{write_header, TagKind};
use shoal_protocols::rtmp::{chunk_head, media_chunk_head, MediaKind};
use shoal_protocols::websocket::{write_frame_head, Opcode, MAX_FRAME_HEAD_BYTES};

use super::gop::GopCache;
use super::tag::MediaTag;
use crate::core::{Core, DeferredFlush};
use crate::outq::Segment;
use crate::writer::{Sent, Writer};

/// How the viewer gets its tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewerProto {
    /// An HTTP/1.1 chunked body of FLV.
    HttpFlv,
    /// FLV in WebSocket binary frames (one tag per frame).
    WsFlv,
    /// RTMP media messages on message stream `stream_id`, in chunks of
    /// `chunk_bytes`.
    Rtmp { stream_id: u32, chunk_bytes: u32 },
}

/// Where a viewer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waits for a keyframe to start on.
    Joining,
    /// Gets every tag.
    Live,
    /// Fell behind: drops tags until a keyframe fits, since then.
    Skipping(Instant),
}

/// Why a viewer's stream ended (the task closes the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewerEnd {
    /// The publisher left: a clean end of the stream.
    Unpublished,
    /// It stayed behind past `max_viewer_lag`.
    TooSlow,
    /// Its connection failed or closed.
    Closed,
    /// The data plane or its listener is going away.
    Shutdown,
}

/// What happened to one offered tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued or written.
    Sent,
    /// Not for it (joining, or a tag it had to drop).
    Dropped,
    /// Dropped because it is behind (counted as a skipped tag).
    Skipped,
    /// It has ended; take it off the stream.
    Ended,
}

/// A viewer on this core.
#[derive(Debug)]
pub(crate) struct Viewer {
    core: Rc<Core>,
    proto: Cell<ViewerProto>,
    pub(crate) writer: Writer,
    me: Weak<dyn DeferredFlush>,
    phase: Cell<Phase>,
    /// Per queued tag: its timestamp and where it ends in the bytes
    /// handed to the writer (to know the media time still queued).
    clock: RefCell<VecDeque<(u32, u64)>>,
    handed: Cell<u64>,
    header_sent: Cell<bool>,
    ended: Cell<Option<ViewerEnd>>,
    pub(crate) skipped: Cell<u64>,
}

impl Viewer {
    pub(crate) fn new(core: &Rc<Core>, proto: ViewerProto, fd: std::os::fd::RawFd) -> Rc<Self> {
        let limit = core.settings.borrow().streams.viewer_queue_bytes as usize;
        Rc::new_cyclic(|me: &Weak<Self>| {
            let me: Weak<dyn DeferredFlush> = me.clone();
            Self {
                core: Rc::clone(core),
                proto: Cell::new(proto),
                writer: Writer::of_shared(fd, limit),
                me,
                phase: Cell::new(Phase::Joining),
                clock: RefCell::new(VecDeque::new()),
                handed: Cell::new(0),
                header_sent: Cell::new(false),
                ended: Cell::new(None),
                skipped: Cell::new(0),
            }
        })
    }

    pub(crate) fn proto(&self) -> ViewerProto {
        self.proto.get()
    }

    /// An RTMP connection becomes a player of message stream `stream_id`.
    pub(crate) fn set_proto(&self, proto: ViewerProto) {
        self.proto.set(proto);
    }

    /// Why it ended, once it has.
    pub(crate) fn ended(&self) -> Option<ViewerEnd> {
        self.ended.get()
    }

    /// Ends it (first reason wins) and wakes its task.
    pub(crate) fn end(&self, why: ViewerEnd) {
        if self.ended.get().is_none() {
            self.ended.set(Some(why));
        }
        self.writer.kick.kick();
    }

    /// Starts it on what `cache` holds when there is a cached GOP: the FLV
    /// header, the stream's headers, the GOP. Else it waits for the next
    /// keyframe (and gets the headers then: by then they are known).
    pub(crate) fn start(&self, cache: &GopCache) {
        let Some(first) = cache.gop().first() else {
            return;
        };
        if !cache.is_start_point(first) {
            return;
        }
        self.core.begin_batch();
        self.begin(cache);
        for tag in cache.gop() {
            if self.send(tag, false) != Sent::Queued {
                self.fall_behind();
                break;
            }
        }
        self.core.end_batch();
    }

    /// The FLV header and the stream's headers; from now on it is live.
    fn begin(&self, cache: &GopCache) {
        self.send_file_header(cache);
        for tag in cache.headers() {
            self.send(tag, true);
        }
        self.phase.set(Phase::Live);
    }

    /// Offers one live tag (already in `cache`).
    pub(crate) fn offer(
        &self,
        tag: &Rc<MediaTag>,
        cache: &GopCache,
        settings: &StreamSettings,
    ) -> Offered {
        if self.ended.get().is_some() {
            return Offered::Ended;
        }
        let phase = self.phase.get();
        if tag.role.is_header() {
            if phase == Phase::Joining {
                // Sent from the cache when it starts.
                return Offered::Dropped;
            }
            // Decoder configuration changes reach every viewer.
            return match self.send(tag, true) {
                Sent::Closed => self.closed(),
                _ => Offered::Sent,
            };
        }
        match phase {
            Phase::Joining => {
                if !cache.is_start_point(tag) {
                    return Offered::Dropped;
                }
                self.begin(cache);
                self.resume(tag)
            }
            Phase::Skipping(since) => {
                // Resume only once the backlog is back under the media-time
                // bound (else the lag clock would restart at every keyframe).
                let drained = self.queued_duration_ms(tag.timestamp)
                    <= settings.viewer_queue_duration.as_millis() as u64;
                if drained && cache.is_start_point(tag) {
                    let outcome = self.resume(tag);
                    if outcome == Offered::Sent {
                        return outcome;
                    }
                }
                self.skipped.set(self.skipped.get() + 1);
                if since.elapsed() > settings.max_viewer_lag {
                    self.end(ViewerEnd::TooSlow);
                    return Offered::Ended;
                }
                Offered::Skipped
            }
            Phase::Live => {
                if self.queued_duration_ms(tag.timestamp)
                    > settings.viewer_queue_duration.as_millis() as u64
                {
                    return self.fall_behind();
                }
                match self.send(tag, false) {
                    Sent::Queued | Sent::Discarded => Offered::Sent,
                    Sent::NoRoom => self.fall_behind(),
                    Sent::Closed => self.closed(),
                }
            }
        }
    }

    fn resume(&self, tag: &Rc<MediaTag>) -> Offered {
        match self.send(tag, false) {
            Sent::Queued | Sent::Discarded => {
                self.phase.set(Phase::Live);
                Offered::Sent
            }
            Sent::NoRoom => Offered::Skipped,
            Sent::Closed => self.closed(),
        }
    }

    fn fall_behind(&self) -> Offered {
        if !matches!(self.phase.get(), Phase::Skipping(_)) {
            self.phase.set(Phase::Skipping(Instant::now()));
        }
        self.skipped.set(self.skipped.get() + 1);
        Offered::Skipped
    }

    fn closed(&self) -> Offered {
        self.end(ViewerEnd::Closed);
        Offered::Ended
    }

    /// Media time between the oldest tag not yet written and `now_ts`.
    fn queued_duration_ms(&self, now_ts: u32) -> u64 {
        let written = self.handed.get() - self.writer.queued_bytes() as u64;
        let mut clock = self.clock.borrow_mut();
        while clock.front().is_some_and(|(_, end)| *end <= written) {
            clock.pop_front();
        }
        if clock.is_empty() && clock.capacity() > 16 {
            // A burst (the GOP a viewer starts on) grew it; give it back.
            *clock = VecDeque::new();
        }
        clock
            .front()
            .map_or(0, |(ts, _)| u64::from(now_ts.wrapping_sub(*ts)))
    }

    fn send_file_header(&self, cache: &GopCache) {
        if self.header_sent.replace(true) {
            return;
        }
        let mut header = Vec::with_capacity(13);
        match self.proto.get() {
            ViewerProto::HttpFlv | ViewerProto::WsFlv => {
                write_header(&mut header, cache.has_audio(), cache.has_video());
            }
            ViewerProto::Rtmp { .. } => return,
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(3);
        self.frame(header.len(), &mut segments);
        segments.push(Segment::inline(&header));
        self.trail(&mut segments);
        self.write(&segments, true, None);
    }

    /// Writes (or queues) `tag`, whole or not at all. The segment list is
    /// the core's scratch (no allocation per tag and viewer), emptied
    /// again so it holds no tag.
    fn send(&self, tag: &Rc<MediaTag>, force: bool) -> Sent {
        SEGMENTS.with_borrow_mut(|segments| {
            match self.proto.get() {
                ViewerProto::HttpFlv | ViewerProto::WsFlv => {
                    self.frame(tag.len(), segments);
                    segments.push(Segment::Payload(tag.packed.clone()));
                    self.trail(segments);
                }
                ViewerProto::Rtmp {
                    stream_id,
                    chunk_bytes,
                } => rtmp_segments(tag, stream_id, chunk_bytes, segments),
            }
            let sent = self.write(segments, force, Some(tag.timestamp));
            segments.clear();
            sent
        })
    }

    /// Writes (or queues) protocol bytes that carry no media.
    pub(crate) fn send_segments(&self, segments: &[Segment], force: bool) -> Sent {
        self.write(segments, force, None)
    }

    fn write(&self, segments: &[Segment], force: bool, timestamp: Option<u32>) -> Sent {
        let total: usize = segments.iter().map(|s| s.as_slice().len()).sum();
        let gather =
            timestamp.is_some() && !self.core.settings.borrow().streams.write_interval.is_zero();
        let sent = if gather {
            self.writer
                .send_later(&self.core, &self.me, segments, total, force)
        } else {
            self.writer
                .send(&self.core, &self.me, segments, total, force)
        };
        if sent == Sent::Queued {
            let end = self.handed.get() + total as u64;
            self.handed.set(end);
            if let Some(ts) = timestamp {
                self.clock.borrow_mut().push_back((ts, end));
            }
        }
        sent
    }

    /// What goes before `len` bytes of FLV.
    fn frame(&self, len: usize, segments: &mut Vec<Segment>) {
        match self.proto.get() {
            ViewerProto::HttpFlv => {
                let (line, n) = chunk_size_line(len);
                segments.push(Segment::inline(line.get(..n).unwrap_or_default()));
            }
            ViewerProto::WsFlv => {
                let mut head = [0u8; MAX_FRAME_HEAD_BYTES];
                let n = write_frame_head(&mut head, true, Opcode::Binary, len as u64, None);
                segments.push(Segment::inline(head.get(..n).unwrap_or_default()));
            }
            ViewerProto::Rtmp { .. } => {}
        }
    }

    /// What goes after a piece of FLV.
    fn trail(&self, segments: &mut Vec<Segment>) {
        if self.proto.get() == ViewerProto::HttpFlv {
            segments.push(Segment::inline(b"\r\n"));
        }
    }
}

impl DeferredFlush for Viewer {
    fn flush_deferred(&self) {
        self.writer.flush_deferred(&self.core);
    }
}

thread_local! {
    /// The segments of the tag being sent, reused (one per core thread).
    static SEGMENTS: RefCell<Vec<Segment>> = const { RefCell::new(Vec::new()) };
}

/// An HTTP/1.1 chunk-size line for `len` bytes: hex digits, CRLF.
fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    let mut line = [0u8; 18];
    let digits = ((usize::BITS - len.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, slot) in line.iter_mut().take(digits).enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xF;
        *slot = b"0123456789abcdef"[nibble];
    }
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    (line, digits + 2)
}

/// The RTMP chunks of one media message: a type-0 head, the data, and a
/// type-3 head before every further `chunk_bytes` of it.
fn rtmp_segments(tag: &MediaTag, stream_id: u32, chunk_bytes: u32, segments: &mut Vec<Segment>) {
    let kind = match tag.kind {
        TagKind::Audio => MediaKind::Audio,
        TagKind::Video => MediaKind::Video,
        _ => MediaKind::Data,
    };
    let data = tag.data();
    let len = data.len();
    let (head, used) = media_chunk_head(
        kind.csid(),
        tag.timestamp,
        kind.type_id(),
        stream_id,
        u32::try_from(len).unwrap_or(u32::MAX),
    );
    segments.push(Segment::inline(head.get(..used).unwrap_or_default()));
    let chunk = (chunk_bytes as usize).max(1);
    let mut at = 0;
    while at < len {
        if at > 0 {
            let (cont, used) = chunk_head(3, kind.csid(), tag.timestamp, 0, 0, 0);
            segments.push(Segment::inline(cont.get(..used).unwrap_or_default()));
        }
        let end = (at + chunk).min(len);
        segments.push(Segment::Payload(data.slice(at..end)));
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_size_line;

    #[test]
    fn chunk_size_lines_are_lowercase_hex_and_crlf() {
        for len in [
            0usize,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            4096,
            65_535,
            0x00AB_CDEF,
            usize::MAX,
        ] {
            let (line, n) = chunk_size_line(len);
            assert_eq!(&line[..n], format!("{len:x}\r\n").as_bytes(), "{len}");
        }
    }
}
