//! The figures board: each core posts its latest figures here once per
//! [`SAMPLE_PERIOD`](crate::core_task::SAMPLE_PERIOD), and an HTTP
//! listener's `/metrics`, `/healthz` and `/readyz` read every core's from
//! whichever core serves the request.
//!
//! ```text
//! core 0 ──post (1/s)──▶ slot 0 ─┐
//! core 1 ──post (1/s)──▶ slot 1 ─┼──▶ read by the core serving GET /metrics
//! main thread ── ready, RSS ─────┘
//! ```
//!
//! This is the one place cores share memory outside the mesh. It is off
//! the per-message path: a slot's lock is held only to swap or clone an
//! `Arc`, once a second by its core and once per scrape by a reader, never
//! across an await.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_protocols::figures::CoreFigures;

/// A core whose last post is older than this is reported as stalled.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(5);

/// HTTP listener counters of one core (not part of the control protocol's
/// figures; exported on `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HttpFigures {
    pub(crate) requests: u64,
    pub(crate) client_errors: u64,
    pub(crate) server_errors: u64,
    pub(crate) device_messages: u64,
    pub(crate) polls: u64,
    pub(crate) downlink_delivered: u64,
    pub(crate) mailboxes: u64,
    pub(crate) mailbox_drops: u64,
    pub(crate) downlink_lost: u64,
    pub(crate) ws_sessions: u64,
    pub(crate) ws_messages_in: u64,
    pub(crate) ws_messages_out: u64,
    pub(crate) ws_protocol_errors: u64,
}

/// CoAP listener counters of one core (exported on `/metrics`; see
/// `coap::CoapStats` for what each counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoapFigures {
    pub(crate) requests: u64,
    pub(crate) publishes: u64,
    pub(crate) notifications: u64,
    pub(crate) retransmissions: u64,
    pub(crate) give_ups: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    pub(crate) drops: u64,
    pub(crate) observers: u64,
}

/// Webhook route counters of one core (exported on `/metrics`; see
/// `stats::WebhookStats` for what each counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WebhookFigures {
    pub(crate) batches: u64,
    pub(crate) delivered: u64,
    pub(crate) retries: u64,
    pub(crate) dropped_queue_full: u64,
    pub(crate) dropped_gave_up: u64,
    pub(crate) dropped_refused: u64,
    pub(crate) dropped_stopped: u64,
    pub(crate) queued: u64,
}

/// The cumulative handling-latency histogram of one core, in the
/// Prometheus form: counts at or below each bound (seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LatencyBuckets {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum_seconds: f64,
}

/// What one core posts.
#[derive(Debug, Clone, Default)]
pub(crate) struct CorePost {
    pub(crate) figures: CoreFigures,
    pub(crate) http: HttpFigures,
    pub(crate) coap: CoapFigures,
    pub(crate) webhook: WebhookFigures,
    pub(crate) latency: LatencyBuckets,
}

/// One core's slot: its last post and when it was made.
type Slot = Mutex<Option<(Instant, Arc<CorePost>)>>;

/// Every core's latest figures, and the process-wide state `/readyz` and
/// `/metrics` need.
#[derive(Debug)]
pub(crate) struct FiguresBoard {
    slots: Vec<Slot>,
    ready: AtomicBool,
    rss_bytes: AtomicU64,
    started: Instant,
}

impl FiguresBoard {
    pub(crate) fn new(cores: usize) -> Self {
        Self {
            slots: (0..cores).map(|_| Mutex::new(None)).collect(),
            ready: AtomicBool::new(false),
            rss_bytes: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Core `index` posts its figures.
    pub(crate) fn post(&self, index: usize, post: CorePost) {
        if let Some(slot) = self.slots.get(index) {
            let entry = Some((Instant::now(), Arc::new(post)));
            match slot.lock() {
                Ok(mut guard) => *guard = entry,
                Err(poisoned) => *poisoned.into_inner() = entry,
            }
        }
    }

    /// Every core's latest post (`None` for a core that has not posted)
    /// and its age.
    pub(crate) fn read(&self) -> Vec<Option<(Duration, Arc<CorePost>)>> {
        self.slots
            .iter()
            .map(|slot| {
                let guard = match slot.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                guard
                    .as_ref()
                    .map(|(at, post)| (at.elapsed(), Arc::clone(post)))
            })
            .collect()
    }

    pub(crate) fn cores(&self) -> usize {
        self.slots.len()
    }

    /// The data plane has applied its first config and serves.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The process's resident memory, sampled by the main thread.
    pub(crate) fn set_rss_bytes(&self, bytes: u64) {
        self.rss_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn rss_bytes(&self) -> u64 {
        self.rss_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_replace_each_other_and_unknown_cores_are_ignored() {
        let board = FiguresBoard::new(2);
        assert!(board.read().iter().all(Option::is_none));
        let mut post = CorePost::default();
        post.figures.messages_in = 3;
        board.post(1, post.clone());
        post.figures.messages_in = 5;
        board.post(1, post.clone());
        board.post(7, post);
        let read = board.read();
        assert!(read[0].is_none());
        let (age, latest) = read[1].as_ref().unwrap();
        assert!(*age < STALE_AFTER);
        assert_eq!(latest.figures.messages_in, 5);
        assert!(!board.is_ready());
        board.set_ready(true);
        assert!(board.is_ready());
    }
}
