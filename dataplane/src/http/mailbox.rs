//! Downlink mailboxes of HTTP devices, and the polls that empty them.
//!
//! A device that polls `GET /v1/devices/{id}/messages` gets a mailbox on
//! its owner core (the core that owns its registry shard), subscribed to
//! `devices/{id}/down/#`. The mailbox keeps what arrives between polls
//! (bounded in messages and bytes, oldest dropped and counted) and lives
//! until nobody has polled it for `mailbox_idle`. A poll on any core asks
//! the owner, so a device's polls see one queue whichever core their
//! connection lands on:
//!
//! ```text
//! poll on core A ──MailboxPoll──▶ owner core B: mailbox has messages? ──▶ MailboxBatch now
//!                                               empty: park the poll ──▶ MailboxBatch on the
//!      ◀─────────────MailboxBatch──────────────  first message, or empty after `wait`
//! poll gives up (wait + grace) ──MailboxCancel──▶ B forgets the parked poll
//! ```
//!
//! One poll per device is parked at a time: a newer one answers the older
//! one empty. Messages sent to a poll that has gone (its client left while
//! the answer crossed cores) are counted as lost.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use tracing::warn;

use crate::board::HttpFigures;
use crate::bus::{Deliver, Subscriber};
use crate::core::Core;
use crate::message::{MeshMsg, Message};
use crate::registry::owner_shard;
use crate::signal::Kick;
use crate::stats::{Counter, LogLimiter};

/// Payload bytes all mailboxes of one core may hold together; beyond it a
/// new message is dropped and counted.
const CORE_MAILBOX_BYTES: usize = 64 * 1024 * 1024;
/// Mailboxes one core may own; a poll that would open one more is refused
/// (HTTP 503).
const MAX_MAILBOXES: usize = 100_000;
/// Polls of one core that may wait for another core's answer at once.
const MAX_REMOTE_POLLS: usize = 10_000;
/// How much longer than its `wait` a poll waits for the owner's answer.
const ANSWER_GRACE: Duration = Duration::from_secs(5);
/// How often parked polls and idle mailboxes are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// One downlink message on its way to a poll (owned, `Send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailItem {
    pub(crate) topic: Box<str>,
    pub(crate) payload: Box<[u8]>,
}

/// Why a poll could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollRefused {
    /// This core already waits for too many answers, or the owner has too
    /// many mailboxes.
    Busy,
}

/// Where a poll's answer goes.
#[derive(Debug, Default)]
struct PollSlot {
    items: RefCell<Option<Vec<MailItem>>>,
    kick: Kick,
}

impl PollSlot {
    fn fill(&self, items: Vec<MailItem>) {
        *self.items.borrow_mut() = Some(items);
        self.kick.kick();
    }
}

/// A poll parked at a mailbox.
#[derive(Debug)]
enum Waiter {
    /// On this core.
    Local {
        poll: u64,
        slot: Rc<PollSlot>,
        max: usize,
    },
    /// On core `peer`: answered over the mesh, or empty at `deadline`.
    Remote {
        peer: usize,
        poll: u64,
        max: usize,
        deadline: Instant,
    },
}

impl Waiter {
    fn id(&self) -> (Option<usize>, u64) {
        match self {
            Self::Local { poll, .. } => (None, *poll),
            Self::Remote { peer, poll, .. } => (Some(*peer), *poll),
        }
    }

    fn max(&self) -> usize {
        match self {
            Self::Local { max, .. } | Self::Remote { max, .. } => *max,
        }
    }
}

/// What the mailboxes of a core share with each other.
#[derive(Debug, Default)]
struct Shared {
    /// Devices whose mailbox got a message while a poll was parked.
    ready: RefCell<Vec<Rc<str>>>,
    kick: Kick,
    /// Payload bytes in all mailboxes of the core.
    bytes: Cell<usize>,
    limits: Cell<(usize, usize)>,
    drops: Counter,
}

/// One device's mailbox, on its owner core.
struct Mailbox {
    device: Rc<str>,
    filter: String,
    queue: RefCell<VecDeque<MailItem>>,
    bytes: Cell<usize>,
    waiter: RefCell<Option<Waiter>>,
    last_poll: Cell<Instant>,
    shared: Rc<Shared>,
}

impl Mailbox {
    fn drop_front(&self) {
        if let Some(item) = self.queue.borrow_mut().pop_front() {
            self.forget_bytes(item.payload.len());
            self.shared.drops.inc();
        }
    }

    fn forget_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get().saturating_sub(n));
        self.shared
            .bytes
            .set(self.shared.bytes.get().saturating_sub(n));
    }

    /// Up to `max` messages, oldest first.
    fn take(&self, max: usize) -> Vec<MailItem> {
        let mut queue = self.queue.borrow_mut();
        let n = max.min(queue.len());
        let items: Vec<MailItem> = queue.drain(..n).collect();
        drop(queue);
        self.forget_bytes(items.iter().map(|i| i.payload.len()).sum());
        items
    }
}

impl Deliver for Mailbox {
    fn deliver(&self, msg: &Message) {
        let len = msg.payload.len();
        let was_empty = self.queue.borrow().is_empty();
        let (max_messages, max_bytes) = self.shared.limits.get();
        if len > max_bytes || self.shared.bytes.get() + len > CORE_MAILBOX_BYTES {
            self.shared.drops.inc();
            return;
        }
        self.queue.borrow_mut().push_back(MailItem {
            topic: msg.topic.as_ref().into(),
            payload: msg.payload.as_slice().into(),
        });
        self.bytes.set(self.bytes.get() + len);
        self.shared.bytes.set(self.shared.bytes.get() + len);
        while self.queue.borrow().len() > max_messages || self.bytes.get() > max_bytes {
            self.drop_front();
        }
        // A parked poll only waits at an empty mailbox, so the device is
        // listed once, when its first message arrives (the list stays
        // bounded by the mailboxes).
        if was_empty && self.waiter.borrow().is_some() {
            self.shared.ready.borrow_mut().push(Rc::clone(&self.device));
            self.shared.kick.kick();
        }
    }
}

/// The HTTP listeners' state of one core.
#[derive(Default)]
pub(crate) struct HttpState {
    shared: Rc<Shared>,
    /// Mailboxes of devices this core owns.
    boxes: RefCell<HashMap<Rc<str>, Rc<Mailbox>>>,
    /// Polls of this core waiting for another core's answer.
    remote_polls: RefCell<HashMap<u64, Rc<PollSlot>>>,
    next_poll: Cell<u64>,
    lost_log: LogLimiter,
    pub(crate) requests: Counter,
    pub(crate) client_errors: Counter,
    pub(crate) server_errors: Counter,
    pub(crate) device_messages: Counter,
    pub(crate) polls: Counter,
    pub(crate) downlink_delivered: Counter,
    downlink_lost: Counter,
    /// WebSocket devices connected (a gauge).
    pub(crate) ws_sessions: Counter,
    pub(crate) ws_messages_in: Counter,
    pub(crate) ws_messages_out: Counter,
    pub(crate) ws_protocol_errors: Counter,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("mailboxes", &self.boxes.borrow().len())
            .finish_non_exhaustive()
    }
}

impl HttpState {
    pub(crate) fn figures(&self) -> HttpFigures {
        HttpFigures {
            requests: self.requests.get(),
            client_errors: self.client_errors.get(),
            server_errors: self.server_errors.get(),
            device_messages: self.device_messages.get(),
            polls: self.polls.get(),
            downlink_delivered: self.downlink_delivered.get(),
            mailboxes: self.boxes.borrow().len() as u64,
            mailbox_drops: self.shared.drops.get(),
            downlink_lost: self.downlink_lost.get(),
            ws_sessions: self.ws_sessions.get(),
            ws_messages_in: self.ws_messages_in.get(),
            ws_messages_out: self.ws_messages_out.get(),
            ws_protocol_errors: self.ws_protocol_errors.get(),
        }
    }

    fn new_poll_id(&self) -> u64 {
        let id = self.next_poll.get().wrapping_add(1);
        self.next_poll.set(id);
        id
    }

    /// The owner's side of a poll: answers at once when the mailbox holds
    /// messages (or `wait` is zero), else parks the poll.
    fn on_poll(
        &self,
        core: &Core,
        device: &str,
        waiter: Waiter,
        wait: Duration,
    ) -> Result<(), PollRefused> {
        let Some(mailbox) = self.mailbox(core, device) else {
            answer(core, waiter, Vec::new());
            return Err(PollRefused::Busy);
        };
        mailbox.last_poll.set(Instant::now());
        if let Some(older) = mailbox.waiter.borrow_mut().take() {
            answer(core, older, Vec::new());
        }
        if !mailbox.queue.borrow().is_empty() || wait.is_zero() {
            let items = mailbox.take(waiter.max());
            answer(core, waiter, items);
        } else {
            *mailbox.waiter.borrow_mut() = Some(waiter);
        }
        Ok(())
    }

    /// The device's mailbox, opened (and subscribed) if it has none.
    fn mailbox(&self, core: &Core, device: &str) -> Option<Rc<Mailbox>> {
        if let Some(m) = self.boxes.borrow().get(device) {
            return Some(Rc::clone(m));
        }
        if self.boxes.borrow().len() >= MAX_MAILBOXES {
            return None;
        }
        let http = &core.settings.borrow().http;
        self.shared
            .limits
            .set((http.mailbox_messages as usize, http.mailbox_bytes as usize));
        let device: Rc<str> = device.into();
        let mailbox = Rc::new(Mailbox {
            device: Rc::clone(&device),
            filter: format!("devices/{device}/down/#"),
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            waiter: RefCell::new(None),
            last_poll: Cell::new(Instant::now()),
            shared: Rc::clone(&self.shared),
        });
        core.subscribe(&mailbox.filter, Rc::clone(&mailbox) as Subscriber);
        self.boxes.borrow_mut().insert(device, Rc::clone(&mailbox));
        Some(mailbox)
    }

    /// Forgets the parked poll `poll` (from `peer`, or local) of `device`
    /// without answering it.
    fn cancel(&self, device: &str, peer: Option<usize>, poll: u64) {
        if let Some(mailbox) = self.boxes.borrow().get(device) {
            let mut waiter = mailbox.waiter.borrow_mut();
            if waiter.as_ref().is_some_and(|w| w.id() == (peer, poll)) {
                *waiter = None;
            }
        }
    }
}

/// Hands `items` to the poll `waiter`.
fn answer(core: &Core, waiter: Waiter, items: Vec<MailItem>) {
    match waiter {
        Waiter::Local { slot, .. } => slot.fill(items),
        Waiter::Remote { peer, poll, .. } => {
            core.send_mesh(peer, MeshMsg::MailboxBatch { poll, items })
        }
    }
}

/// Waits up to `wait` for downlink messages of `device` (at most `max`),
/// from its mailbox on whichever core owns it.
pub(crate) async fn poll(
    core: &Rc<Core>,
    device: &str,
    wait: Duration,
    max: usize,
) -> Result<Vec<MailItem>, PollRefused> {
    let http = &core.http;
    let owner = owner_shard(device, core.shards());
    let slot = Rc::new(PollSlot::default());
    let poll = http.new_poll_id();
    let local = owner == core.mesh_id();
    if local {
        let waiter = Waiter::Local {
            poll,
            slot: Rc::clone(&slot),
            max,
        };
        http.on_poll(core, device, waiter, wait)?;
    } else {
        if http.remote_polls.borrow().len() >= MAX_REMOTE_POLLS {
            return Err(PollRefused::Busy);
        }
        http.remote_polls
            .borrow_mut()
            .insert(poll, Rc::clone(&slot));
        core.send_mesh(
            owner,
            MeshMsg::MailboxPoll {
                poll,
                device: device.into(),
                wait,
                max: u32::try_from(max).unwrap_or(u32::MAX),
            },
        );
    }
    let limit = if local { wait } else { wait + ANSWER_GRACE };
    let answered = async {
        loop {
            if let Some(items) = slot.items.borrow_mut().take() {
                return Some(items);
            }
            slot.kick.kicked().await;
        }
    };
    let gave_up = async {
        glommio::timer::sleep(limit).await;
        None
    };
    let stopping = async {
        core.stopping.wait().await;
        None
    };
    let items = answered.or(gave_up).or(stopping).await;
    let items = match items {
        Some(items) => items,
        None => {
            // Late: take what may have come meanwhile, and tell the owner.
            if local {
                http.cancel(device, None, poll);
            } else {
                http.remote_polls.borrow_mut().remove(&poll);
                core.send_mesh(
                    owner,
                    MeshMsg::MailboxCancel {
                        poll,
                        device: device.into(),
                    },
                );
            }
            slot.items.borrow_mut().take().unwrap_or_default()
        }
    };
    http.polls.inc();
    http.downlink_delivered.add(items.len() as u64);
    Ok(items)
}

/// The mailbox messages of the mesh.
pub(crate) fn on_mesh(core: &Core, peer: usize, msg: MeshMsg) {
    let http = &core.http;
    match msg {
        MeshMsg::MailboxPoll {
            poll,
            device,
            wait,
            max,
        } => {
            let waiter = Waiter::Remote {
                peer,
                poll,
                max: max as usize,
                deadline: Instant::now() + wait,
            };
            let _ = http.on_poll(core, &device, waiter, wait);
        }
        MeshMsg::MailboxBatch { poll, items } => {
            let slot = http.remote_polls.borrow_mut().remove(&poll);
            match slot {
                Some(slot) => slot.fill(items),
                None if items.is_empty() => {}
                None => {
                    http.downlink_lost.add(items.len() as u64);
                    if let Some(more) = http.lost_log.allow() {
                        warn!(
                            messages = items.len(),
                            suppressed = more,
                            "downlink messages arrived for an HTTP poll that had gone; they are lost"
                        );
                    }
                }
            }
        }
        MeshMsg::MailboxCancel { poll, device } => http.cancel(&device, Some(peer), poll),
        _ => {}
    }
}

/// Answers parked polls whose mailbox got messages, expires those whose
/// wait is over, and closes mailboxes nobody polls, for as long as the
/// core runs.
pub(crate) async fn run_mailboxes(core: Rc<Core>) {
    let http = &core.http;
    let mut last_sweep = Instant::now();
    loop {
        let kicked = async {
            http.shared.kick.kicked().await;
        };
        let tick = async {
            glommio::timer::sleep(SWEEP_EVERY).await;
        };
        kicked.or(tick).await;
        let ready: Vec<Rc<str>> = std::mem::take(&mut *http.shared.ready.borrow_mut());
        for device in ready {
            let mailbox = http.boxes.borrow().get(&device).cloned();
            let Some(mailbox) = mailbox else { continue };
            if mailbox.queue.borrow().is_empty() {
                continue;
            }
            let waiter = mailbox.waiter.borrow_mut().take();
            if let Some(waiter) = waiter {
                let items = mailbox.take(waiter.max());
                answer(&core, waiter, items);
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            sweep(&core);
        }
    }
}

fn sweep(core: &Core) {
    let http = &core.http;
    let now = Instant::now();
    let idle = core.settings.borrow().http.mailbox_idle;
    let mut closed = Vec::new();
    for (device, mailbox) in http.boxes.borrow().iter() {
        let expired = matches!(&*mailbox.waiter.borrow(), Some(Waiter::Remote { deadline, .. }) if *deadline <= now);
        if expired {
            if let Some(waiter) = mailbox.waiter.borrow_mut().take() {
                answer(core, waiter, Vec::new());
            }
        }
        if mailbox.waiter.borrow().is_none() && now.duration_since(mailbox.last_poll.get()) >= idle
        {
            closed.push(Rc::clone(device));
        }
    }
    for device in closed {
        let mailbox = http.boxes.borrow_mut().remove(&device);
        if let Some(mailbox) = mailbox {
            core.unsubscribe(&mailbox.filter, &(Rc::clone(&mailbox) as Subscriber));
            while !mailbox.queue.borrow().is_empty() {
                mailbox.drop_front();
            }
        }
    }
}
