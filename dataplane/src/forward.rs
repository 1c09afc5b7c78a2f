//! Northbound upstreams of forward routes: a framed TCP connection or UDP
//! datagrams, one per route per core.
//!
//! A target that is slow or down never blocks the bus: the TCP upstream has
//! a queue bounded in bytes; beyond it messages are dropped and counted, and
//! the drop is logged at a limited rate.

use std::cell::{Cell, RefCell};
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

use crate::outq::{send_vectored, OutQueue, Segment};
use crate::pool::Payload;
use crate::signal::{Kick, LocalSignal};
use crate::stats::LogLimiter;

/// Where a forward route sends payloads.
pub(crate) trait Forwarder {
    /// Takes a payload without blocking; false when it had to be dropped.
    fn enqueue(&self, payload: &Payload) -> bool;
    /// Stops the upstream (its route is gone).
    fn stop(&self);
}

/// A framed TCP upstream with a bounded queue and reconnects with backoff.
pub(crate) struct TcpUpstream {
    route: Rc<str>,
    addr: SocketAddr,
    framer: Framer,
    trailer: Rc<[u8]>,
    queue: RefCell<OutQueue>,
    kick: Kick,
    stopped: LocalSignal,
    connected: Cell<bool>,
    drop_log: LogLimiter,
    connect_log: LogLimiter,
}

impl TcpUpstream {
    /// Creates the upstream and starts its task on this core.
    pub(crate) fn start(
        route: &str,
        addr: SocketAddr,
        framer: Framer,
        queue_bytes: usize,
    ) -> Rc<Self> {
        let trailer: Rc<[u8]> = Rc::from(framer.trailer());
        let up = Rc::new(Self {
            route: route.into(),
            addr,
            framer,
            trailer,
            queue: RefCell::new(OutQueue::new(queue_bytes)),
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
        loop {
            let (empty, _) = self.queue.borrow_mut().write_to(stream.as_raw_fd())?;
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
            } else {
                // The socket is full: wait until it takes the front bytes.
                let front: Vec<u8> = self.queue.borrow().front().to_vec();
                let n = stream.write(&front).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "upstream closed"));
                }
                self.queue.borrow_mut().consume(n);
            }
        }
    }
}

impl Forwarder for TcpUpstream {
    fn enqueue(&self, payload: &Payload) -> bool {
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
        drop(queue);
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
    fn enqueue(&self, payload: &Payload) -> bool {
        match send_vectored(
            self.socket.as_raw_fd(),
            [payload.as_slice()],
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
