//! An MQTT session: subscriptions, the in-flight window and the queue of
//! messages waiting for it, for as long as the session lives (with its
//! connection, or offline until it expires).
//!
//! Bounds: at most `send_window` QoS 1/2 messages in flight; at most
//! `max_queued_messages` waiting (the overflow policy drops the oldest or
//! the newest, counted); QoS 0 goes straight to the connection's
//! outbound queue or is dropped and counted when it is full, and is not
//! kept for an offline session.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use shoal_protocols::config::QueueOverflow;
use shoal_protocols::mqtt::{QoS, SubscriptionOptions, Version};

use super::conn::MqttConn;
use crate::bus::{Deliver, Subscriber};
use crate::core::Core;
use crate::message::{Message, PublishProps};
use crate::pool::Payload;
use crate::writer::Sent;

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) topic: Rc<str>,
    pub(crate) payload: Payload,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) props: Option<Rc<PublishProps>>,
    pub(crate) sub_id: Option<u32>,
}

impl Outgoing {
    fn expired(&self, now: Instant) -> bool {
        self.props
            .as_ref()
            .and_then(|p| p.expires_at)
            .is_some_and(|at| at <= now)
    }
}

/// A QoS 1/2 message sent and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) packet_id: u16,
    pub(crate) msg: Outgoing,
    /// QoS 2: PUBREC came, PUBREL was sent, PUBCOMP awaited.
    pub(crate) released: bool,
}

/// One subscription of a session, as the bus sees it.
#[derive(Debug)]
pub(crate) struct MqttSub {
    pub(crate) session: Weak<Session>,
    pub(crate) options: SubscriptionOptions,
    pub(crate) sub_id: Option<u32>,
}

impl Deliver for MqttSub {
    fn deliver(&self, msg: &Message) {
        if let Some(session) = self.session.upgrade() {
            session.offer(msg, &self.options, self.sub_id);
        }
    }
}

/// A subscription as the session keeps it.
pub(crate) struct SubEntry {
    pub(crate) options: SubscriptionOptions,
    pub(crate) sub_id: Option<u32>,
    pub(crate) handle: Subscriber,
}

impl std::fmt::Debug for SubEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubEntry")
            .field("options", &self.options)
            .field("sub_id", &self.sub_id)
            .finish_non_exhaustive()
    }
}

/// The will of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Will {
    pub(crate) topic: Rc<str>,
    pub(crate) payload: Payload,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) props: Option<Rc<PublishProps>>,
    pub(crate) delay: Duration,
}

/// The mutable part of a session.
#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) version: Version,
    pub(crate) conn: Option<Rc<MqttConn>>,
    /// By filter as subscribed (`$share/...` included).
    pub(crate) subs: HashMap<Box<str>, SubEntry>,
    pub(crate) inflight: VecDeque<Inflight>,
    pub(crate) pending: VecDeque<Outgoing>,
    next_packet_id: u16,
    /// QoS 2 packet ids received (PUBREC sent), PUBREL awaited.
    pub(crate) incoming_qos2: HashSet<u16>,
    /// How long the session outlives its connection.
    pub(crate) expiry: Duration,
    pub(crate) offline_since: Option<Instant>,
    /// A will waiting for its delay to pass (the connection is gone).
    pub(crate) will_due: Option<(Instant, Will)>,
    /// QoS 1/2 messages the client takes before acknowledging.
    pub(crate) send_window: usize,
}

/// An MQTT session on this core.
#[derive(Debug)]
pub(crate) struct Session {
    /// Per-core serial (No Local compares it).
    pub(crate) key: u64,
    pub(crate) client_id: Rc<str>,
    pub(crate) core: Rc<Core>,
    pub(crate) state: RefCell<SessionState>,
    /// Set when the session ended: late deliveries are ignored.
    pub(crate) ended: Cell<bool>,
}

impl Session {
    pub(crate) fn new(core: &Rc<Core>, key: u64, client_id: Rc<str>, version: Version) -> Self {
        Self {
            key,
            client_id,
            core: Rc::clone(core),
            state: RefCell::new(SessionState {
                version,
                conn: None,
                subs: HashMap::new(),
                inflight: VecDeque::new(),
                pending: VecDeque::new(),
                next_packet_id: 0,
                incoming_qos2: HashSet::new(),
                expiry: Duration::ZERO,
                offline_since: None,
                will_due: None,
                send_window: 1,
            }),
            ended: Cell::new(false),
        }
    }

    /// A message from the bus for subscription (`options`, `sub_id`).
    pub(crate) fn offer(&self, msg: &Message, options: &SubscriptionOptions, sub_id: Option<u32>) {
        if self.ended.get() || (options.no_local && msg.origin.session == self.key) {
            return;
        }
        let qos = QoS::from_bits(msg.qos.min(options.qos as u8)).unwrap_or_default();
        let out = Outgoing {
            topic: Rc::clone(&msg.topic),
            payload: msg.payload.clone(),
            qos,
            retain: options.retain_as_published && msg.retain,
            props: msg.props.clone(),
            sub_id,
        };
        if msg.props.as_ref().is_some_and(|p| p.expires_at.is_some()) && out.expired(Instant::now())
        {
            self.core.stats.mqtt_expired.inc();
            return;
        }
        self.enqueue(out);
    }

    /// Sends `out` now if the window and the connection allow, else queues
    /// it (QoS 1/2) or drops it (QoS 0, counted).
    pub(crate) fn enqueue(&self, out: Outgoing) {
        let stats = &self.core.stats;
        let mut st = self.state.borrow_mut();
        if out.qos == QoS::AtMostOnce {
            match &st.conn {
                Some(conn) => match conn.send_publish(&out, None, false) {
                    Sent::Queued => stats.messages_out.inc(),
                    Sent::NoRoom | Sent::Closed | Sent::Discarded => stats.outbound_drops.inc(),
                },
                None => stats.mqtt_offline_drops.inc(),
            }
            return;
        }
        if st.conn.is_some() && st.pending.is_empty() && st.inflight.len() < st.send_window {
            match self.try_send_new(&mut st, out) {
                Ok(()) => return,
                Err(back) => {
                    self.queue(&mut st, back);
                    return;
                }
            }
        }
        self.queue(&mut st, out);
    }

    /// Assigns a packet id and sends; gives the message back when the
    /// connection has no room.
    fn try_send_new(&self, st: &mut SessionState, out: Outgoing) -> Result<(), Outgoing> {
        let Some(conn) = st.conn.clone() else {
            return Err(out);
        };
        let Some(packet_id) = next_packet_id(st) else {
            return Err(out);
        };
        match conn.send_publish(&out, Some(packet_id), false) {
            Sent::Queued => {
                self.core.stats.messages_out.inc();
                st.inflight.push_back(Inflight {
                    packet_id,
                    msg: out,
                    released: false,
                });
                Ok(())
            }
            // Too large for the client: dropped, as if delivered.
            Sent::Discarded => {
                self.core.stats.outbound_drops.inc();
                Ok(())
            }
            Sent::NoRoom | Sent::Closed => Err(out),
        }
    }

    fn queue(&self, st: &mut SessionState, out: Outgoing) {
        let settings = self.core.settings.borrow();
        let max = settings.mqtt.max_queued_messages as usize;
        // A queue that waits long (offline) must not pin read buffers.
        let out = if st.conn.is_none() {
            Outgoing {
                payload: out.payload.unpinned(),
                ..out
            }
        } else {
            out
        };
        if st.pending.len() >= max {
            self.core.stats.mqtt_queue_drops.inc();
            match settings.mqtt.queue_overflow {
                QueueOverflow::DropOldest => {
                    st.pending.pop_front();
                }
                QueueOverflow::DropNewest => return,
            }
        }
        st.pending.push_back(out);
    }

    /// Moves queued messages into the window while it and the connection
    /// have room.
    pub(crate) fn pump(&self) {
        let mut st = self.state.borrow_mut();
        if st.conn.is_none() {
            return;
        }
        let now = Instant::now();
        while st.inflight.len() < st.send_window {
            let Some(out) = st.pending.pop_front() else {
                break;
            };
            if out.expired(now) {
                self.core.stats.mqtt_expired.inc();
                continue;
            }
            if let Err(back) = self.try_send_new(&mut st, out) {
                st.pending.push_front(back);
                break;
            }
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the message is done.
    pub(crate) fn acknowledged(&self, packet_id: u16) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(at) = st.inflight.iter().position(|f| f.packet_id == packet_id) else {
            return false;
        };
        st.inflight.remove(at);
        drop(st);
        self.pump();
        true
    }

    /// PUBREC: the client has the QoS 2 message; PUBREL goes out.
    pub(crate) fn received(&self, packet_id: u16) -> bool {
        let mut st = self.state.borrow_mut();
        match st.inflight.iter_mut().find(|f| f.packet_id == packet_id) {
            Some(f) if f.msg.qos == QoS::ExactlyOnce => {
                f.released = true;
                true
            }
            _ => false,
        }
    }

    /// After a reconnect: what was in flight goes again (PUBLISH with DUP,
    /// or PUBREL), then the queue.
    pub(crate) fn resend_inflight(&self) {
        let st = self.state.borrow();
        let Some(conn) = st.conn.clone() else {
            return;
        };
        for f in &st.inflight {
            if f.released {
                conn.send_pubrel(f.packet_id);
            } else {
                // Forced: the window is bounded, and these were counted
                // against it already.
                conn.send_publish_forced(&f.msg, f.packet_id);
            }
        }
        drop(st);
        self.pump();
    }
}

/// The next free packet id (1..=65535, skipping those in flight).
fn next_packet_id(st: &mut SessionState) -> Option<u16> {
    for _ in 0..=u16::MAX {
        st.next_packet_id = st.next_packet_id.wrapping_add(1);
        if st.next_packet_id == 0 {
            st.next_packet_id = 1;
        }
        let id = st.next_packet_id;
        if !st.inflight.iter().any(|f| f.packet_id == id) {
            return Some(id);
        }
    }
    None
}
