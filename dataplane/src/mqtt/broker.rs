//! The broker's per-core state: the sessions of this core, the retained
//! messages, the products' permissions, and session hand-over between
//! cores.
//!
//! A session lives on the core of its connection. When a client connects,
//! its core takes the session from wherever it is: from its own table, and
//! from every other core with a [`MeshMsg::SessionClaim`]; a core that has
//! it closes its connection (Session taken over) and hands the session
//! over (subscriptions, messages in flight and queued) unless the new
//! connection asked for a clean start.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use shoal_protocols::config::MqttSettings;
use shoal_protocols::mqtt::{QoS, SubscriptionOptions, Version};
use tracing::{info, warn};

use super::acl::AclTable;
use super::retained::{Retained, RetainedStore};
use super::session::{Inflight, MqttSub, Outgoing, Session, SubEntry, Will};
use crate::bus::Subscriber;
use crate::core::{CloseReason, Connection, Core};
use crate::message::{CrossMessage, MeshMsg, Message, Origin, PublishProps};
use crate::pool::Payload;
use crate::signal::Kick;

/// How long a connecting client waits for the other cores to hand over
/// its session.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// How often offline sessions and delayed wills are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A session on its way to another core (owned, `Send`).
#[derive(Debug)]
pub(crate) struct SessionTransfer {
    subs: Vec<(Box<str>, SubscriptionOptions, Option<u32>)>,
    /// In flight first (with their packet ids), then queued.
    messages: Vec<TransferMessage>,
    incoming_qos2: Vec<u16>,
}

#[derive(Debug)]
struct TransferMessage {
    topic: Box<str>,
    payload: Box<[u8]>,
    qos: QoS,
    retain: bool,
    props: Option<Box<PublishProps>>,
    sub_id: Option<u32>,
    /// In flight: its packet id, and whether PUBREL was sent.
    inflight: Option<(u16, bool)>,
}

#[derive(Debug, Default)]
struct ClaimSlot {
    /// Answers still expected.
    waiting: Cell<usize>,
    found: RefCell<Option<Box<SessionTransfer>>>,
    kick: Kick,
}

/// One core's broker state.
#[derive(Debug)]
pub(crate) struct Broker {
    sessions: RefCell<HashMap<Rc<str>, Rc<Session>>>,
    /// The sessions of `sessions` without a connection, by key: what the
    /// sweeper and the figures visit (connected sessions cost them nothing).
    offline: RefCell<HashMap<u64, Rc<Session>>>,
    next_key: Cell<u64>,
    pub(crate) retained: RefCell<RetainedStore>,
    acl: RefCell<Rc<AclTable>>,
    claims: RefCell<HashMap<u64, Rc<ClaimSlot>>>,
    next_claim: Cell<u64>,
    next_assigned: Cell<u64>,
}

impl Broker {
    pub(crate) fn new(settings: &MqttSettings) -> Self {
        Self {
            sessions: RefCell::new(HashMap::new()),
            offline: RefCell::new(HashMap::new()),
            next_key: Cell::new(0),
            retained: RefCell::new(RetainedStore::new(
                settings.max_retained_messages,
                settings.max_retained_bytes,
            )),
            acl: RefCell::new(Rc::new(AclTable::default())),
            claims: RefCell::new(HashMap::new()),
            next_claim: Cell::new(0),
            next_assigned: Cell::new(0),
        }
    }

    /// A number for a client id the broker assigns (unique on this core).
    pub(crate) fn assign_id(&self) -> u64 {
        let n = self.next_assigned.get() + 1;
        self.next_assigned.set(n);
        n
    }

    /// A config was committed: new permissions and bounds.
    pub(crate) fn configure(&self, acl: AclTable, settings: &MqttSettings) {
        *self.acl.borrow_mut() = Rc::new(acl);
        self.retained
            .borrow_mut()
            .set_limits(settings.max_retained_messages, settings.max_retained_bytes);
    }

    pub(crate) fn acl(&self) -> Rc<AclTable> {
        Rc::clone(&self.acl.borrow())
    }

    /// Sessions, offline sessions, retained messages.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.sessions.borrow().len() as u64,
            self.offline.borrow().len() as u64,
            self.retained.borrow().len() as u64,
        )
    }

    /// `session` lost its connection and lives on until it expires.
    pub(crate) fn mark_offline(&self, session: &Rc<Session>, now: Instant) {
        session.state.borrow_mut().offline_since = Some(now);
        self.offline
            .borrow_mut()
            .insert(session.key, Rc::clone(session));
    }

    /// `session` has a connection again.
    pub(crate) fn mark_online(&self, session: &Session) {
        session.state.borrow_mut().offline_since = None;
        self.offline.borrow_mut().remove(&session.key);
    }

    /// A fresh session key (No Local compares them).
    pub(crate) fn new_session(
        &self,
        core: &Rc<Core>,
        client_id: Rc<str>,
        version: Version,
    ) -> Rc<Session> {
        let key = self.next_key.get() + 1;
        self.next_key.set(key);
        // Keys are unique per core; the high bits keep cores apart.
        let key = key | ((core.mesh_id() as u64) << 48);
        let session = Rc::new(Session::new(core, key, Rc::clone(&client_id), version));
        self.sessions
            .borrow_mut()
            .insert(client_id, Rc::clone(&session));
        session
    }

    /// Takes `client_id`'s session out of this core's table: its connection
    /// (if any) is closed as taken over; with `clean_start` the session
    /// ends, else it is returned to be resumed.
    pub(crate) fn take_local(
        &self,
        core: &Core,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Rc<Session>> {
        let session = self.sessions.borrow_mut().remove(client_id)?;
        self.offline.borrow_mut().remove(&session.key);
        let old = session.state.borrow_mut().conn.take();
        if let Some(old) = old {
            core.stats.mqtt_takeovers.inc();
            info!(
                client_id,
                "client connected again; its older connection is taken over"
            );
            old.close(CloseReason::TakenOver);
        }
        if clean_start {
            end_session(core, &session);
            return None;
        }
        Some(session)
    }

    /// Ends `session` if it is still this core's session of its client.
    pub(crate) fn forget(&self, core: &Core, session: &Rc<Session>) {
        let mut sessions = self.sessions.borrow_mut();
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Rc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
        drop(sessions);
        self.offline.borrow_mut().remove(&session.key);
        end_session(core, session);
    }

    /// Puts a resumed session back in the table.
    pub(crate) fn reinsert(&self, session: &Rc<Session>) {
        self.sessions
            .borrow_mut()
            .insert(Rc::clone(&session.client_id), Rc::clone(session));
    }

    /// Asks every other core for `client_id`'s session; waits for their
    /// answers (bounded by [`CLAIM_TIMEOUT`]).
    pub(crate) async fn claim_remote(
        &self,
        core: &Rc<Core>,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Box<SessionTransfer>> {
        let peers = core.shards().saturating_sub(1);
        if peers == 0 {
            return None;
        }
        let claim = self.next_claim.get() + 1;
        self.next_claim.set(claim);
        let slot = Rc::new(ClaimSlot::default());
        slot.waiting.set(peers);
        self.claims.borrow_mut().insert(claim, Rc::clone(&slot));
        core.broadcast(|| {
            Some(MeshMsg::SessionClaim {
                claim,
                client_id: client_id.into(),
                clean_start,
            })
        });
        let answered = async {
            while slot.waiting.get() > 0 {
                slot.kick.kicked().await;
            }
            true
        };
        let timeout = async {
            glommio::timer::sleep(CLAIM_TIMEOUT).await;
            false
        };
        if !answered.or(timeout).await {
            warn!(
                client_id,
                "another core did not answer for the session in time"
            );
        }
        self.claims.borrow_mut().remove(&claim);
        let found = slot.found.borrow_mut().take();
        found
    }

    /// Another core's client connected with `client_id`: close ours, hand
    /// the session over (or end it).
    pub(crate) fn on_claim(
        &self,
        core: &Core,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Box<SessionTransfer>> {
        let session = self.take_local(core, client_id, clean_start)?;
        let transfer = pack(&session);
        end_session(core, &session);
        Some(Box::new(transfer))
    }

    /// A core answered claim `claim`.
    pub(crate) fn on_handover(&self, claim: u64, session: Option<Box<SessionTransfer>>) {
        let slot = self.claims.borrow().get(&claim).cloned();
        if let Some(slot) = slot {
            if let Some(s) = session {
                *slot.found.borrow_mut() = Some(s);
            }
            slot.waiting.set(slot.waiting.get().saturating_sub(1));
            slot.kick.kick();
        }
    }

    /// Stores (or clears) the retained message of `msg.topic`; false when
    /// the store is full.
    pub(crate) fn store_retained(&self, core: &Core, msg: &Message) -> bool {
        let retained = Retained {
            payload: msg.payload.unpinned(),
            qos: msg.qos,
            props: msg.props.clone(),
        };
        let stored = self.retained.borrow_mut().set(&msg.topic, retained).is_ok();
        if !stored {
            core.stats.mqtt_retained_refused.inc();
        }
        stored
    }

    /// Offline sessions past their expiry end; delayed wills fall due;
    /// beyond `max_offline_sessions` the longest offline ends. Visits only
    /// the offline sessions (a will waits only while its session is
    /// offline).
    pub(crate) fn sweep(&self, core: &Rc<Core>, now: Instant) {
        let max_offline = core.settings.borrow().mqtt.max_offline_sessions as usize;
        let mut ended = Vec::new();
        let mut wills = Vec::new();
        let mut offline: Vec<(Instant, Rc<Session>)> = Vec::new();
        for s in self.offline.borrow().values() {
            let mut st = s.state.borrow_mut();
            if let Some((due, _)) = &st.will_due {
                if *due <= now {
                    if let Some((_, will)) = st.will_due.take() {
                        wills.push(will);
                    }
                }
            }
            if let Some(since) = st.offline_since {
                if st.conn.is_none() {
                    if since + st.expiry <= now {
                        ended.push(Rc::clone(s));
                    } else {
                        offline.push((since, Rc::clone(s)));
                    }
                }
            }
        }
        if offline.len() > max_offline {
            offline.sort_by_key(|(since, _)| *since);
            let extra = offline.len() - max_offline;
            ended.extend(offline.into_iter().take(extra).map(|(_, s)| s));
        }
        for s in ended {
            if let Some((_, will)) = s.state.borrow_mut().will_due.take() {
                wills.push(will);
            }
            self.forget(core, &s);
        }
        for will in wills {
            publish_will(core, will, None, None);
        }
    }
}

/// Runs [`Broker::sweep`] for as long as the core runs.
pub(crate) async fn run_sweeper(core: Rc<Core>) {
    loop {
        let stop = async {
            core.stopping.wait().await;
            true
        };
        let tick = async {
            glommio::timer::sleep(SWEEP_EVERY).await;
            false
        };
        if tick.or(stop).await {
            return;
        }
        core.mqtt.sweep(&core, Instant::now());
    }
}

/// Unsubscribes everything of `session` and marks it ended.
fn end_session(core: &Core, session: &Session) {
    session.ended.set(true);
    let subs: Vec<(Box<str>, SubEntry)> = session.state.borrow_mut().subs.drain().collect();
    for (filter, entry) in subs {
        unsubscribe_entry(core, &filter, &entry.handle);
    }
    let mut st = session.state.borrow_mut();
    st.pending.clear();
    st.inflight.clear();
}

/// Removes one subscription handle from the bus.
pub(crate) fn unsubscribe_entry(core: &Core, filter: &str, handle: &Subscriber) {
    match split_shared(filter) {
        Some((group, inner)) => core.unsubscribe_shared(group, inner, handle),
        None => core.unsubscribe(filter, handle),
    }
}

/// `$share/{group}/{filter}` → (group, filter).
pub(crate) fn split_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// Adds a subscription to the bus and the session's table; replaces the
/// one it had for the same filter. Whether it existed before.
pub(crate) fn subscribe_entry(
    core: &Core,
    session: &Rc<Session>,
    filter: &str,
    options: SubscriptionOptions,
    sub_id: Option<u32>,
) -> bool {
    let handle: Subscriber = Rc::new(MqttSub {
        session: Rc::downgrade(session),
        options,
        sub_id,
    });
    let old = session.state.borrow_mut().subs.insert(
        filter.into(),
        SubEntry {
            options,
            sub_id,
            handle: Rc::clone(&handle),
        },
    );
    if let Some(old) = &old {
        unsubscribe_entry(core, filter, &old.handle);
    }
    match split_shared(filter) {
        Some((group, inner)) => core.subscribe_shared(group, inner, handle),
        None => core.subscribe(filter, handle),
    }
    old.is_some()
}

/// The session's state in owned form.
fn pack(session: &Session) -> SessionTransfer {
    let st = session.state.borrow();
    let owned = |m: &Outgoing, inflight: Option<(u16, bool)>| TransferMessage {
        topic: m.topic.as_ref().into(),
        payload: m.payload.as_slice().into(),
        qos: m.qos,
        retain: m.retain,
        props: m.props.as_deref().map(|p| Box::new(p.clone())),
        sub_id: m.sub_id,
        inflight,
    };
    SessionTransfer {
        subs: st
            .subs
            .iter()
            .map(|(f, e)| (f.clone(), e.options, e.sub_id))
            .collect(),
        messages: st
            .inflight
            .iter()
            .map(|f| owned(&f.msg, Some((f.packet_id, f.released))))
            .chain(st.pending.iter().map(|m| owned(m, None)))
            .collect(),
        incoming_qos2: st.incoming_qos2.iter().copied().collect(),
    }
}

/// Rebuilds a session handed over by another core into `session`.
pub(crate) fn unpack(core: &Core, session: &Rc<Session>, transfer: SessionTransfer) {
    for (filter, options, sub_id) in &transfer.subs {
        subscribe_entry(core, session, filter, *options, *sub_id);
    }
    let mut st = session.state.borrow_mut();
    for m in transfer.messages {
        let out = Outgoing {
            topic: m.topic.into(),
            payload: Payload::heap(&m.payload),
            qos: m.qos,
            retain: m.retain,
            props: m.props.map(|p| Rc::new(*p)),
            sub_id: m.sub_id,
        };
        match m.inflight {
            Some((packet_id, released)) => st.inflight.push_back(Inflight {
                packet_id,
                msg: out,
                released,
            }),
            None => st.pending.push_back(out),
        }
    }
    st.incoming_qos2.extend(transfer.incoming_qos2);
}

/// Publishes a will (its connection is gone, or its delay passed).
pub(crate) fn publish_will(
    core: &Rc<Core>,
    will: Will,
    listener: Option<Rc<str>>,
    device: Option<Rc<str>>,
) {
    let msg = Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        origin: Origin {
            listener,
            device,
            session: 0,
        },
        hops: 0,
        props: will.props,
    };
    if msg.retain {
        retain_everywhere(core, &msg);
    }
    core.publish(msg);
}

/// Stores a retained publish here and sends it to every other core.
pub(crate) fn retain_everywhere(core: &Core, msg: &Message) {
    core.mqtt.store_retained(core, msg);
    core.broadcast(|| {
        let payload = core.pool.detach_copy(msg.payload.as_slice());
        payload.map(|p| MeshMsg::Retain(CrossMessage::of(msg, p)))
    });
}
