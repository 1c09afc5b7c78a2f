//! Observers of devices' downlink and the notifications sent to them
//! (RFC 7641), with the reliability of CON messages (RFC 7252 §4.2) and
//! Block2 for large payloads (RFC 7959 §3.4).
//!
//! ```text
//!  deliver(D) ─▶ every observer (peer, token) of D ─▶ peer queue (≤ MAX_QUEUED_PER_PEER, oldest dropped)
//!  pump(peer): nothing outstanding (NSTART 1) and no Block2 transfer held
//!     ─▶ CON 2.05 Observe=n ETag [Block2 0/M + Size2] ─▶ socket ─▶ Retransmitter
//!  ACK ─▶ next; RST ─▶ observation ended; no ACK after MAX_RETRANSMIT ─▶ observation ended (give-up)
//!  Block2 notification: the peer's queue waits until it fetched the last block (GET + Block2 n,
//!  served from the held body) or BLOCK2_HOLD_MS passed
//! ```
//!
//! A give-up ends the observation rather than being retried: a client that
//! took a notification but whose ACK was lost may not acknowledge the
//! retransmission (libcoap 4.3 does not), and the observation is then as
//! good as gone. The client registers again when it wants to.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;

use shoal_protocols::coap::{
    Block2Slice, CoapError, Code, MessageBuilder, MessageIdCounter, MessageType, ObserveConfig,
    ObserverRegistry, OptionNumber, Registered, RetransmitConfig, RetransmitEvent, Retransmitter,
    Token,
};
use tracing::{debug, warn};

use super::session::{session_of, CoapSession, Latest};
use super::{CoapListenerRt, MAX_OBSERVERS, MAX_OBSERVERS_PER_DEVICE, MAX_QUEUED_PER_PEER};
use crate::core::Core;

/// How long a peer's next notification waits for it to fetch the blocks
/// of a Block2 notification.
const BLOCK2_HOLD_MS: u64 = 3_000;

/// A notification waiting for its peer.
#[derive(Debug)]
struct Queued {
    token: Token,
    latest: Latest,
}

/// The body of a Block2 notification a peer is fetching.
#[derive(Debug)]
struct Transfer {
    device: Rc<str>,
    latest: Latest,
    until_ms: u64,
}

/// What goes out to one observing peer.
#[derive(Debug)]
struct PeerOut {
    ids: MessageIdCounter,
    /// Its observations: token and block size exponent.
    observing: Vec<(Token, u8)>,
    queue: VecDeque<Queued>,
    transfer: Option<Transfer>,
}

/// The observers of one listener on one core and what is sent to them.
#[derive(Debug)]
pub(super) struct Notifier {
    observers: ObserverRegistry<SocketAddr, Rc<str>>,
    retransmit: Retransmitter<SocketAddr>,
    peers: HashMap<SocketAddr, PeerOut>,
}

impl Notifier {
    pub(super) fn new() -> Self {
        Self {
            observers: ObserverRegistry::new(ObserveConfig {
                max_observers: MAX_OBSERVERS,
                ..ObserveConfig::default()
            }),
            retransmit: Retransmitter::new(RetransmitConfig {
                max_outstanding: MAX_OBSERVERS,
                ..RetransmitConfig::default()
            }),
            peers: HashMap::new(),
        }
    }

    /// Ends an observation and drops what was queued for it.
    fn drop_observation(&mut self, core: &Core, peer: SocketAddr, token: Token) -> bool {
        if self.observers.deregister(&peer, token).is_none() {
            return false;
        }
        core.coap.observers.dec();
        if let Some(out) = self.peers.get_mut(&peer) {
            out.observing.retain(|(t, _)| *t != token);
            out.queue.retain(|q| q.token != token);
        }
        self.forget_idle_peer(peer);
        true
    }

    /// Forgets a peer that has nothing left here.
    fn forget_idle_peer(&mut self, peer: SocketAddr) {
        let idle = self.peers.get(&peer).is_some_and(|out| {
            out.observing.is_empty() && out.queue.is_empty() && out.transfer.is_none()
        });
        if idle && self.retransmit.outstanding(&peer) == 0 {
            self.peers.remove(&peer);
        }
    }
}

/// Registers `peer` with `token` as an observer of the session's device
/// (a GET with Observe 0); the Observe value of the answer. Refused
/// ([`CoapError::ObserversFull`]) beyond a bound: answer without Observe.
pub(super) fn register(
    core: &Core,
    rt: &CoapListenerRt,
    peer: SocketAddr,
    token: Token,
    szx: u8,
    session: &CoapSession,
) -> Result<u32, CoapError> {
    let now = rt.now_ms();
    let registered = {
        let mut n = rt.notifier.borrow_mut();
        // Known: the same (peer, token) re-registering the same device.
        // A token moved to another device counts against that device.
        let known = n
            .observers
            .resource(&peer, token)
            .is_some_and(|device| **device == *session.device);
        if !known && n.observers.observers(&session.device).count() >= MAX_OBSERVERS_PER_DEVICE {
            return Err(CoapError::ObserversFull {
                limit: MAX_OBSERVERS_PER_DEVICE,
            });
        }
        let registered = n
            .observers
            .register(now, &peer, token, Rc::clone(&session.device))?;
        let out = n.peers.entry(peer).or_insert_with(|| PeerOut {
            ids: MessageIdCounter::new(rt.random() as u16),
            observing: Vec::new(),
            queue: VecDeque::new(),
            transfer: None,
        });
        match out.observing.iter_mut().find(|(t, _)| *t == token) {
            Some(observation) => observation.1 = szx,
            None => out.observing.push((token, szx)),
        }
        registered
    };
    if let Registered::Added { .. } = registered {
        core.coap.observers.inc();
        session.index_device();
    }
    Ok(registered.observe())
}

/// Ends the observation of `peer` with `token` (Observe 1, or a plain GET
/// with the token); whether there was one.
pub(super) fn deregister(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, token: Token) -> bool {
    rt.notifier.borrow_mut().drop_observation(core, peer, token)
}

/// Ends every observation of `device` (its session ended).
pub(super) fn forget_device(core: &Core, rt: &CoapListenerRt, device: &Rc<str>) {
    let mut n = rt.notifier.borrow_mut();
    let observers: Vec<(SocketAddr, Token)> = n
        .observers
        .observers(device)
        .map(|(peer, token)| (*peer, token))
        .collect();
    for (peer, token) in observers {
        n.drop_observation(core, peer, token);
    }
}

/// Queues `latest` for every observer of `device` and sends what each
/// peer may take now.
pub(super) fn notify(core: &Core, rt: &CoapListenerRt, device: &Rc<str>, latest: &Latest) {
    let peers: Vec<SocketAddr> = {
        let mut n = rt.notifier.borrow_mut();
        if n.observers.observers(device).next().is_none() {
            return;
        }
        let targets: Vec<(SocketAddr, Token)> = n
            .observers
            .observers(device)
            .map(|(peer, token)| (*peer, token))
            .collect();
        for (peer, token) in &targets {
            let Some(out) = n.peers.get_mut(peer) else {
                continue;
            };
            if out.queue.len() >= MAX_QUEUED_PER_PEER {
                out.queue.pop_front();
                core.coap.drops.inc();
                core.stats.outbound_drops.inc();
                if let Some(more) = rt.notify_log.allow() {
                    warn!(listener = %rt.name, %peer, device = %device, limit = MAX_QUEUED_PER_PEER, suppressed = more, "coap observer is behind; oldest queued notification dropped");
                }
            }
            out.queue.push_back(Queued {
                token: *token,
                latest: latest.clone(),
            });
        }
        let mut peers: Vec<SocketAddr> = targets.into_iter().map(|(peer, _)| peer).collect();
        peers.dedup();
        peers
    };
    for peer in peers {
        pump(core, rt, peer);
    }
}

/// Sends the peer's next notifications while NSTART and its Block2
/// transfer allow.
pub(super) fn pump(core: &Core, rt: &CoapListenerRt, peer: SocketAddr) {
    let mut out_buf = rt.take_scratch();
    loop {
        let now = rt.now_ms();
        let mut n = rt.notifier.borrow_mut();
        let Notifier {
            observers,
            retransmit,
            peers,
        } = &mut *n;
        let Some(out) = peers.get_mut(&peer) else {
            break;
        };
        if out.transfer.as_ref().is_some_and(|t| t.until_ms > now) || !retransmit.can_send(&peer) {
            break;
        }
        out.transfer = None;
        let Some(item) = out.queue.pop_front() else {
            break;
        };
        let Some(observe) = observers.next_notification(now, &peer, item.token) else {
            continue;
        };
        let Some(device) = observers.resource(&peer, item.token).cloned() else {
            continue;
        };
        let szx = out
            .observing
            .iter()
            .find(|(t, _)| *t == item.token)
            .map_or(shoal_protocols::coap::MAX_SZX, |(_, szx)| *szx);
        let message_id = out.ids.next_id();
        out_buf.clear();
        let blockwise = encode_notification(
            &mut out_buf,
            message_id,
            item.token,
            observe,
            &item.latest,
            szx,
        );
        rt.send(core, peer, &out_buf);
        core.stats.messages_out.inc();
        core.coap.notifications.inc();
        if let Err(e) = retransmit.send(now, &peer, &out_buf, rt.random_fraction()) {
            // Cannot happen after can_send; the notification went out once.
            debug!(listener = %rt.name, %peer, "notification not tracked: {e}");
        }
        if blockwise {
            out.transfer = Some(Transfer {
                device,
                latest: item.latest,
                until_ms: now + BLOCK2_HOLD_MS,
            });
        }
    }
    rt.put_scratch(out_buf);
}

/// Writes a CON 2.05 notification: Observe, ETag, and the whole payload or
/// its first block (with Block2 and Size2). Whether it is block-wise.
pub(super) fn encode_notification(
    out: &mut Vec<u8>,
    message_id: u16,
    token: Token,
    observe: u32,
    latest: &Latest,
    szx: u8,
) -> bool {
    let body = latest.payload.as_slice();
    let etag = latest.etag.to_be_bytes();
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut message =
        MessageBuilder::new(MessageType::Confirmable, Code::CONTENT, message_id, token);
    // A handful of options in an empty builder: none can fail.
    let _ = message.observe(observe);
    let _ = message.option(OptionNumber::ETAG, &etag);
    let slice = Block2Slice::of(body, None, szx).unwrap_or(Block2Slice {
        block: None,
        payload: &[],
    });
    if let Some(block) = slice.block {
        let _ = message.block(OptionNumber::BLOCK2, block);
        let _ = message.option_uint(OptionNumber::SIZE2, size);
    }
    message.payload(slice.payload);
    message.encode(out);
    slice.block.is_some()
}

/// The body of the Block2 notification `peer` is fetching for `device`,
/// if it is fetching one; its hold is extended.
pub(super) fn transfer_body(rt: &CoapListenerRt, peer: SocketAddr, device: &str) -> Option<Latest> {
    let now = rt.now_ms();
    let mut n = rt.notifier.borrow_mut();
    let transfer = n.peers.get_mut(&peer)?.transfer.as_mut()?;
    if &*transfer.device != device {
        return None;
    }
    transfer.until_ms = now + BLOCK2_HOLD_MS;
    Some(transfer.latest.clone())
}

/// `peer` fetched the last block of its Block2 notification: its next
/// notifications may go.
pub(super) fn transfer_done(core: &Core, rt: &CoapListenerRt, peer: SocketAddr) {
    let done = rt
        .notifier
        .borrow_mut()
        .peers
        .get_mut(&peer)
        .and_then(|out| out.transfer.take())
        .is_some();
    if done {
        pump(core, rt, peer);
    }
}

/// An ACK from `peer`: its outstanding notification arrived.
pub(super) fn on_ack(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, message_id: u16) {
    let device = {
        let mut n = rt.notifier.borrow_mut();
        let Some(token) = n.retransmit.on_ack(&peer, message_id) else {
            return;
        };
        n.observers.resource(&peer, token).cloned()
    };
    if let Some(session) = device.and_then(|d| session_of(rt, &d)) {
        session.touch();
    }
    pump(core, rt, peer);
}

/// An RST from `peer`: it rejected a notification, the observation ends
/// (RFC 7641 §3.6).
pub(super) fn on_reset(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, message_id: u16) {
    let ended = {
        let mut n = rt.notifier.borrow_mut();
        match n.retransmit.on_rst(&peer, message_id) {
            Some(token) => n.drop_observation(core, peer, token),
            None => return,
        }
    };
    if ended {
        debug!(listener = %rt.name, %peer, "coap observer reset a notification; observation ended");
    }
    pump(core, rt, peer);
}

/// A ping from `peer`: the sessions it observes are alive.
pub(super) fn on_ping(rt: &CoapListenerRt, peer: SocketAddr) {
    let devices: Vec<Rc<str>> = {
        let n = rt.notifier.borrow();
        let Some(out) = n.peers.get(&peer) else {
            return;
        };
        out.observing
            .iter()
            .filter_map(|(token, _)| n.observers.resource(&peer, *token).cloned())
            .collect()
    };
    for device in devices {
        if let Some(session) = session_of(rt, &device) {
            session.touch();
        }
    }
}

/// Retransmits what is due; a notification given up ends its observation.
pub(super) fn retransmit_due(core: &Core, rt: &CoapListenerRt) {
    let now = rt.now_ms();
    let mut gave_up: Vec<(SocketAddr, Token)> = Vec::new();
    {
        let mut n = rt.notifier.borrow_mut();
        if n.retransmit.poll_timeout().is_none_or(|due| due > now) {
            return;
        }
        while let Some(event) = n.retransmit.poll(now) {
            match event {
                RetransmitEvent::Retransmit { peer, bytes, .. } => {
                    rt.send(core, *peer, bytes);
                    core.coap.retransmissions.inc();
                }
                RetransmitEvent::GaveUp { peer, token, .. } => gave_up.push((peer, token)),
            }
        }
        for (peer, token) in &gave_up {
            core.coap.give_ups.inc();
            if n.drop_observation(core, *peer, *token) {
                if let Some(more) = rt.notify_log.allow() {
                    warn!(listener = %rt.name, %peer, suppressed = more, "coap observer did not acknowledge a notification; observation ended");
                }
            }
            n.forget_idle_peer(*peer);
        }
    }
    for (peer, _) in gave_up {
        pump(core, rt, peer);
    }
}

/// Releases the peers whose Block2 transfer was not fetched in time.
pub(super) fn expire_transfers(core: &Core, rt: &CoapListenerRt, now: u64) {
    let stale: Vec<SocketAddr> = rt
        .notifier
        .borrow()
        .peers
        .iter()
        .filter(|(_, out)| out.transfer.as_ref().is_some_and(|t| t.until_ms <= now))
        .map(|(peer, _)| *peer)
        .collect();
    for peer in stale {
        pump(core, rt, peer);
        rt.notifier.borrow_mut().forget_idle_peer(peer);
    }
}
