//! Northbound upstreams of forward routes: a framed TCP connection, UDP
//! datagrams, or an HTTP webhook ([`webhook`]), one per route per core.
//!
//! ```text
//! Core::publish ──enqueue(&Message)──▶ TcpUpstream   (byte queue ──▶ one connection)
//!                                      UdpUpstream   (one datagram per message)
//!                                      WebhookSender (JSON batches ──▶ keep-alive pool)
//! ```
//!
//! A target that is slow or down never blocks the bus: `enqueue` never
//! waits; the TCP upstream and the webhook have queues bounded in bytes
//! (and, for the webhook, messages); beyond them messages are dropped and
//! counted, and the drop is logged at a limited rate.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::FutureExt;
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpStream, UdpSocket};
use shoal_protocols::framing::{Framer, MAX_HEADER_BYTES};
use tracing::{info, warn};

use crate::message::Message;
use crate::outq::{send_vectored, OutQueue, Segment};
use crate::pool::SlabPool;
use crate::signal::{Kick, LocalSignal};
use crate::stats::LogLimiter;

mod webhook;
pub(crate) use webhook::WebhookSender;

/// Where a forward route sends messages.
pub(crate) trait Forwarder {
    /// Takes a message without blocking or waiting; false when it had to
    /// be dropped.
    fn enqueue(&self, m: &Message) -> bool;
    /// The route table that held it lets go: the upstream stops (its route
    /// is gone or changed) unless another table still holds it.
    fn stop(&self);
}

/// A framed TCP upstream with a bounded queue and reconnects with backoff.
pub(crate) struct TcpUpstream {
    route: Rc<str>,
    addr: SocketAddr,
    framer: Framer,
    trailer: Rc<[u8]>,
    queue: RefCell<OutQueue>,
    /// Lengths of the queued frames, and how much of the first has gone
    /// out: a connection that fails mid-frame must not leave the next one
    /// starting with a frame's tail.
    frames: RefCell<FrameBounds>,
    /// The core's pool, for compacting the queue.
    pool: SlabPool,
    kick: Kick,
    stopped: LocalSignal,
    connected: Cell<bool>,
    drop_log: LogLimiter,
    connect_log: LogLimiter,
}

/// An upstream that takes nothing at all for this long is reconnected.
const UPSTREAM_STALL: Duration = Duration::from_secs(30);

/// Frame boundaries of a byte queue.
#[derive(Debug, Default)]
struct FrameBounds {
    lengths: VecDeque<usize>,
    front_sent: usize,
}

impl FrameBounds {
    /// `n` more bytes went out.
    fn sent(&mut self, mut n: usize) {
        while n > 0 {
            let Some(&front) = self.lengths.front() else {
                return;
            };
            let rest = front - self.front_sent;
            if n >= rest {
                n -= rest;
                self.lengths.pop_front();
                self.front_sent = 0;
            } else {
                self.front_sent += n;
                n = 0;
            }
        }
    }

    /// Bytes left of a frame that is partly sent (to drop before a new
    /// connection starts), 0 when the queue starts on a boundary.
    fn take_partial(&mut self) -> usize {
        if self.front_sent == 0 {
            return 0;
        }
        let rest = self.lengths.pop_front().unwrap_or(0) - self.front_sent;
        self.front_sent = 0;
        rest
    }
}

impl TcpUpstream {
    /// Creates the upstream and starts its task on this core.
    pub(crate) fn start(
        route: &str,
        addr: SocketAddr,
        framer: Framer,
        queue_bytes: usize,
        pool: SlabPool,
    ) -> Rc<Self> {
        let trailer: Rc<[u8]> = Rc::from(framer.trailer());
        let up = Rc::new(Self {
            route: route.into(),
            addr,
            framer,
            trailer,
            queue: RefCell::new(OutQueue::new(queue_bytes)),
            frames: RefCell::new(FrameBounds::default()),
            pool,
            kick: Kick::default(),
            stopped: LocalSignal::default(),
            connected: Cell::new(false),
            drop_log: LogLimiter::new(Duration::from_secs(5)),
            connect_log: LogLimiter::new(Duration::from_secs(5)),
        });
        glommio::spawn_local(Rc::clone(&up).run()).detach();
        up
    }

    async fn run(self: Rc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while !self.stopped.is_raised() {
            let connect =
                async { Some(TcpStream::connect_timeout(self.addr, Duration::from_secs(3)).await) };
            let stop = async {
                self.stopped.wait().await;
                None
            };
            match connect.or(stop).await {
                None => break,
                Some(Ok(mut stream)) => {
                    info!(route = %self.route, upstream = %self.addr, "forward upstream connected");
                    backoff = Duration::from_millis(100);
                    self.connected.set(true);
                    let result = self.pump(&mut stream).await;
                    self.connected.set(false);
                    if let Err(e) = result {
                        warn!(route = %self.route, upstream = %self.addr, "forward upstream lost: {e}");
                    }
                }
                Some(Err(e)) => {
                    if let Some(more) = self.connect_log.allow() {
                        warn!(route = %self.route, upstream = %self.addr, suppressed = more, "cannot reach forward upstream: {e}");
                    }
                }
            }
            let pause = async {
                glommio::timer::sleep(backoff).await;
            };
            pause.or(self.stopped.wait()).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Writes the queue out until the connection fails or the route stops.
    async fn pump(&self, stream: &mut TcpStream) -> io::Result<()> {
        // A frame cut short by the previous connection is dropped whole.
        let partial = self.frames.borrow_mut().take_partial();
        if partial > 0 {
            self.queue.borrow_mut().consume(partial);
        }
        loop {
            let (empty, written) = self.queue.borrow_mut().write_to(stream.as_raw_fd())?;
            self.frames.borrow_mut().sent(written);
            if self.stopped.is_raised() {
                return Ok(());
            }
            if empty {
                let kicked = async {
                    self.kick.kicked().await;
                    true
                };
                let stop = async {
                    self.stopped.wait().await;
                    false
                };
                if !kicked.or(stop).await {
                    return Ok(());
                }
                continue;
            }
            // The socket is full: wait until it takes the front bytes, the
            // route stops, or the upstream has taken nothing for too long.
            {
                let mut queue = self.queue.borrow_mut();
                if queue.wants_compaction() {
                    queue.compact(&self.pool);
                }
            }
            let front: Vec<u8> = self.queue.borrow().front().to_vec();
            let write = async { Some(stream.write(&front).await) };
            let stop = async {
                self.stopped.wait().await;
                None
            };
            let stall = async {
                glommio::timer::sleep(UPSTREAM_STALL).await;
                Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the upstream took nothing for 30s",
                )))
            };
            match write.or(stop).or(stall).await {
                None => return Ok(()),
                Some(Ok(0)) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "upstream closed"))
                }
                Some(Ok(n)) => {
                    self.queue.borrow_mut().consume(n);
                    self.frames.borrow_mut().sent(n);
                }
                Some(Err(e)) => return Err(e),
            }
        }
    }
}

impl Forwarder for TcpUpstream {
    fn enqueue(&self, m: &Message) -> bool {
        let payload = &m.payload;
        let mut header = [0u8; MAX_HEADER_BYTES];
        let header_len = match self
            .framer
            .encode_header_for(payload.as_slice(), &mut header)
        {
            Ok(n) => n,
            Err(e) => {
                if let Some(more) = self.drop_log.allow() {
                    warn!(route = %self.route, suppressed = more, "payload cannot be framed for the upstream: {e}");
                }
                return false;
            }
        };
        let total = header_len + payload.len() + self.trailer.len();
        let mut queue = self.queue.borrow_mut();
        if !queue.has_room(total) {
            drop(queue);
            if let Some(more) = self.drop_log.allow() {
                warn!(
                    route = %self.route,
                    upstream = %self.addr,
                    connected = self.connected.get(),
                    suppressed = more,
                    "forward queue full; message dropped"
                );
            }
            return false;
        }
        let segments = [
            Segment::inline(header.get(..header_len).unwrap_or_default()),
            Segment::Payload(payload.clone()),
            Segment::Shared {
                bytes: Rc::clone(&self.trailer),
                start: 0,
            },
        ];
        queue.push_rest(&segments, 0);
        if !self.connected.get() && queue.wants_compaction() {
            // Down: what waits should not pin a read buffer per message.
            queue.compact(&self.pool);
        }
        drop(queue);
        self.frames.borrow_mut().lengths.push_back(total);
        self.kick.kick();
        true
    }

    fn stop(&self) {
        self.stopped.raise();
        self.kick.kick();
    }
}

/// A UDP upstream: each payload is one datagram.
pub(crate) struct UdpUpstream {
    route: Rc<str>,
    addr: SocketAddr,
    socket: UdpSocket,
    drop_log: LogLimiter,
}

impl UdpUpstream {
    pub(crate) fn new(route: &str, addr: SocketAddr) -> io::Result<Self> {
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().map_err(io::Error::other)?
        } else {
            "[::]:0".parse().map_err(io::Error::other)?
        };
        let socket = UdpSocket::bind(local).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self {
            route: route.into(),
            addr,
            socket,
            drop_log: LogLimiter::new(Duration::from_secs(5)),
        })
    }
}

impl Forwarder for UdpUpstream {
    fn enqueue(&self, m: &Message) -> bool {
        match send_vectored(
            self.socket.as_raw_fd(),
            [m.payload.as_slice()],
            Some(&self.addr),
        ) {
            Ok(_) => true,
            Err(e) => {
                if let Some(more) = self.drop_log.allow() {
                    warn!(route = %self.route, upstream = %self.addr, suppressed = more, "udp forward failed: {e}");
                }
                false
            }
        }
    }

    fn stop(&self) {}
}

#[cfg(test)]
mod tests {
    use super::FrameBounds;

    #[test]
    fn frame_bounds_follow_partial_writes() {
        let mut f = FrameBounds::default();
        f.lengths.extend([5, 3, 4]);
        f.sent(2);
        assert_eq!(f.front_sent, 2);
        f.sent(4);
        // 5 done, 1 of 3 sent.
        assert_eq!(f.lengths.len(), 2);
        assert_eq!(f.take_partial(), 2);
        assert_eq!(f.lengths.iter().copied().collect::<Vec<_>>(), vec![4]);
        assert_eq!(f.take_partial(), 0);
        f.sent(4);
        assert!(f.lengths.is_empty());
    }
}
