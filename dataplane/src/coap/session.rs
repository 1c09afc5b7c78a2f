//! A CoAP device seen on one core: its entry in the connection table, its
//! downlink subscription, the latest downlink payload, its idle clock.
//!
//! ```text
//!  request for device D ─▶ session_for(D) ─┬─ known: refresh last_seen
//!                                          └─ new: max_connections? ─▶ subscribe devices/D/down/# ─▶ conn table
//!  bus ─▶ deliver ─▶ latest = payload (heap copy, bounded) ─▶ notify::notify(D)
//!  idle_timeout without a request or an acknowledged notification ─▶ end
//! ```
//!
//! A session is the device's presence, not an observation: it is made by
//! any request that names the device (after its secret was checked). It
//! joins the core's device index (`Core::device_online`, which takes over
//! an older connection of the device) only when it gains an observer,
//! the device's downlink path; a device that only posts leaves other
//! connections of its own alone.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{info, warn};

use super::{notify, CoapListenerRt, MAX_LATEST_BYTES};
use crate::bus::{Deliver, Subscriber};
use crate::core::{CloseReason, ConnId, Connection, Core};
use crate::message::Message;
use crate::pool::Payload;

/// The last downlink payload a session saw, and its entity tag.
#[derive(Debug, Clone)]
pub(super) struct Latest {
    pub(super) etag: u32,
    pub(super) payload: Payload,
}

/// One device seen on a CoAP listener of this core.
pub(super) struct CoapSession {
    core: Rc<Core>,
    /// The listener (weak: the listener owns its sessions).
    rt: Weak<CoapListenerRt>,
    conn_id: Cell<Option<ConnId>>,
    pub(super) device: Rc<str>,
    /// `devices/{id}/up`, shared by every message without a subtopic.
    pub(super) up_topic: Rc<str>,
    last_seen: Cell<Instant>,
    latest: RefCell<Option<Latest>>,
    next_etag: Cell<u32>,
    /// Joined the core's device index (has had an observer).
    indexed: Cell<bool>,
    subscription: RefCell<Option<(String, Subscriber)>>,
}

impl std::fmt::Debug for CoapSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapSession")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Connection for CoapSession {
    /// Ends the session (the device was taken over or removed, the data
    /// plane stops, the listener was removed).
    fn close(&self, reason: CloseReason) {
        if let Some(rt) = self.rt.upgrade() {
            let mine = rt
                .sessions
                .borrow()
                .get(&self.device)
                .is_some_and(|s| std::ptr::eq(Rc::as_ptr(s), self));
            if mine {
                rt.sessions.borrow_mut().remove(&self.device);
            }
            if matches!(reason, CloseReason::Kicked | CloseReason::DeviceRemoved) {
                rt.proofs.borrow_mut().forget_device(&self.device);
            }
            info!(listener = %rt.name, device = %self.device, ?reason, "coap session ended");
        }
        self.end();
    }

    /// Nothing of a CoAP session is worth waiting for.
    fn begin_drain(&self) {
        self.close(CloseReason::Shutdown);
    }
}

impl Deliver for CoapSession {
    /// A downlink message: kept as the latest payload (a heap copy, so
    /// that it pins no read buffer) and sent to the observers.
    fn deliver(&self, msg: &Message) {
        let Some(rt) = self.rt.upgrade() else {
            return;
        };
        let payload = msg.payload.unpinned();
        let etag = self.next_etag.get().wrapping_add(1);
        self.next_etag.set(etag);
        let latest = Latest { etag, payload };
        self.set_latest(&rt, Some(latest.clone()));
        notify::notify(&self.core, &rt, &self.device, &latest);
    }
}

impl CoapSession {
    /// The latest downlink payload this session saw.
    pub(super) fn latest(&self) -> Option<Latest> {
        self.latest.borrow().clone()
    }

    /// The session was heard from (a request, an ACK of a notification, a
    /// ping of an observer).
    pub(super) fn touch(&self) {
        self.last_seen.set(Instant::now());
    }

    /// Joins the core's device index, once: the device has a downlink
    /// path here now, and an older connection of it elsewhere is taken
    /// over.
    pub(super) fn index_device(&self) {
        if self.indexed.replace(true) {
            return;
        }
        if let Some(id) = self.conn_id.get() {
            self.core.device_online(id, Rc::clone(&self.device));
        }
    }

    /// Replaces the latest payload within the listener's byte bound; one
    /// that does not fit is not kept (counted).
    fn set_latest(&self, rt: &CoapListenerRt, latest: Option<Latest>) {
        let old = self.latest.borrow_mut().take();
        let mut used = rt.latest_bytes.get();
        if let Some(old) = &old {
            used = used.saturating_sub(old.payload.len());
        }
        let latest = latest.filter(|l| {
            let fits = used + l.payload.len() <= MAX_LATEST_BYTES;
            if !fits {
                self.core.coap.drops.inc();
                if let Some(more) = rt.notify_log.allow() {
                    warn!(listener = %rt.name, device = %self.device, limit = MAX_LATEST_BYTES, suppressed = more, "latest downlink payload not kept: the listener's bound is reached");
                }
            }
            fits
        });
        if let Some(l) = &latest {
            used += l.payload.len();
        }
        rt.latest_bytes.set(used);
        *self.latest.borrow_mut() = latest;
    }

    /// Forgets observers and the latest payload, unsubscribes, leaves the
    /// connection table; runs once.
    pub(super) fn end(&self) {
        let Some(id) = self.conn_id.take() else {
            return;
        };
        if let Some(rt) = self.rt.upgrade() {
            notify::forget_device(&self.core, &rt, &self.device);
            self.set_latest(&rt, None);
            rt.spec.open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some((filter, sub)) = self.subscription.borrow_mut().take() {
            self.core.unsubscribe(&filter, &sub);
        }
        self.core.remove_conn(id);
    }
}

/// The session of `device`, made if there is none: `None` when the
/// listener is at `max_connections` (refused, counted and logged).
pub(super) fn session_for(
    core: &Rc<Core>,
    rt: &Rc<CoapListenerRt>,
    device: &str,
) -> Option<Rc<CoapSession>> {
    if let Some(s) = rt.sessions.borrow().get(device) {
        s.touch();
        return Some(Rc::clone(s));
    }
    let max = rt.spec.config.max_connections;
    if rt.spec.open.fetch_add(1, Ordering::Relaxed) + 1 > max {
        rt.spec.open.fetch_sub(1, Ordering::Relaxed);
        core.stats.refused.inc();
        core.coap.errors.inc();
        if let Some(more) = rt.refuse_log.allow() {
            warn!(listener = %rt.name, max_connections = max, suppressed = more, "new coap device refused: listener is at max_connections");
        }
        return None;
    }
    let device: Rc<str> = device.into();
    let session = Rc::new(CoapSession {
        core: Rc::clone(core),
        rt: Rc::downgrade(rt),
        conn_id: Cell::new(None),
        up_topic: format!("devices/{device}/up").into(),
        device: Rc::clone(&device),
        last_seen: Cell::new(Instant::now()),
        latest: RefCell::new(None),
        next_etag: Cell::new(rt.random() as u32),
        indexed: Cell::new(false),
        subscription: RefCell::new(None),
    });
    // `down/#` matches `down` itself too.
    let filter = format!("devices/{device}/down/#");
    let sub: Subscriber = Rc::clone(&session) as Subscriber;
    core.subscribe(&filter, Rc::clone(&sub));
    *session.subscription.borrow_mut() = Some((filter, sub));
    let id = core.add_conn(
        Rc::clone(&rt.name),
        Rc::clone(&session) as Rc<dyn Connection>,
    );
    session.conn_id.set(Some(id));
    rt.sessions
        .borrow_mut()
        .insert(Rc::clone(&device), Rc::clone(&session));
    info!(listener = %rt.name, device = %session.device, "coap device online");
    Some(session)
}

/// The session of `device`, if this core has one.
pub(super) fn session_of(rt: &CoapListenerRt, device: &str) -> Option<Rc<CoapSession>> {
    rt.sessions.borrow().get(device).cloned()
}

/// Ends the sessions silent for longer than the idle timeout.
pub(super) fn expire_idle(core: &Core, rt: &CoapListenerRt) {
    let now = Instant::now();
    let expired: Vec<Rc<CoapSession>> = {
        let mut sessions = rt.sessions.borrow_mut();
        let gone: Vec<Rc<str>> = sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen.get()) >= rt.idle_timeout)
            .map(|(k, _)| Rc::clone(k))
            .collect();
        gone.iter().filter_map(|k| sessions.remove(k)).collect()
    };
    for s in expired {
        core.stats.idle_timeouts.inc();
        info!(listener = %rt.name, device = %s.device, "coap device idle; session ended");
        s.end();
    }
}
