//! CoAP device listeners (RFC 7252 over UDP, with block-wise transfers,
//! RFC 7959, and observation, RFC 7641), served with the sans-IO codec of
//! [`shoal_protocols::coap`].
//!
//! ```text
//!  recv_from (pool buffer) ─▶ exchange::datagram ─┬─ ACK / RST ─▶ notify: Retransmitter, next notification
//!                                                  ├─ ping (Empty CON) ─▶ RST
//!                                                  └─ request ─▶ Deduplicator ─▶ auth (proof cache) ─┐
//!   POST /devices/{id}/up[/…]  ◀─────────────────────────────────────────────────────────────────┤
//!     Block1Reassembler ─▶ Core::publish (devices/{id}/up[/…]) ─▶ 2.04 (2.31 per block, 4.13)     │
//!   GET /devices/{id}/down [Observe 0|1]  ◀──────────────────────────────────────────────────────┤
//!     ObserverRegistry, latest downlink (Block2 when larger than a block)                         │
//!   GET /.well-known/core  ◀─────────────────────────────────────────────────────────────────────┘
//!
//!  bus devices/{id}/down/# ─▶ CoapSession::deliver ─▶ per-peer queue ─▶ CON notification ─▶ Retransmitter
//!  tick (100 ms): retransmit / give up (= observation ended); each second: expiry of exchanges,
//!  transfers, proofs and idle sessions
//! ```
//!
//! Everything is per core and per listener: SO_REUSEPORT hashes a peer's
//! 4-tuple to one core, so one peer's exchanges (its message ids, blocks,
//! observations) stay on that core; downlink reaches every core's
//! subscriptions over the bus. A device seen on this core has a
//! [`CoapSession`](session::CoapSession): an entry in the connection table,
//! a bus subscription to `devices/{id}/down/#`, the latest downlink payload
//! it saw (answer of a plain GET) and its observers. Sessions count against
//! `max_connections` and end after `idle_timeout` without a request or an
//! acknowledged notification (pings of an observing peer count).
//!
//! Bounds, each with its overflow policy and counter (`shoal_coap_*` on
//! `/metrics`):
//! - datagrams: at most [`MAX_DATAGRAM_BYTES`]; a larger one is answered
//!   4.13 (a request) or dropped; request bodies: `max_frame_bytes`
//!   reassembled (4.13 with Size1 beyond), [`MAX_TRANSFERS`] block-wise
//!   transfers (4 per peer; 5.03 beyond);
//! - deduplication: [`MAX_DEDUP_ENTRIES`] remembered messages (oldest
//!   forgotten);
//! - observers: [`MAX_OBSERVERS`] per core and listener, 16 per peer,
//!   [`MAX_OBSERVERS_PER_DEVICE`] per device (beyond: the GET is answered
//!   without Observe, counted as a drop);
//! - notifications: one CON outstanding per peer (NSTART), then
//!   [`MAX_QUEUED_PER_PEER`] waiting (the oldest dropped and counted);
//! - latest downlink payloads: [`MAX_LATEST_BYTES`] per core and listener
//!   (beyond, a device's latest is not kept, counted as a drop);
//! - registry checks in flight: [`MAX_AUTH_IN_FLIGHT`] (5.03 beyond);
//! - proofs of devices' secrets: [`MAX_PROOFS`], each trusted for
//!   [`PROOF_TTL_MS`] so that a changed secret takes effect within it.
//!
//! A flood cannot starve the core: the receive loop is the raw UDP
//! listener's ([`crate::udp::receive`]: it yields every few datagrams and
//! waits on the pool and the mesh gate like the other readers).

mod auth;
mod exchange;
mod notify;
mod session;
mod stats;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use glommio::net::UdpSocket;
use shoal_protocols::coap::{Block1Config, Block1Reassembler, DedupConfig, Deduplicator};
use shoal_protocols::config::ListenerAuth;
use tracing::{debug, warn};

use crate::core::Core;
use crate::listener::ListenerSpec;
use crate::outq::send_vectored;
use crate::signal::LocalSignal;
use crate::stats::LogLimiter;
use crate::udp::{receive, Datagram};

pub(crate) use stats::CoapStats;

use self::auth::ProofCache;
use self::notify::Notifier;
use self::session::CoapSession;

/// Largest datagram taken (RFC 7252 §4.6 recommends 1152 bytes; block
/// sizes go up to 1024). A larger request is answered 4.13.
pub(crate) const MAX_DATAGRAM_BYTES: usize = 4095;
/// Block-wise request bodies being reassembled at once (4 per peer).
pub(crate) const MAX_TRANSFERS: usize = 256;
/// Messages remembered for deduplication.
pub(crate) const MAX_DEDUP_ENTRIES: usize = 65_536;
/// Observations per core and listener.
pub(crate) const MAX_OBSERVERS: usize = 65_536;
/// Observations of one device per core and listener.
pub(crate) const MAX_OBSERVERS_PER_DEVICE: usize = 8;
/// Notifications waiting for a peer's outstanding one to be acknowledged.
pub(crate) const MAX_QUEUED_PER_PEER: usize = 32;
/// Bytes of latest downlink payloads kept per core and listener.
pub(crate) const MAX_LATEST_BYTES: usize = 16 * 1024 * 1024;
/// Registry checks (with another core) in flight per core and listener.
pub(crate) const MAX_AUTH_IN_FLIGHT: usize = 256;
/// Proven (peer, device, secret) triples remembered per core and listener.
pub(crate) const MAX_PROOFS: usize = 65_536;
/// How long a proven secret is trusted before the registry is asked again.
pub(crate) const PROOF_TTL_MS: u64 = 10_000;
/// Period of the retransmission timer.
const TICK: Duration = Duration::from_millis(100);
/// Ticks between housekeeping rounds (expiry).
const HOUSEKEEPING_TICKS: u32 = 10;

/// The exchange state of one listener on one core: what the codec's state
/// machines remember per peer.
#[derive(Debug)]
struct Exchanges {
    dedup: Deduplicator<SocketAddr>,
    bodies: Block1Reassembler<SocketAddr>,
}

/// A CoAP listener as one core runs it.
pub(crate) struct CoapListenerRt {
    pub(crate) name: Rc<str>,
    spec: Arc<ListenerSpec>,
    auth: ListenerAuth,
    idle_timeout: Duration,
    /// Largest datagram read (one less than the receive buffer).
    datagram_bytes: usize,
    /// The socket answers and notifications leave from (owned by the
    /// listener task, which outlives every session).
    fd: RawFd,
    /// Whether `fd` is still the listener's socket (false once the
    /// receive loop ended and dropped it).
    open: Cell<bool>,
    /// Zero of the millisecond clock the codec runs on.
    epoch: Instant,
    exchanges: RefCell<Exchanges>,
    notifier: RefCell<Notifier>,
    proofs: RefCell<ProofCache>,
    /// Registry checks waiting for another core now.
    auth_in_flight: Cell<usize>,
    sessions: RefCell<HashMap<Rc<str>, Rc<CoapSession>>>,
    /// Bytes of the sessions' latest downlink payloads.
    latest_bytes: Cell<usize>,
    /// Message ids of NON answers.
    non_ids: Cell<u16>,
    rng: Cell<u64>,
    /// Reused to encode answers (taken out while in use).
    scratch: RefCell<Vec<u8>>,
    /// Raised when the listener is removed.
    pub(crate) removed: LocalSignal,
    bad_log: LogLimiter,
    refuse_log: LogLimiter,
    auth_log: LogLimiter,
    notify_log: LogLimiter,
}

impl std::fmt::Debug for CoapListenerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapListenerRt")
            .field("name", &self.name)
            .field("sessions", &self.sessions.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Binds the listener's socket on this core.
pub(crate) fn bind(
    core: &Core,
    spec: &Arc<ListenerSpec>,
) -> Result<(UdpSocket, Rc<CoapListenerRt>), String> {
    let c = &spec.config;
    // One byte more than the limit, to tell an oversized datagram; never
    // more than the pool's largest buffer.
    let datagram_bytes = MAX_DATAGRAM_BYTES.min(core.pool.largest_buffer_bytes().saturating_sub(1));
    let mut socket = UdpSocket::bind(spec.addr)
        .map_err(|e| format!("listener {:?}: cannot bind udp {}: {e}", c.name, spec.addr))?;
    socket.set_buffer_size(datagram_bytes + 1);
    let fd = socket.as_raw_fd();
    crate::udp::set_receive_buffer(fd, crate::udp::UDP_RECEIVE_BUFFER_BYTES);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (core.index as u64).rotate_left(32)
        ^ u64::from(fd.unsigned_abs());
    let rt = Rc::new(CoapListenerRt {
        name: c.name.as_str().into(),
        spec: Arc::clone(spec),
        auth: c.auth,
        idle_timeout: c.idle_timeout,
        datagram_bytes,
        fd,
        open: Cell::new(true),
        epoch: Instant::now(),
        exchanges: RefCell::new(Exchanges {
            dedup: Deduplicator::new(DedupConfig {
                max_entries: MAX_DEDUP_ENTRIES,
                ..DedupConfig::default()
            }),
            bodies: Block1Reassembler::new(Block1Config {
                max_body_bytes: c.max_frame_bytes as usize,
                max_transfers: MAX_TRANSFERS,
                ..Block1Config::default()
            }),
        }),
        notifier: RefCell::new(Notifier::new()),
        proofs: RefCell::new(ProofCache::default()),
        auth_in_flight: Cell::new(0),
        sessions: RefCell::new(HashMap::new()),
        latest_bytes: Cell::new(0),
        non_ids: Cell::new((seed >> 16) as u16),
        rng: Cell::new(seed | 1),
        scratch: RefCell::new(Vec::with_capacity(1280)),
        removed: LocalSignal::default(),
        bad_log: LogLimiter::new(Duration::from_secs(5)),
        refuse_log: LogLimiter::new(Duration::from_secs(5)),
        auth_log: LogLimiter::new(Duration::from_secs(5)),
        notify_log: LogLimiter::new(Duration::from_secs(5)),
    });
    Ok((socket, rt))
}

impl CoapListenerRt {
    /// Milliseconds since the listener was bound: the codec's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A pseudo-random number (xorshift64*): message ids and the jitter of
    /// retransmission timeouts; nothing secret depends on it.
    fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A fraction in `[0, 1]` for the first retransmission timeout.
    fn random_fraction(&self) -> f64 {
        (self.random() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The message id of the next NON answer.
    fn next_non_id(&self) -> u16 {
        let id = self.non_ids.get();
        self.non_ids.set(id.wrapping_add(1));
        id
    }

    /// The scratch buffer, empty (an empty new one when it is in use).
    fn take_scratch(&self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut *self.scratch.borrow_mut());
        buf.clear();
        buf
    }

    fn put_scratch(&self, buf: Vec<u8>) {
        *self.scratch.borrow_mut() = buf;
    }

    /// Sends one datagram now (a non-blocking `sendmsg`); a socket that
    /// does not take it drops it, counted (CoAP's own retransmission
    /// covers a lost CON).
    fn send(&self, core: &Core, peer: SocketAddr, bytes: &[u8]) -> bool {
        if !self.open.get() {
            return false;
        }
        match send_vectored(self.fd, [bytes], Some(&peer)) {
            Ok(n) => {
                core.stats.bytes_out.add(n as u64);
                true
            }
            Err(e) => {
                core.stats.outbound_drops.inc();
                core.coap.drops.inc();
                if let Some(more) = self.bad_log.allow() {
                    warn!(listener = %self.name, %peer, suppressed = more, "coap datagram not sent: {e}");
                }
                false
            }
        }
    }
}

/// Receives datagrams until the core stops or the listener is removed.
pub(crate) async fn run_listener(core: Rc<Core>, rt: Rc<CoapListenerRt>, socket: UdpSocket) {
    glommio::spawn_local(run_timers(Rc::clone(&core), Rc::clone(&rt))).detach();
    let max = rt.datagram_bytes;
    let mut since_yield = 0u32;
    while let Some(Datagram {
        buf,
        len: n,
        peer,
        read_end,
    }) = receive(&core, &socket, &rt.removed, max, &mut since_yield, &rt.name).await
    {
        if n > max {
            exchange::oversized(&core, &rt, peer, buf.filled());
            continue;
        }
        exchange::datagram(&core, &rt, peer, &Rc::new(buf), read_end);
    }
    let sessions: Vec<Rc<CoapSession>> = rt.sessions.borrow_mut().drain().map(|(_, s)| s).collect();
    for s in sessions {
        s.end();
    }
    rt.open.set(false);
    drop(socket);
    debug!(listener = %rt.name, "stopped receiving");
}

/// Retransmissions every [`TICK`]; expiry every [`HOUSEKEEPING_TICKS`].
async fn run_timers(core: Rc<Core>, rt: Rc<CoapListenerRt>) {
    let mut ticks = 0u32;
    loop {
        let tick = async {
            glommio::timer::sleep(TICK).await;
            true
        };
        let stop = async {
            core.stopping.wait().or(rt.removed.wait()).await;
            false
        };
        if !tick.or(stop).await {
            return;
        }
        notify::retransmit_due(&core, &rt);
        ticks += 1;
        if ticks >= HOUSEKEEPING_TICKS {
            ticks = 0;
            housekeeping(&core, &rt);
        }
    }
}

/// Forgets what outlived its time: exchanges, transfers, proofs, idle
/// sessions, held Block2 transfers.
fn housekeeping(core: &Rc<Core>, rt: &Rc<CoapListenerRt>) {
    let now = rt.now_ms();
    {
        let mut exchanges = rt.exchanges.borrow_mut();
        exchanges.dedup.expire(now);
        exchanges.bodies.expire(now);
    }
    rt.proofs.borrow_mut().expire(now);
    session::expire_idle(core, rt);
    notify::expire_transfers(core, rt, now);
}
