//! The `forward_http` route action: messages POSTed to an HTTP/1.1 webhook
//! in JSON batches, per route per core.
//!
//! ```text
//! Core::publish ─enqueue(&Message)─▶ BatchQueue (bounded: bytes and messages, in flight included)
//!   never waits; full: dropped,         lane = hash(device or topic) % connections
//!   counted, logged at a limited rate     │
//!                                         ▼
//!                         lane task 0 … lane task N-1  (one per connection)
//!                         take a ready batch ─▶ POST on its keep-alive connection
//!                           2xx            ─▶ delivered
//!                           5xx/408/429, timeout, refused or broken connection
//!                                          ─▶ same batch again after 100ms…5s (jittered),
//!                                             up to max_retries, then dropped (gave up)
//!                           other status   ─▶ dropped (refused), no retry
//! ```
//!
//! Order: a device's messages (or, without a device, a topic's) always take
//! the same lane, and a lane carries one batch at a time, a retried batch
//! before any later one, so they arrive in the order they were published
//! on this core. Different lanes and different cores are not ordered with
//! each other.
//!
//! Delivery is at least once: a batch whose answer did not arrive (a
//! timeout, a connection that broke after the request went out, a 5xx) is
//! sent again, so a receiver may see it twice.
//!
//! While a lane retries, its queue keeps filling up to the route's bounds;
//! beyond them messages are dropped and counted: the bus never waits for a
//! webhook. Payloads are copied into the batch body when they are queued,
//! so no pool buffer waits on a slow webhook.
//!
//! Config reloads keep the sender of a route whose name and settings did
//! not change (the new route table holds the same sender), so its queue
//! and connections survive an unrelated change. A route that is removed or
//! changed stops: its connections close and what it still queued or had in
//! flight is dropped and counted (`stopped`), not flushed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future::FutureExt;
use shoal_protocols::config::WebhookConfig;
use tracing::{info, warn};

use super::Forwarder;
use crate::message::Message;
use crate::signal::{Kick, LocalSignal};
use crate::stats::{LogLimiter, WebhookStats};

mod backoff;
mod batch;
mod client;

use backoff::Backoff;
use batch::{Batch, BatchLimits, BatchQueue, Entry, Full, Take};
use client::{classify, LaneConn, Target, Verdict};

/// A kept-alive connection with no batch to carry for this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// The webhook of one route on one core.
pub(crate) struct WebhookSender {
    route: Rc<str>,
    /// What it was started with: a reload with the same name and settings
    /// keeps it.
    config: WebhookConfig,
    url: Rc<str>,
    target: Target,
    queue: RefCell<BatchQueue>,
    /// One wake-up per lane task.
    lanes: Vec<Kick>,
    stopped: LocalSignal,
    /// Route tables that hold it; it stops when the last lets go.
    holders: Cell<u32>,
    stats: Rc<WebhookStats>,
    /// Messages dropped at the door (queue full).
    drop_log: LogLimiter,
    /// Batches dropped (refused, given up).
    fail_log: LogLimiter,
    /// Attempts that will be retried.
    retry_log: LogLimiter,
    connect_log: LogLimiter,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("route", &self.route)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How a batch ended.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Refused(u16),
    GaveUp(String),
    Stopped,
}

impl WebhookSender {
    /// Creates the sender of route `route` and starts its lane tasks on
    /// this core.
    pub(crate) fn start(
        route: &str,
        config: &WebhookConfig,
        stats: Rc<WebhookStats>,
    ) -> Result<Rc<Self>, String> {
        config.validate()?;
        let url = config.target()?;
        let lanes = usize::from(config.connections.max(1));
        let limits = BatchLimits {
            batch_max: config.batch_max as usize,
            batch_wait: config.batch_wait,
            queue_bytes: config.queue_bytes as usize,
            queue_messages: config.queue_messages as usize,
        };
        let sender = Rc::new(Self {
            route: route.into(),
            config: config.clone(),
            url: url.to_string().into(),
            target: Target::new(url.addr, &url.authority, &url.path),
            queue: RefCell::new(BatchQueue::new(limits, lanes)),
            lanes: (0..lanes).map(|_| Kick::default()).collect(),
            stopped: LocalSignal::default(),
            holders: Cell::new(1),
            stats,
            drop_log: LogLimiter::new(Duration::from_secs(5)),
            fail_log: LogLimiter::new(Duration::from_secs(5)),
            retry_log: LogLimiter::new(Duration::from_secs(5)),
            connect_log: LogLimiter::new(Duration::from_secs(5)),
        });
        for lane in 0..lanes {
            glommio::spawn_local(Rc::clone(&sender).run_lane(lane)).detach();
        }
        Ok(sender)
    }

    /// Whether it serves route `name` with exactly `config` (and still
    /// runs): a new route table may then hold it instead of starting
    /// another.
    pub(crate) fn serves(&self, name: &str, config: &WebhookConfig) -> bool {
        !self.stopped.is_raised() && &*self.route == name && &self.config == config
    }

    /// Another route table holds it too.
    pub(crate) fn hold(&self) {
        self.holders.set(self.holders.get() + 1);
    }

    fn lane_of(&self, m: &Message) -> usize {
        let lanes = self.lanes.len();
        if lanes <= 1 {
            return 0;
        }
        let key = m.origin.device.as_deref().unwrap_or(&m.topic);
        // FNV-1a: stable, cheap, good enough to spread devices.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % lanes as u64) as usize
    }

    async fn run_lane(self: Rc<Self>, lane: usize) {
        let mut conn = LaneConn::default();
        let seed = (lane as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos().into());
        let mut backoff = Backoff::new(seed);
        while let Some(batch) = self.next_batch(lane, &mut conn).await {
            let messages = batch.messages as u64;
            let outcome = self.deliver(&batch, &mut conn, &mut backoff).await;
            self.queue.borrow_mut().finish(batch);
            self.stats.queued.sub(messages);
            match outcome {
                Outcome::Delivered => {
                    self.stats.batches.inc();
                    self.stats.delivered.add(messages);
                }
                Outcome::Refused(status) => {
                    self.stats.dropped_refused.add(messages);
                    if let Some(more) = self.fail_log.allow() {
                        warn!(route = %self.route, url = %self.url, status, messages, suppressed = more,
                            "webhook refused a batch; its messages are dropped (no retry)");
                    }
                }
                Outcome::GaveUp(why) => {
                    self.stats.dropped_gave_up.add(messages);
                    if let Some(more) = self.fail_log.allow() {
                        warn!(route = %self.route, url = %self.url, messages, suppressed = more,
                            retries = self.config.max_retries,
                            "webhook batch dropped after its last retry: {why}");
                    }
                }
                Outcome::Stopped => self.stats.dropped_stopped.add(messages),
            }
        }
        conn.close();
        let left = self.queue.borrow_mut().clear_lane(lane) as u64;
        self.stats.dropped_stopped.add(left);
        self.stats.queued.sub(left);
    }

    /// Waits for the lane's next ready batch; `None` once the route stops.
    /// An idle connection is closed after [`IDLE_CLOSE`].
    async fn next_batch(&self, lane: usize, conn: &mut LaneConn) -> Option<Batch> {
        let kick = self.lanes.get(lane)?;
        loop {
            if self.stopped.is_raised() {
                return None;
            }
            let now = Instant::now();
            let wait = match self.queue.borrow_mut().take(lane, now) {
                Take::Batch(batch) => return Some(batch),
                Take::Until(deadline) => deadline.saturating_duration_since(now),
                Take::Empty => IDLE_CLOSE,
            };
            let kicked = async {
                kick.kicked().await;
                false
            };
            let timer = async {
                glommio::timer::sleep(wait).await;
                true
            };
            let stop = async {
                self.stopped.wait().await;
                false
            };
            let timed_out = kicked.or(stop).or(timer).await;
            if timed_out && wait == IDLE_CLOSE && conn.is_open() {
                conn.close();
            }
        }
    }

    /// Sends `batch` until it is answered, refused, given up or the route
    /// stops.
    async fn deliver(&self, batch: &Batch, conn: &mut LaneConn, backoff: &mut Backoff) -> Outcome {
        let mut retry = 0u32;
        loop {
            let connects = conn.connects;
            let result = {
                let attempt = async {
                    Some(
                        conn.exchange(&self.target, &batch.body, self.config.timeout)
                            .await
                            .map_err(|f| f.to_string()),
                    )
                };
                let stop = async {
                    self.stopped.wait().await;
                    None
                };
                let timeout = async {
                    glommio::timer::sleep(self.config.timeout).await;
                    Some(Err(format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.timeout)
                    )))
                };
                attempt.or(stop).or(timeout).await
            };
            if conn.connects > connects {
                if let Some(more) = self.connect_log.allow() {
                    info!(route = %self.route, url = %self.url, suppressed = more, "webhook connected");
                }
            }
            let why = match result {
                None => {
                    conn.close();
                    return Outcome::Stopped;
                }
                Some(Ok(status)) => match classify(status) {
                    Verdict::Delivered => return Outcome::Delivered,
                    Verdict::Refused => return Outcome::Refused(status),
                    Verdict::Retry => format!("answered {status}"),
                },
                Some(Err(why)) => {
                    conn.close();
                    why
                }
            };
            if retry >= self.config.max_retries {
                return Outcome::GaveUp(why);
            }
            retry += 1;
            self.stats.retries.inc();
            let pause = backoff.pause(retry);
            if let Some(more) = self.retry_log.allow() {
                warn!(route = %self.route, url = %self.url, retry, suppressed = more,
                    "webhook attempt failed ({why}); retrying in {}", humantime::format_duration(pause));
            }
            let slept = async {
                glommio::timer::sleep(pause).await;
                true
            };
            let stop = async {
                self.stopped.wait().await;
                false
            };
            if !slept.or(stop).await {
                return Outcome::Stopped;
            }
        }
    }
}

impl Forwarder for WebhookSender {
    fn enqueue(&self, m: &Message) -> bool {
        if self.stopped.is_raised() {
            return false;
        }
        let lane = self.lane_of(m);
        let received_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let entry = Entry {
            topic: &m.topic,
            device: m.origin.device.as_deref(),
            listener: m.origin.listener.as_deref(),
            payload: m.payload.as_slice(),
            received_ms,
        };
        let pushed = self.queue.borrow_mut().push(lane, Instant::now(), &entry);
        match pushed {
            Ok(p) => {
                self.stats.queued.inc();
                if p.wake {
                    if let Some(kick) = self.lanes.get(lane) {
                        kick.kick();
                    }
                }
                true
            }
            Err(full) => {
                self.stats.dropped_queue_full.inc();
                if let Some(more) = self.drop_log.allow() {
                    let bound = match full {
                        Full::Messages => "queue_messages",
                        Full::Bytes => "queue_bytes",
                    };
                    let queue = self.queue.borrow();
                    warn!(route = %self.route, url = %self.url, bound, queued = queue.messages(),
                        queued_bytes = queue.bytes(), suppressed = more,
                        "webhook queue full; message dropped");
                }
                false
            }
        }
    }

    fn stop(&self) {
        let holders = self.holders.get().saturating_sub(1);
        self.holders.set(holders);
        if holders == 0 {
            self.stopped.raise();
            for kick in &self.lanes {
                kick.kick();
            }
        }
    }
}
