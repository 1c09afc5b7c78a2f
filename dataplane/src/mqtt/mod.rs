//! The MQTT 3.1.1 / 5.0 broker on the per-core bus.
//!
//! A connection (TCP, or WebSocket frames from the HTTP listener's `/mqtt`)
//! runs on the core that accepted it; its session lives on the same core
//! and moves with the client when it connects again elsewhere
//! ([`broker`]). Subscriptions are bus subscribers ([`session::MqttSub`]),
//! so MQTT clients, raw TCP/UDP devices and routes share one bus: a frame
//! a TCP device sends on `devices/{id}/up` reaches MQTT subscribers, and an
//! MQTT publish to `devices/{id}/down` reaches the device.
//!
//! ```text
//! accept ─▶ task::serve ─▶ CONNECT: auth (registry, owner core) ─▶ take the
//!           session (this core, SessionClaim to the others) ─▶ CONNACK
//!        ─▶ PUBLISH ─▶ ACL ─▶ retained store (every core) ─▶ Core::publish
//!           bus ─▶ MqttSub::deliver ─▶ Session (window, bounded queue)
//!                ─▶ MqttConn (bounded outbound queue, vectored writes)
//! ```
//!
//! Bounds: packets up to the listener's `max_frame_bytes` (checked from
//! the fixed header); `max_inflight` per direction; `max_queued_messages`
//! per session with a drop policy; the connection's outbound queue; the
//! retained store's count and bytes; `max_offline_sessions` per core.

mod acl;
mod broker;
mod conn;
mod connect;
mod packets;
mod retained;
mod session;
mod task;
mod ws_input;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use shoal_protocols::config::ListenerAuth;
use tracing::{debug, warn};

pub(crate) use acl::AclTable;
pub(crate) use broker::{run_sweeper, Broker, SessionTransfer};
pub(crate) use conn::Transport;

use crate::core::Core;
use crate::listener::ListenerSpec;
use crate::signal::LocalSignal;
use crate::stats::{BurstLimiter, LogLimiter};

/// An MQTT listener (or the MQTT side of an HTTP listener) as one core
/// runs it.
pub(crate) struct MqttListenerRt {
    pub(crate) name: Rc<str>,
    pub(crate) spec: Arc<ListenerSpec>,
    pub(crate) auth: ListenerAuth,
    /// Silence allowed to a client that set no keepalive.
    pub(crate) idle_timeout: Duration,
    /// Raised when the listener is removed: stop accepting, drain.
    pub(crate) removed: LocalSignal,
    pub(crate) error_log: BurstLimiter,
    refuse_log: LogLimiter,
    accept_log: LogLimiter,
}

impl std::fmt::Debug for MqttListenerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttListenerRt")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MqttListenerRt {
    pub(crate) fn new(spec: &Arc<ListenerSpec>) -> Self {
        let c = &spec.config;
        Self {
            name: c.name.as_str().into(),
            spec: Arc::clone(spec),
            auth: c.auth,
            idle_timeout: c.idle_timeout,
            removed: LocalSignal::default(),
            error_log: BurstLimiter::new(50, Duration::from_secs(1)),
            refuse_log: LogLimiter::new(Duration::from_secs(5)),
            accept_log: LogLimiter::new(Duration::from_secs(5)),
        }
    }

    /// Counts a new connection against `max_connections`; false (counted,
    /// logged at a limited rate) when the listener is full.
    pub(crate) fn admit(&self, core: &Core) -> bool {
        let max = self.spec.config.max_connections;
        let open = self.spec.open.fetch_add(1, Ordering::Relaxed) + 1;
        if open > max {
            self.spec.open.fetch_sub(1, Ordering::Relaxed);
            core.stats.refused.inc();
            if let Some(more) = self.refuse_log.allow() {
                warn!(listener = %self.name, max_connections = max, suppressed = more, "connection refused: listener is at max_connections");
            }
            return false;
        }
        true
    }

    /// Waits out a failed accept (out of descriptors or memory) instead of
    /// spinning.
    pub(crate) async fn accept_failed(&self, e: &impl std::fmt::Display) {
        if let Some(more) = self.accept_log.allow() {
            warn!(listener = %self.name, suppressed = more, "accept failed: {e}");
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Binds the listener's socket on this core (the prepare step of an apply).
pub(crate) fn bind(spec: &Arc<ListenerSpec>) -> Result<(TcpListener, Rc<MqttListenerRt>), String> {
    let c = &spec.config;
    let listener = TcpListener::bind(spec.addr)
        .map_err(|e| format!("listener {:?}: cannot bind tcp {}: {e}", c.name, spec.addr))?;
    Ok((listener, Rc::new(MqttListenerRt::new(spec))))
}

/// Accepts until the core stops or the listener is removed.
pub(crate) async fn run_listener(core: Rc<Core>, rt: Rc<MqttListenerRt>, listener: TcpListener) {
    accept_loop(core, rt, listener, |core, rt, stream, peer| {
        task::serve(core, rt, stream, peer, Transport::Tcp, Vec::new())
    })
    .await;
}

/// The accept loop of a stream listener: admits each connection against
/// `max_connections` and runs `serve` for it in its own task, until the
/// core stops or the listener is removed.
pub(crate) async fn accept_loop<F, Fut>(
    core: Rc<Core>,
    rt: Rc<MqttListenerRt>,
    listener: TcpListener,
    serve: F,
) where
    F: Fn(Rc<Core>, Rc<MqttListenerRt>, TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accept = async { Some(listener.accept().await) };
        let stop = async {
            core.stopping.wait().or(rt.removed.wait()).await;
            None
        };
        let Some(result) = accept.or(stop).await else {
            break;
        };
        let stream: TcpStream = match result {
            Ok(s) => s,
            Err(e) => {
                rt.accept_failed(&e).await;
                continue;
            }
        };
        if !rt.admit(&core) {
            drop(stream);
            continue;
        }
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        glommio::spawn_local(serve(Rc::clone(&core), Rc::clone(&rt), stream, peer)).detach();
    }
    debug!(listener = %rt.name, "stopped accepting");
}

/// Serves an MQTT-over-WebSocket connection whose upgrade the HTTP
/// listener accepted; `leftover` are bytes read after the request head.
pub(crate) async fn serve_websocket(
    core: Rc<Core>,
    rt: Rc<MqttListenerRt>,
    stream: TcpStream,
    peer: SocketAddr,
    leftover: Vec<u8>,
) {
    task::serve(core, rt, stream, peer, Transport::WebSocket, leftover).await;
}
