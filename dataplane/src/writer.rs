//! The write half every stream connection shares, whatever its protocol:
//! a direct non-blocking vectored write when nothing waits before it, the
//! bounded [`OutQueue`] for what the socket does not take, write batches
//! (one `sendmsg` per connection per batch), and the task-side flush that
//! waits for the socket with a stall timeout.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Weak;
use std::time::Instant;

use futures_lite::future::FutureExt;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::core::{CloseReason, Core, DeferredFlush};
use crate::outq::{send_vectored, OutQueue, Segment};
use crate::signal::Kick;

/// How a write attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Written, or queued to be written.
    Queued,
    /// The queue has no room for it: nothing was written or queued.
    NoRoom,
    /// The connection is closing or its writes failed.
    Closed,
    /// The peer could not take it (too large for it): dropped, as if
    /// delivered.
    Discarded,
}

/// A connection's write half.
#[derive(Debug)]
pub(crate) struct Writer {
    fd: RawFd,
    out: RefCell<OutQueue>,
    /// Wakes the connection's task (queue to flush, close, drain).
    pub(crate) kick: Kick,
    pub(crate) write_closed: Cell<bool>,
    pub(crate) write_failed: Cell<bool>,
    /// Queued in the current write batch, to be flushed when it ends.
    flush_deferred: Cell<bool>,
    /// The task waits for the socket to take the queue's front: only it
    /// may write until then.
    write_blocked: Cell<bool>,
}

impl Writer {
    pub(crate) fn new(fd: RawFd, limit_bytes: usize) -> Self {
        Self::with_queue(fd, OutQueue::new(limit_bytes))
    }

    /// A writer whose queue holds shared bytes and never copies them
    /// ([`OutQueue::of_shared`]): a viewer's.
    pub(crate) fn of_shared(fd: RawFd, limit_bytes: usize) -> Self {
        Self::with_queue(fd, OutQueue::of_shared(limit_bytes))
    }

    fn with_queue(fd: RawFd, out: OutQueue) -> Self {
        Self {
            fd,
            out: RefCell::new(out),
            kick: Kick::default(),
            write_closed: Cell::new(false),
            write_failed: Cell::new(false),
            flush_deferred: Cell::new(false),
            write_blocked: Cell::new(false),
        }
    }

    /// Whether writes still go anywhere.
    pub(crate) fn is_open(&self) -> bool {
        !self.write_closed.get() && !self.write_failed.get()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.out.borrow().is_empty()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.out.borrow().queued_bytes()
    }

    /// Writes or queues one message made of `segments` (`total` bytes),
    /// whole or not at all. Inside a write batch it is queued and `me` is
    /// flushed when the batch ends. `force` queues it even past the limit
    /// (protocol replies that must not be lost; they are small and bounded
    /// by what the peer sends).
    pub(crate) fn send(
        &self,
        core: &Core,
        me: &Weak<dyn DeferredFlush>,
        segments: &[Segment],
        total: usize,
        force: bool,
    ) -> Sent {
        if !self.is_open() {
            return Sent::Closed;
        }
        let stats = &core.stats;
        let mut out = self.out.borrow_mut();
        if core.in_batch() || self.write_blocked.get() {
            if !force && !out.has_room(total) {
                return Sent::NoRoom;
            }
            out.push_rest(segments, 0);
            if core.in_batch() && !self.flush_deferred.replace(true) {
                if let Some(me) = me.upgrade() {
                    core.defer_flush(me);
                }
            }
            return Sent::Queued;
        }
        if out.is_empty() {
            let written = match send_vectored(self.fd, segments.iter().map(Segment::as_slice), None)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => {
                    self.write_failed.set(true);
                    drop(out);
                    self.kick.kick();
                    return Sent::Closed;
                }
            };
            stats.bytes_out.add(written as u64);
            if written < total {
                out.push_rest(segments, written);
                drop(out);
                self.kick.kick();
            }
            Sent::Queued
        } else if force || out.has_room(total) {
            out.push_rest(segments, 0);
            if out.wants_compaction() {
                out.compact(&core.pool);
            }
            Sent::Queued
        } else {
            Sent::NoRoom
        }
    }

    /// Queues one message to be written at the core's next media write
    /// ([`Core::defer_media_flush`]): tags gathered over the write
    /// interval leave in one vectored write. `force` as for
    /// [`send`](Self::send).
    pub(crate) fn send_later(
        &self,
        core: &Core,
        me: &Weak<dyn DeferredFlush>,
        segments: &[Segment],
        total: usize,
        force: bool,
    ) -> Sent {
        if !self.is_open() {
            return Sent::Closed;
        }
        let mut out = self.out.borrow_mut();
        if !force && !out.has_room(total) {
            return Sent::NoRoom;
        }
        out.push_rest(segments, 0);
        if out.wants_compaction() {
            out.compact(&core.pool);
        }
        drop(out);
        // A task waiting for the socket writes it; else the next round.
        if !self.write_blocked.get() && !self.flush_deferred.replace(true) {
            if let Some(me) = me.upgrade() {
                core.defer_media_flush(me);
            }
        }
        Sent::Queued
    }

    /// Writes what a batch queued (see [`DeferredFlush`]).
    pub(crate) fn flush_deferred(&self, core: &Core) {
        self.flush_deferred.set(false);
        if !self.is_open() || self.write_blocked.get() {
            return;
        }
        let result = self.out.borrow_mut().write_to(self.fd);
        match result {
            Ok((empty, written)) => {
                core.stats.bytes_out.add(written as u64);
                if !empty {
                    // The socket is full: the task waits until it drains.
                    let mut out = self.out.borrow_mut();
                    if out.wants_compaction() {
                        out.compact(&core.pool);
                    }
                    drop(out);
                    self.kick.kick();
                }
            }
            Err(_) => {
                self.write_failed.set(true);
                self.kick.kick();
            }
        }
    }

    /// Writes the queue out; waits (bounded by the stall timeout) while
    /// the peer does not read. `closing` is asked on every wake-up: a
    /// close ends the wait.
    pub(crate) async fn flush(
        &self,
        core: &Core,
        stream: &mut TcpStream,
        closing: impl Fn() -> Option<CloseReason>,
    ) -> Result<(), FlushEnd> {
        let stall = core.settings.borrow().write_stall_timeout;
        // Too slow only when nothing at all goes out for the whole stall
        // timeout: any progress restarts it.
        let mut deadline = Instant::now() + stall;
        loop {
            let (empty, written) = self
                .out
                .borrow_mut()
                .write_to(self.fd)
                .map_err(FlushEnd::Io)?;
            core.stats.bytes_out.add(written as u64);
            if empty {
                return Ok(());
            }
            if written > 0 {
                deadline = Instant::now() + stall;
            }
            {
                let mut out = self.out.borrow_mut();
                if out.wants_compaction() {
                    out.compact(&core.pool);
                }
            }
            let front = self.out.borrow().front().to_vec();
            self.write_blocked.set(true);
            let write = async { Wait::Written(stream.write(&front).await) };
            let kicked = async {
                self.kick.kicked().await;
                Wait::Kicked
            };
            let timeout = async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                Wait::Stalled
            };
            let waited = write.or(kicked).or(timeout).await;
            self.write_blocked.set(false);
            match waited {
                Wait::Written(Ok(n)) => {
                    core.stats.bytes_out.add(n as u64);
                    self.out.borrow_mut().consume(n);
                    deadline = Instant::now() + stall;
                }
                Wait::Written(Err(e)) => return Err(FlushEnd::Io(e)),
                Wait::Kicked => {
                    if let Some(reason) = closing() {
                        return Err(FlushEnd::Closed(reason));
                    }
                }
                Wait::Stalled => return Err(FlushEnd::Stalled),
            }
        }
    }

    /// Half-closes the socket once (drain).
    pub(crate) fn shutdown_write(&self) {
        if !self.write_closed.replace(true) {
            // SAFETY: shutdown(2) on the connection's own open descriptor;
            // no memory is involved.
            unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        }
    }

    /// Drops what is queued (the connection ended).
    pub(crate) fn clear(&self) {
        self.out.borrow_mut().clear();
    }
}

/// Why a flush ended without emptying the queue.
#[derive(Debug)]
pub(crate) enum FlushEnd {
    Io(io::Error),
    Stalled,
    Closed(CloseReason),
}

enum Wait {
    Written(io::Result<usize>),
    Kicked,
    Stalled,
}

/// A `Weak<dyn DeferredFlush>` for `this`.
pub(crate) fn weak_flush<T: DeferredFlush + 'static>(this: &Weak<T>) -> Weak<dyn DeferredFlush> {
    let weak: Weak<dyn DeferredFlush> = this.clone();
    weak
}
