//! Per-core counters: plain `Cell`s, read by the stats line and by the
//! figures the control plane fetches.

use std::cell::Cell;
use std::rc::Rc;

use shoal_protocols::figures::{CoreFigures, MqttFigures, StreamTotals};

use crate::board::WebhookFigures;
use crate::pool::SlabPool;

/// A counter owned by one core.
#[derive(Debug, Default)]
pub(crate) struct Counter(Cell<u64>);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.set(self.0.get() + 1);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.set(self.0.get() + n);
    }

    pub(crate) fn dec(&self) {
        self.0.set(self.0.get().saturating_sub(1));
    }

    pub(crate) fn sub(&self, n: u64) {
        self.0.set(self.0.get().saturating_sub(n));
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.get()
    }
}

/// The counters of one core; see [`CoreFigures`] for what each means.
#[derive(Debug, Default)]
pub(crate) struct CoreStats {
    pub(crate) connections: Counter,
    pub(crate) accepted: Counter,
    pub(crate) refused: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) frame_errors: Counter,
    pub(crate) idle_timeouts: Counter,
    pub(crate) outbound_drops: Counter,
    pub(crate) slow_closes: Counter,
    pub(crate) mesh_sent: Counter,
    pub(crate) mesh_received: Counter,
    pub(crate) mesh_drops: Counter,
    pub(crate) route_republished: Counter,
    pub(crate) route_dropped: Counter,
    pub(crate) forward_sent: Counter,
    pub(crate) forward_drops: Counter,
    pub(crate) auth_failures: Counter,
    pub(crate) mqtt_queue_drops: Counter,
    pub(crate) mqtt_offline_drops: Counter,
    pub(crate) mqtt_expired: Counter,
    pub(crate) mqtt_acl_denials: Counter,
    pub(crate) mqtt_retained_refused: Counter,
    pub(crate) mqtt_subscriptions_refused: Counter,
    pub(crate) streams_published: Counter,
    pub(crate) stream_publish_refused: Counter,
    pub(crate) stream_viewers_added: Counter,
    pub(crate) stream_play_refused: Counter,
    pub(crate) stream_skipped_tags: Counter,
    pub(crate) stream_slow_disconnects: Counter,
    pub(crate) mqtt_takeovers: Counter,
    pub(crate) mqtt_protocol_errors: Counter,
    /// Shared with the core's webhook senders.
    pub(crate) webhook: Rc<WebhookStats>,
}

/// The webhook (`forward_http`) figures of one core, over all its webhook
/// routes; exported on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    /// Batches a webhook answered with a 2xx.
    pub(crate) batches: Counter,
    /// Messages in those batches.
    pub(crate) delivered: Counter,
    /// Attempts after a batch's first.
    pub(crate) retries: Counter,
    /// Messages dropped because the route's queue was full.
    pub(crate) dropped_queue_full: Counter,
    /// Messages of batches that met no success within `max_retries`.
    pub(crate) dropped_gave_up: Counter,
    /// Messages of batches refused with a 4xx (other than 408 and 429) or
    /// another status that is not retried.
    pub(crate) dropped_refused: Counter,
    /// Messages still queued or in flight when their route stopped.
    pub(crate) dropped_stopped: Counter,
    /// Gauge: messages queued or in flight now.
    pub(crate) queued: Counter,
}

impl WebhookStats {
    pub(crate) fn figures(&self) -> WebhookFigures {
        WebhookFigures {
            batches: self.batches.get(),
            delivered: self.delivered.get(),
            retries: self.retries.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            dropped_gave_up: self.dropped_gave_up.get(),
            dropped_refused: self.dropped_refused.get(),
            dropped_stopped: self.dropped_stopped.get(),
            queued: self.queued.get(),
        }
    }
}

impl CoreStats {
    pub(crate) fn figures(&self, core: u16, pool: &SlabPool) -> CoreFigures {
        CoreFigures {
            core,
            connections: self.connections.get(),
            accepted: self.accepted.get(),
            refused: self.refused.get(),
            messages_in: self.messages_in.get(),
            messages_out: self.messages_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            frame_errors: self.frame_errors.get(),
            idle_timeouts: self.idle_timeouts.get(),
            outbound_drops: self.outbound_drops.get(),
            slow_closes: self.slow_closes.get(),
            mesh_sent: self.mesh_sent.get(),
            mesh_received: self.mesh_received.get(),
            mesh_drops: self.mesh_drops.get(),
            route_republished: self.route_republished.get(),
            route_dropped: self.route_dropped.get(),
            forward_sent: self.forward_sent.get(),
            forward_drops: self.forward_drops.get(),
            latency: Default::default(),
            auth_failures: self.auth_failures.get(),
            mqtt: MqttFigures {
                queue_drops: self.mqtt_queue_drops.get(),
                offline_drops: self.mqtt_offline_drops.get(),
                expired: self.mqtt_expired.get(),
                acl_denials: self.mqtt_acl_denials.get(),
                retained_refused: self.mqtt_retained_refused.get(),
                subscriptions_refused: self.mqtt_subscriptions_refused.get(),
                takeovers: self.mqtt_takeovers.get(),
                protocol_errors: self.mqtt_protocol_errors.get(),
                ..MqttFigures::default()
            },
            stream_totals: StreamTotals {
                published: self.streams_published.get(),
                publish_refused: self.stream_publish_refused.get(),
                viewers_added: self.stream_viewers_added.get(),
                play_refused: self.stream_play_refused.get(),
                skipped_tags: self.stream_skipped_tags.get(),
                slow_disconnects: self.stream_slow_disconnects.get(),
            },
            streams: Vec::new(),
            backpressure_pauses: pool.backpressure_pauses(),
            pools: pool.figures(),
        }
    }
}

/// Lets a warning through at most once per `interval`, counting the rest,
/// so that a flood of bad input cannot flood the log.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: std::time::Duration,
    last: Cell<Option<std::time::Instant>>,
    suppressed: Cell<u64>,
}

impl Default for LogLimiter {
    /// One line per 5 seconds.
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(5))
    }
}

impl LogLimiter {
    pub(crate) fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            last: Cell::new(None),
            suppressed: Cell::new(0),
        }
    }

    /// `Some(suppressed since the last one)` when a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last.get() {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed.set(self.suppressed.get() + 1);
                None
            }
            _ => {
                self.last.set(Some(now));
                Some(self.suppressed.replace(0))
            }
        }
    }
}

/// Lets up to `burst` lines through per `interval`, counting the rest: for
/// lines each of which matters (one per refused login) but whose flood
/// must not flood the log.
#[derive(Debug)]
pub(crate) struct BurstLimiter {
    interval: std::time::Duration,
    burst: u32,
    window_start: Cell<Option<std::time::Instant>>,
    in_window: Cell<u32>,
    suppressed: Cell<u64>,
}

impl BurstLimiter {
    pub(crate) fn new(burst: u32, interval: std::time::Duration) -> Self {
        Self {
            interval,
            burst,
            window_start: Cell::new(None),
            in_window: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    /// `Some(suppressed since the last one let through)` when a line may
    /// be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let fresh = self
            .window_start
            .get()
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        if fresh {
            self.window_start.set(Some(now));
            self.in_window.set(0);
        }
        if self.in_window.get() >= self.burst {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.in_window.set(self.in_window.get() + 1);
        Some(self.suppressed.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted() {
        let limiter = BurstLimiter::new(3, std::time::Duration::from_secs(3600));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.suppressed.get(), 2);
    }
}
