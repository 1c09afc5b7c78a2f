//! A connection's outbound queue, bounded in bytes, and the vectored
//! non-blocking writes that drain it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use shoal_protocols::framing::MAX_HEADER_BYTES;

use crate::pool::{Payload, PoolBuf, SlabPool};

/// Most bytes an inline segment holds.
pub(crate) const MAX_INLINE_BYTES: usize = MAX_HEADER_BYTES;

/// Most slices handed to one `sendmsg`.
const MAX_IOV: usize = 64;

/// Bytes waiting to be written: framing headers, shared payloads,
/// trailers. Payloads are `Rc` slices of pool buffers, never copied.
#[derive(Debug, Clone)]
pub(crate) enum Segment {
    /// A small header, kept inline.
    Inline {
        bytes: [u8; MAX_HEADER_BYTES],
        start: u8,
        end: u8,
    },
    /// A message payload.
    Payload(Payload),
    /// Bytes shared by every message of a listener (a delimiter).
    Shared { bytes: Rc<[u8]>, start: usize },
}

impl Segment {
    /// An inline segment holding `bytes` (at most `MAX_HEADER_BYTES`).
    pub(crate) fn inline(bytes: &[u8]) -> Self {
        let mut buf = [0u8; MAX_HEADER_BYTES];
        let n = bytes.len().min(MAX_HEADER_BYTES);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        Self::Inline {
            bytes: buf,
            start: 0,
            end: u8::try_from(n).unwrap_or(0),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { bytes, start, end } => bytes
                .get(*start as usize..*end as usize)
                .unwrap_or_default(),
            Self::Payload(p) => p.as_slice(),
            Self::Shared { bytes, start } => bytes.get(*start..).unwrap_or_default(),
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Drops the first `n` bytes (n < len).
    fn advance(&mut self, n: usize) {
        match self {
            Self::Inline { start, end, .. } => {
                *start = start
                    .saturating_add(u8::try_from(n).unwrap_or(u8::MAX))
                    .min(*end);
            }
            Self::Payload(p) => *p = p.skip(n),
            Self::Shared { start, .. } => *start += n,
        }
    }
}

/// The queue of one connection.
#[derive(Debug)]
pub(crate) struct OutQueue {
    segments: VecDeque<Segment>,
    queued_bytes: usize,
    limit_bytes: usize,
    /// Segments queued since the last compaction (or since the queue was
    /// last empty): each may hold a whole pool buffer for a few bytes.
    loose_segments: usize,
    /// False for queues of shared bytes (a viewer's tags, which every
    /// viewer of the core holds): copying them would multiply them.
    compacts: bool,
}

/// Segments an empty queue keeps room for: a burst (a new viewer's GOP,
/// a downlink backlog) grows the ring, and a connection that has caught
/// up must not keep that room for its whole life. Rings up to this size
/// stay (a viewer's round of gathered tags fits, so it is not reallocated
/// every round).
const KEEP_EMPTY_SEGMENTS: usize = 32;

/// Loose segments a queue may hold before it is compacted.
pub(crate) const COMPACT_AFTER_SEGMENTS: usize = 64;

/// The class compacted bytes are copied into.
const COMPACT_BUFFER_BYTES: usize = 4096;

impl OutQueue {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        Self {
            segments: VecDeque::new(),
            queued_bytes: 0,
            limit_bytes,
            loose_segments: 0,
            compacts: true,
        }
    }

    /// A queue that never compacts: what it holds is shared (tags every
    /// viewer of a stream holds), so a copy would cost more than it frees.
    pub(crate) fn of_shared(limit_bytes: usize) -> Self {
        Self {
            compacts: false,
            ..Self::new(limit_bytes)
        }
    }

    /// Whether enough loose segments are queued to be worth compacting.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.compacts && self.loose_segments >= COMPACT_AFTER_SEGMENTS
    }

    /// Copies the queued bytes into as few fresh pool buffers as they fill,
    /// so that a queue that waits (a slow reader, an upstream that is down)
    /// holds about its queued bytes of pool memory, not one read buffer per
    /// message. Stops early, keeping the rest as it is, when the pool has
    /// no buffer to spare.
    pub(crate) fn compact(&mut self, pool: &SlabPool) {
        let mut compacted: VecDeque<Segment> = VecDeque::new();
        let mut current: Option<PoolBuf> = None;
        while let Some(segment) = self.segments.pop_front() {
            let mut bytes = segment.as_slice();
            while !bytes.is_empty() {
                let full = current.as_ref().is_none_or(|b| b.len() == b.capacity());
                if full {
                    if let Some(done) = current.take() {
                        compacted.push_back(Segment::Payload(Payload::whole(done)));
                    }
                    current = pool.try_acquire(COMPACT_BUFFER_BYTES);
                }
                let Some(buf) = current.as_mut() else {
                    break;
                };
                let n = bytes.len().min(buf.capacity() - buf.len());
                let (head, tail) = bytes.split_at(n);
                buf.extend_from_slice(head);
                bytes = tail;
            }
            if !bytes.is_empty() {
                // Out of buffers: this segment's rest and everything after
                // it stay as they are, in order.
                let rest = segment.len() - bytes.len();
                let mut segment = segment.clone();
                segment.advance(rest);
                if let Some(done) = current.take() {
                    compacted.push_back(Segment::Payload(Payload::whole(done)));
                }
                compacted.push_back(segment);
                compacted.extend(self.segments.drain(..));
                break;
            }
        }
        if let Some(done) = current.take() {
            compacted.push_back(Segment::Payload(Payload::whole(done)));
        }
        self.segments = compacted;
        self.loose_segments = 0;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether a message of `bytes` more fits under the limit.
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.queued_bytes + bytes <= self.limit_bytes
    }

    /// Queues `segments` after skipping the first `already_written` bytes
    /// of them (the part a direct write got out). A message is queued whole
    /// or not at all by the caller; a partly written one must be finished.
    pub(crate) fn push_rest(&mut self, segments: &[Segment], mut already_written: usize) {
        for s in segments {
            let len = s.len();
            if already_written >= len {
                already_written -= len;
                continue;
            }
            let mut s = s.clone();
            if already_written > 0 {
                s.advance(already_written);
                already_written = 0;
            }
            self.queued_bytes += s.len();
            self.segments.push_back(s);
            self.loose_segments += 1;
        }
    }

    /// Writes as much as the socket takes without blocking. `Ok(true)`
    /// when the queue is empty afterwards, `Ok(false)` when the socket is
    /// full.
    pub(crate) fn write_to(&mut self, fd: RawFd) -> io::Result<(bool, usize)> {
        let mut total = 0;
        while !self.segments.is_empty() {
            let slices = self.segments.iter().map(Segment::as_slice);
            let n = match send_vectored(fd, slices, None) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, total)),
                Err(e) => return Err(e),
            };
            total += n;
            self.consume(n);
        }
        self.release_room();
        Ok((true, total))
    }

    /// Frees the ring of an empty queue that a burst made large.
    fn release_room(&mut self) {
        if !self.segments.is_empty() {
            return;
        }
        self.loose_segments = 0;
        if self.segments.capacity() > KEEP_EMPTY_SEGMENTS {
            self.segments = VecDeque::new();
        }
    }

    /// The first queued bytes (for a write that waits for the socket).
    pub(crate) fn front(&self) -> &[u8] {
        self.segments.front().map_or(&[], Segment::as_slice)
    }

    /// Forgets `n` written bytes from the front.
    pub(crate) fn consume(&mut self, mut n: usize) {
        self.queued_bytes = self.queued_bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            let len = front.len();
            if n >= len {
                n -= len;
                self.segments.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        self.release_room();
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.segments = VecDeque::new();
        self.queued_bytes = 0;
        self.loose_segments = 0;
    }
}

/// One non-blocking `sendmsg` of up to 64 of `slices` (to `to`, for
/// datagrams). No allocation: the iovecs live on the stack.
pub(crate) fn send_vectored<'a>(
    fd: RawFd,
    slices: impl IntoIterator<Item = &'a [u8]>,
    to: Option<&SocketAddr>,
) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let mut count = 0;
    for (slot, s) in iov
        .iter_mut()
        .zip(slices.into_iter().filter(|s| !s.is_empty()))
    {
        slot.iov_base = s.as_ptr() as *mut libc::c_void;
        slot.iov_len = s.len();
        count += 1;
    }
    let addr = to.map(|a| socket2::SockAddr::from(*a));
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = count;
    if let Some(a) = &addr {
        msg.msg_name = a.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = a.len();
    }
    // SAFETY: every iovec points into a slice borrowed for this call, the
    // address (if any) lives in `addr` until the call returns, and the flags
    // make the call non-blocking and keep SIGPIPE away.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One non-blocking `recv` into `buf`; `Ok(None)` when nothing is there.
pub(crate) fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is a valid writable slice for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(usize::try_from(n).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::SlabPool;
    use shoal_protocols::config::PoolSettings;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn compaction_keeps_the_bytes_and_releases_the_read_buffers() {
        let pool = SlabPool::new(&PoolSettings::default());
        let mut q = OutQueue::new(1 << 20);
        let mut expected = Vec::new();
        for i in 0..100u32 {
            // Each message pins its own 512-byte read buffer.
            let mut b = pool.try_acquire(8).unwrap();
            let text = format!("message {i};");
            b.extend_from_slice(text.as_bytes());
            let header = [0u8, u8::try_from(text.len()).unwrap()];
            q.push_rest(
                &[
                    Segment::inline(&header),
                    Segment::Payload(Payload::whole(b)),
                ],
                0,
            );
            expected.extend_from_slice(&header);
            expected.extend_from_slice(text.as_bytes());
        }
        // Something already went out of the front.
        q.consume(3);
        assert!(q.wants_compaction());
        assert_eq!(pool.figures()[0].in_use, 100);
        q.compact(&pool);
        assert!(!q.wants_compaction());
        assert_eq!(pool.figures()[0].in_use, 0, "the read buffers went back");
        assert_eq!(pool.figures()[1].in_use, 1, "one 4 KiB buffer holds it all");
        let (a, mut b) = UnixStream::pair().unwrap();
        let (empty, written) = q.write_to(a.as_raw_fd()).unwrap();
        assert!(empty);
        let mut got = vec![0u8; written];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, expected[3..]);
    }

    #[test]
    fn queue_writes_vectored_and_tracks_bytes() {
        let pool = SlabPool::new(&PoolSettings::default());
        let mut b = pool.try_acquire(5).unwrap();
        b.extend_from_slice(b"hello");
        let payload = Payload::whole(b);
        let trailer: Rc<[u8]> = Rc::from(&b"\r\n"[..]);
        let msg = [
            Segment::inline(&[0, 5]),
            Segment::Payload(payload),
            Segment::Shared {
                bytes: trailer,
                start: 0,
            },
        ];
        let mut q = OutQueue::new(1024);
        q.push_rest(&msg, 3);
        assert_eq!(q.queued_bytes(), 6);
        assert_eq!(q.front(), b"ello");
        q.push_rest(&msg, 0);
        assert_eq!(q.queued_bytes(), 15);
        assert!(q.has_room(1009));
        assert!(!q.has_room(1010));

        let (a, mut b) = UnixStream::pair().unwrap();
        let (empty, written) = q.write_to(a.as_raw_fd()).unwrap();
        assert!(empty);
        assert_eq!(written, 15);
        let mut got = vec![0u8; 15];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, b"ello\r\n\x00\x05hello\r\n");
        assert_eq!(q.queued_bytes(), 0);
        drop(q);
        drop(msg);
        assert_eq!(pool.figures()[0].in_use, 0);
    }

    #[test]
    fn an_emptied_queue_forgets_its_burst_and_shared_queues_never_copy() {
        let tag: Rc<[u8]> = Rc::from(&[7u8; 100][..]);
        let segment = Segment::Shared {
            bytes: Rc::clone(&tag),
            start: 0,
        };
        for (mut q, compacts) in [
            (OutQueue::new(1 << 20), true),
            (OutQueue::of_shared(1 << 20), false),
        ] {
            for _ in 0..200 {
                q.push_rest(std::slice::from_ref(&segment), 0);
            }
            assert_eq!(q.wants_compaction(), compacts);
            assert!(q.segments.capacity() >= 200);
            let (a, mut b) = UnixStream::pair().unwrap();
            let (empty, written) = q.write_to(a.as_raw_fd()).unwrap();
            assert!(empty);
            let mut got = vec![0u8; written];
            b.read_exact(&mut got).unwrap();
            assert_eq!(written, 200 * 100);
            assert!(
                q.segments.capacity() <= KEEP_EMPTY_SEGMENTS,
                "the burst's ring is given back"
            );
            // A few messages later, the earlier burst does not count.
            q.push_rest(std::slice::from_ref(&segment), 0);
            assert!(!q.wants_compaction());
            q.consume(100);
        }
        assert_eq!(Rc::strong_count(&tag), 2, "only `segment` still holds it");
    }
}
