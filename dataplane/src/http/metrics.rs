//! `GET /metrics`: every core's figures in the Prometheus text format
//! (version 0.0.4), one family per figure, each sample labelled with its
//! `core`.
//!
//! The figures come from the [`FiguresBoard`](crate::board::FiguresBoard)
//! (at most one sample period old; the serving core's own are fresh).
//! Counters end in `_total`; gauges do not.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use shoal_protocols::figures::CoreFigures;

use crate::board::{CoapFigures, CorePost, HttpFigures, WebhookFigures};

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Process-wide values of one scrape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessFigures {
    pub(crate) uptime: Duration,
    pub(crate) rss_bytes: u64,
    pub(crate) ready: bool,
}

/// One family: its name, type, help, and how to read a core's value.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&CoreFigures, &HttpFigures) -> u64,
}

macro_rules! family {
    ($name:literal, $kind:literal, $help:literal, |$f:ident, $h:ident| $value:expr) => {
        Family {
            name: $name,
            kind: $kind,
            help: $help,
            value: |$f, $h| {
                let _ = (&$f, &$h);
                $value
            },
        }
    };
}

const FAMILIES: &[Family] = &[
    family!(
        "shoal_connections",
        "gauge",
        "Open connections and UDP sessions.",
        |f, h| f.connections
    ),
    family!(
        "shoal_connections_accepted_total",
        "counter",
        "Connections accepted and UDP sessions created.",
        |f, h| f.accepted
    ),
    family!(
        "shoal_connections_refused_total",
        "counter",
        "Connections refused by a listener's max_connections.",
        |f, h| f.refused
    ),
    family!(
        "shoal_messages_in_total",
        "counter",
        "Messages received from devices.",
        |f, h| f.messages_in
    ),
    family!(
        "shoal_messages_out_total",
        "counter",
        "Messages written to devices.",
        |f, h| f.messages_out
    ),
    family!(
        "shoal_bytes_in_total",
        "counter",
        "Bytes read from devices.",
        |f, h| f.bytes_in
    ),
    family!(
        "shoal_bytes_out_total",
        "counter",
        "Bytes written to devices.",
        |f, h| f.bytes_out
    ),
    family!(
        "shoal_frame_errors_total",
        "counter",
        "Connections closed for a malformed or oversized frame.",
        |f, h| f.frame_errors
    ),
    family!(
        "shoal_idle_timeouts_total",
        "counter",
        "Connections and sessions closed as idle.",
        |f, h| f.idle_timeouts
    ),
    family!(
        "shoal_outbound_drops_total",
        "counter",
        "Messages dropped because a connection's outbound queue was full.",
        |f, h| f.outbound_drops
    ),
    family!(
        "shoal_slow_closes_total",
        "counter",
        "Connections closed because their writes stayed blocked.",
        |f, h| f.slow_closes
    ),
    family!(
        "shoal_mesh_sent_total",
        "counter",
        "Messages sent to other cores.",
        |f, h| f.mesh_sent
    ),
    family!(
        "shoal_mesh_received_total",
        "counter",
        "Messages received from other cores.",
        |f, h| f.mesh_received
    ),
    family!(
        "shoal_mesh_drops_total",
        "counter",
        "Cross-core messages dropped (channel full or pool exhausted).",
        |f, h| f.mesh_drops
    ),
    family!(
        "shoal_route_republished_total",
        "counter",
        "Messages republished by routes.",
        |f, h| f.route_republished
    ),
    family!(
        "shoal_route_dropped_total",
        "counter",
        "Messages stopped by routes or the loop guard.",
        |f, h| f.route_dropped
    ),
    family!(
        "shoal_forward_sent_total",
        "counter",
        "Messages handed to northbound upstreams.",
        |f, h| f.forward_sent
    ),
    family!(
        "shoal_forward_drops_total",
        "counter",
        "Messages a northbound upstream could not take.",
        |f, h| f.forward_drops
    ),
    family!(
        "shoal_backpressure_pauses_total",
        "counter",
        "Reads paused because a buffer pool was exhausted.",
        |f, h| f.backpressure_pauses
    ),
    family!(
        "shoal_auth_failures_total",
        "counter",
        "Devices that failed to authenticate.",
        |f, h| f.auth_failures
    ),
    family!(
        "shoal_mqtt_sessions",
        "gauge",
        "MQTT sessions on the core.",
        |f, h| f.mqtt.sessions
    ),
    family!(
        "shoal_mqtt_offline_sessions",
        "gauge",
        "MQTT sessions kept without a connection.",
        |f, h| f.mqtt.offline_sessions
    ),
    family!(
        "shoal_mqtt_retained_messages",
        "gauge",
        "Retained MQTT messages.",
        |f, h| f.mqtt.retained
    ),
    family!(
        "shoal_mqtt_queue_drops_total",
        "counter",
        "MQTT messages dropped from full session queues.",
        |f, h| f.mqtt.queue_drops
    ),
    family!(
        "shoal_mqtt_offline_drops_total",
        "counter",
        "MQTT messages dropped from full offline queues.",
        |f, h| f.mqtt.offline_drops
    ),
    family!(
        "shoal_mqtt_expired_total",
        "counter",
        "MQTT messages and sessions that expired.",
        |f, h| f.mqtt.expired
    ),
    family!(
        "shoal_mqtt_acl_denials_total",
        "counter",
        "MQTT publishes and subscriptions an ACL refused.",
        |f, h| f.mqtt.acl_denials
    ),
    family!(
        "shoal_mqtt_protocol_errors_total",
        "counter",
        "MQTT connections closed for a protocol error.",
        |f, h| f.mqtt.protocol_errors
    ),
    family!(
        "shoal_mqtt_takeovers_total",
        "counter",
        "MQTT sessions taken over by a new connection.",
        |f, h| f.mqtt.takeovers
    ),
    family!(
        "shoal_streams_published_total",
        "counter",
        "Live-stream publishers that went live.",
        |f, h| f.stream_totals.published
    ),
    family!(
        "shoal_stream_publish_refused_total",
        "counter",
        "Live-stream publishers refused.",
        |f, h| f.stream_totals.publish_refused
    ),
    family!(
        "shoal_stream_viewers_added_total",
        "counter",
        "Live-stream viewers that started.",
        |f, h| f.stream_totals.viewers_added
    ),
    family!(
        "shoal_stream_play_refused_total",
        "counter",
        "Live-stream viewers refused.",
        |f, h| f.stream_totals.play_refused
    ),
    family!(
        "shoal_stream_skipped_tags_total",
        "counter",
        "Tags slow viewers skipped.",
        |f, h| f.stream_totals.skipped_tags
    ),
    family!(
        "shoal_stream_slow_disconnects_total",
        "counter",
        "Viewers disconnected for staying behind.",
        |f, h| f.stream_totals.slow_disconnects
    ),
    family!(
        "shoal_stream_viewers",
        "gauge",
        "Live-stream viewers on the core.",
        |f, h| f.streams.iter().map(|s| s.viewers).sum()
    ),
    family!(
        "shoal_http_requests_total",
        "counter",
        "HTTP requests answered.",
        |f, h| h.requests
    ),
    family!(
        "shoal_http_client_errors_total",
        "counter",
        "HTTP requests answered with a 4xx status.",
        |f, h| h.client_errors
    ),
    family!(
        "shoal_http_server_errors_total",
        "counter",
        "HTTP requests answered with a 5xx status.",
        |f, h| h.server_errors
    ),
    family!(
        "shoal_http_device_messages_total",
        "counter",
        "Messages devices posted over HTTP.",
        |f, h| h.device_messages
    ),
    family!(
        "shoal_http_polls_total",
        "counter",
        "Downlink polls answered.",
        |f, h| h.polls
    ),
    family!(
        "shoal_http_downlink_delivered_total",
        "counter",
        "Downlink messages handed to HTTP polls.",
        |f, h| h.downlink_delivered
    ),
    family!(
        "shoal_http_mailboxes",
        "gauge",
        "Device downlink mailboxes the core owns.",
        |f, h| h.mailboxes
    ),
    family!(
        "shoal_http_mailbox_drops_total",
        "counter",
        "Downlink messages dropped from full mailboxes.",
        |f, h| h.mailbox_drops
    ),
    family!(
        "shoal_http_downlink_lost_total",
        "counter",
        "Downlink messages whose poll had gone when they arrived.",
        |f, h| h.downlink_lost
    ),
    family!(
        "shoal_ws_devices",
        "gauge",
        "Devices connected over WebSocket (/v1/devices/{id}/ws).",
        |f, h| h.ws_sessions
    ),
    family!(
        "shoal_ws_device_messages_in_total",
        "counter",
        "Messages WebSocket devices sent.",
        |f, h| h.ws_messages_in
    ),
    family!(
        "shoal_ws_device_messages_out_total",
        "counter",
        "Downlink messages written to WebSocket devices.",
        |f, h| h.ws_messages_out
    ),
    family!(
        "shoal_ws_device_protocol_errors_total",
        "counter",
        "WebSocket device connections closed for breaking RFC 6455 or a limit.",
        |f, h| h.ws_protocol_errors
    ),
];

/// Quotes a label value (backslash, double quote and newline escaped).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition of one scrape. `posts` holds each core's latest post and
/// its age (`None`: the core has not posted yet).
pub(crate) fn render(
    process: ProcessFigures,
    posts: &[Option<(Duration, Arc<CorePost>)>],
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(
        &mut out,
        "shoal_ready",
        "gauge",
        "1 when the data plane has applied its config and serves.",
    );
    let _ = writeln!(out, "shoal_ready {}", u8::from(process.ready));
    header(
        &mut out,
        "shoal_uptime_seconds",
        "gauge",
        "Seconds since the data plane started.",
    );
    let _ = writeln!(
        out,
        "shoal_uptime_seconds {:.3}",
        process.uptime.as_secs_f64()
    );
    header(
        &mut out,
        "shoal_resident_memory_bytes",
        "gauge",
        "Resident memory of the data plane process.",
    );
    let _ = writeln!(out, "shoal_resident_memory_bytes {}", process.rss_bytes);
    header(
        &mut out,
        "shoal_cores",
        "gauge",
        "Cores (executors) of the data plane.",
    );
    let _ = writeln!(out, "shoal_cores {}", posts.len());
    let live: Vec<(u16, Duration, &CorePost)> = posts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.as_ref()
                .map(|(age, post)| (u16::try_from(i).unwrap_or(u16::MAX), *age, post.as_ref()))
        })
        .collect();
    header(
        &mut out,
        "shoal_core_figures_age_seconds",
        "gauge",
        "Age of the core's figures in this scrape.",
    );
    for (core, age, _) in &live {
        let _ = writeln!(
            out,
            "shoal_core_figures_age_seconds{{core=\"{core}\"}} {:.3}",
            age.as_secs_f64()
        );
    }
    for family in FAMILIES {
        header(&mut out, family.name, family.kind, family.help);
        for (core, _, post) in &live {
            let value = (family.value)(&post.figures, &post.http);
            let _ = writeln!(out, "{}{{core=\"{core}\"}} {value}", family.name);
        }
    }
    pools(&mut out, &live);
    streams(&mut out, &live);
    coap(&mut out, &live);
    webhook(&mut out, &live);
    latency(&mut out, &live);
    out
}

/// The CoAP listeners' families, one sample per core.
fn coap(out: &mut String, live: &[(u16, Duration, &CorePost)]) {
    let families: [ItemFamily<CoapFigures>; 9] = [
        (
            "shoal_coap_requests_total",
            "counter",
            "CoAP requests handled (duplicates not included).",
            |c| c.requests,
        ),
        (
            "shoal_coap_publishes_total",
            "counter",
            "Messages CoAP devices published.",
            |c| c.publishes,
        ),
        (
            "shoal_coap_notifications_total",
            "counter",
            "CoAP notifications sent to observers (first transmissions).",
            |c| c.notifications,
        ),
        (
            "shoal_coap_retransmissions_total",
            "counter",
            "CoAP notifications sent again for want of an ACK.",
            |c| c.retransmissions,
        ),
        (
            "shoal_coap_give_ups_total",
            "counter",
            "CoAP notifications never acknowledged (their observation ended).",
            |c| c.give_ups,
        ),
        (
            "shoal_coap_duplicates_total",
            "counter",
            "Duplicate CoAP messages (answered again, not handled again).",
            |c| c.duplicates,
        ),
        (
            "shoal_coap_errors_total",
            "counter",
            "CoAP messages malformed or refused.",
            |c| c.errors,
        ),
        (
            "shoal_coap_drops_total",
            "counter",
            "CoAP notifications, observers or payloads a bound dropped.",
            |c| c.drops,
        ),
        (
            "shoal_coap_observers",
            "gauge",
            "CoAP observations on the core.",
            |c| c.observers,
        ),
    ];
    for (name, kind, help, value) in &families {
        header(out, name, kind, help);
        for (core, _, post) in live {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", value(&post.coap));
        }
    }
}

/// The webhook routes' families, one sample per core (over the core's
/// webhook routes); drops by reason.
fn webhook(out: &mut String, live: &[(u16, Duration, &CorePost)]) {
    let families: [ItemFamily<WebhookFigures>; 4] = [
        (
            "shoal_webhook_batches_total",
            "counter",
            "Webhook batches answered with a 2xx.",
            |w| w.batches,
        ),
        (
            "shoal_webhook_delivered_total",
            "counter",
            "Messages in webhook batches answered with a 2xx.",
            |w| w.delivered,
        ),
        (
            "shoal_webhook_retries_total",
            "counter",
            "Webhook attempts after a batch's first (5xx, 408, 429, timeout, connection trouble).",
            |w| w.retries,
        ),
        (
            "shoal_webhook_queued_messages",
            "gauge",
            "Messages queued for webhooks or in flight.",
            |w| w.queued,
        ),
    ];
    for (name, kind, help, value) in &families {
        header(out, name, kind, help);
        for (core, _, post) in live {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", value(&post.webhook));
        }
    }
    let name = "shoal_webhook_dropped_total";
    header(
        out,
        name,
        "counter",
        "Messages webhooks dropped: queue_full, gave_up (retries spent), refused (4xx but 408/429, \
         other statuses not retried), stopped (route removed or changed).",
    );
    type Reason = (&'static str, fn(&WebhookFigures) -> u64);
    let reasons: [Reason; 4] = [
        ("queue_full", |w| w.dropped_queue_full),
        ("gave_up", |w| w.dropped_gave_up),
        ("refused", |w| w.dropped_refused),
        ("stopped", |w| w.dropped_stopped),
    ];
    for (core, _, post) in live {
        for (reason, value) in &reasons {
            let _ = writeln!(
                out,
                "{name}{{core=\"{core}\",reason=\"{reason}\"}} {}",
                value(&post.webhook)
            );
        }
    }
}

fn pools(out: &mut String, live: &[(u16, Duration, &CorePost)]) {
    let families: [ItemFamily<shoal_protocols::figures::PoolClassFigures>; 5] = [
        (
            "shoal_pool_capacity_buffers",
            "gauge",
            "Buffers a pool class may hold.",
            |p| u64::from(p.capacity),
        ),
        (
            "shoal_pool_allocated_buffers",
            "gauge",
            "Buffers a pool class has allocated.",
            |p| u64::from(p.allocated),
        ),
        (
            "shoal_pool_in_use_buffers",
            "gauge",
            "Buffers of a pool class in use.",
            |p| u64::from(p.in_use),
        ),
        (
            "shoal_pool_high_water_buffers",
            "gauge",
            "Most buffers of a pool class in use at once.",
            |p| u64::from(p.high_water),
        ),
        (
            "shoal_pool_exhausted_total",
            "counter",
            "Times a pool class had no free buffer.",
            |p| p.exhausted,
        ),
    ];
    per_item(
        out,
        live,
        &families,
        |post| &post.figures.pools,
        |class| format!("buffer_bytes=\"{}\"", class.buffer_bytes),
    );
}

/// A family of per-item samples: name, type, help, the item's value.
type ItemFamily<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// Families with one sample per core and per item of that core (a pool
/// class, a stream), the item named by `item_label`.
fn per_item<T>(
    out: &mut String,
    live: &[(u16, Duration, &CorePost)],
    families: &[ItemFamily<T>],
    items: impl Fn(&CorePost) -> &[T],
    item_label: impl Fn(&T) -> String,
) {
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for (core, _, post) in live {
            for item in items(post) {
                let _ = writeln!(
                    out,
                    "{name}{{core=\"{core}\",{}}} {}",
                    item_label(item),
                    value(item)
                );
            }
        }
    }
}

fn streams(out: &mut String, live: &[(u16, Duration, &CorePost)]) {
    let families: [ItemFamily<shoal_protocols::figures::StreamFigures>; 5] = [
        (
            "shoal_stream_core_viewers",
            "gauge",
            "Viewers of a live stream on the core.",
            |s| s.viewers,
        ),
        (
            "shoal_stream_bitrate_kbps",
            "gauge",
            "Media bit rate of a live stream, kbit/s.",
            |s| s.bitrate_kbps,
        ),
        (
            "shoal_stream_tags_in_total",
            "counter",
            "Tags of a live stream the core took in.",
            |s| s.tags_in,
        ),
        (
            "shoal_stream_core_skipped_tags_total",
            "counter",
            "Tags of a live stream the core's slow viewers skipped.",
            |s| s.skipped_tags,
        ),
        (
            "shoal_stream_gop_cache_bytes",
            "gauge",
            "Bytes in the core's GOP cache of a live stream.",
            |s| s.gop_cache_bytes,
        ),
    ];
    per_item(
        out,
        live,
        &families,
        |post| &post.figures.streams,
        |stream| format!("stream=\"{}\"", label(&stream.name)),
    );
}

fn latency(out: &mut String, live: &[(u16, Duration, &CorePost)]) {
    let name = "shoal_message_handling_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from the end of a device read to the end of its handling on the core (sampled reads).",
    );
    for (core, _, post) in live {
        let l = &post.latency;
        for (le, count) in &l.buckets {
            let _ = writeln!(out, "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{core=\"{core}\",le=\"+Inf\"}} {}",
            l.count
        );
        let _ = writeln!(out, "{name}_sum{{core=\"{core}\"}} {}", l.sum_seconds);
        let _ = writeln!(out, "{name}_count{{core=\"{core}\"}} {}", l.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::LatencyBuckets;
    use shoal_protocols::figures::{PoolClassFigures, StreamFigures};

    #[test]
    fn every_sample_line_belongs_to_a_declared_family_and_parses() {
        let mut post = CorePost::default();
        post.figures.messages_in = 42;
        post.figures.pools = vec![PoolClassFigures {
            buffer_bytes: 512,
            capacity: 10,
            allocated: 4,
            in_use: 3,
            high_water: 4,
            exhausted: 1,
        }];
        post.figures.streams = vec![StreamFigures {
            name: "live/\"odd\"\\name".into(),
            viewers: 7,
            ..StreamFigures::default()
        }];
        post.http.device_messages = 5;
        post.coap.publishes = 6;
        post.webhook.delivered = 8;
        post.webhook.dropped_gave_up = 9;
        post.latency = LatencyBuckets {
            buckets: vec![(0.001, 2), (0.01, 3)],
            count: 4,
            sum_seconds: 0.5,
        };
        let posts = vec![Some((Duration::from_millis(300), Arc::new(post))), None];
        let text = render(
            ProcessFigures {
                uptime: Duration::from_secs(3),
                rss_bytes: 1 << 20,
                ready: true,
            },
            &posts,
        );
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "{line}: family not declared");
        }
        assert!(text.contains("shoal_messages_in_total{core=\"0\"} 42\n"));
        assert!(text.contains("shoal_http_device_messages_total{core=\"0\"} 5\n"));
        assert!(text.contains("shoal_coap_publishes_total{core=\"0\"} 6\n"));
        assert!(text.contains("shoal_webhook_delivered_total{core=\"0\"} 8\n"));
        assert!(text.contains("shoal_webhook_dropped_total{core=\"0\",reason=\"gave_up\"} 9\n"));
        assert!(text.contains("shoal_pool_in_use_buffers{core=\"0\",buffer_bytes=\"512\"} 3\n"));
        assert!(text.contains(
            "shoal_stream_core_viewers{core=\"0\",stream=\"live/\\\"odd\\\"\\\\name\"} 7\n"
        ));
        assert!(text.contains("shoal_message_handling_seconds_bucket{core=\"0\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("shoal_ready 1\n"));
        assert!(!text.contains("core=\"1\""));
    }
}
