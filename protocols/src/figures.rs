//! Live figures of a data-plane core, in the form the control plane fetches
//! and the stats line prints.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Counters and gauges of one core since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreFigures {
    /// Core index (0-based, as in the thread name `shoal-core-{i}`).
    pub core: u16,
    /// Open connections now (TCP connections and live UDP sessions).
    pub connections: u64,
    /// Connections accepted (TCP) or sessions created (UDP).
    pub accepted: u64,
    /// Connections refused by a listener's `max_connections`.
    pub refused: u64,
    /// Messages received from devices (frames or datagrams).
    pub messages_in: u64,
    /// Messages written to devices.
    pub messages_out: u64,
    /// Payload and framing bytes read from devices.
    pub bytes_in: u64,
    /// Bytes written to devices.
    pub bytes_out: u64,
    /// Connections closed for a malformed or oversized frame.
    pub frame_errors: u64,
    /// Connections or sessions closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Messages dropped because a connection's outbound queue was full.
    pub outbound_drops: u64,
    /// Connections closed because their writes stayed blocked.
    pub slow_closes: u64,
    /// Messages sent to other cores.
    pub mesh_sent: u64,
    /// Messages received from other cores.
    pub mesh_received: u64,
    /// Messages not sent to another core because its channel was full, or
    /// not taken in because this core's pool was exhausted.
    pub mesh_drops: u64,
    /// Messages republished by routes.
    pub route_republished: u64,
    /// Messages stopped by a `drop` route, a loop guard or a bad template
    /// result.
    pub route_dropped: u64,
    /// Messages handed to forward upstreams.
    pub forward_sent: u64,
    /// Messages a forward upstream could not take (queue full, down).
    pub forward_drops: u64,
    /// Times a read paused because a pool class was exhausted.
    pub backpressure_pauses: u64,
    /// Buffer pool figures, one entry per size class.
    pub pools: Vec<PoolClassFigures>,
    /// How long a message takes from the end of its read to the end of its
    /// handling on the core (routes, local deliveries, hand-off to other
    /// cores), over the last reporting period.
    pub latency: LatencyFigures,
    /// Connections closed because their device could not prove itself on a
    /// `device_secret` listener (unknown device, wrong secret, malformed
    /// login, or no answer from the registry).
    pub auth_failures: u64,
    /// MQTT figures of the core.
    pub mqtt: MqttFigures,
    /// Live-stream totals of the core.
    pub stream_totals: StreamTotals,
    /// The live streams this core publishes or serves viewers of.
    pub streams: Vec<StreamFigures>,
}

/// Live-stream counters of one core since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTotals {
    /// Publishers that went live here.
    pub published: u64,
    /// Publishers refused (stream in use, key, rules, limits).
    pub publish_refused: u64,
    /// Viewers that started here (HTTP-FLV, WebSocket-FLV, RTMP).
    pub viewers_added: u64,
    /// Viewers refused (unknown stream, rules).
    pub play_refused: u64,
    /// Tags slow viewers skipped to catch up at the next keyframe.
    pub skipped_tags: u64,
    /// Viewers disconnected for staying behind past `max_viewer_lag`.
    pub slow_disconnects: u64,
}

/// One live stream as one core sees it: its origin core has the publisher
/// figures; every core with viewers has its viewers' figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFigures {
    /// `app/name`.
    pub name: String,
    /// The core these figures are from.
    pub core: u16,
    /// The publisher's address, on the core it publishes to.
    pub publisher: Option<String>,
    /// Seconds since the publisher started (0 on other cores).
    pub publishing_secs: u64,
    /// Video codec of the sequence header (`avc`, `hevc`, `av1`, ...).
    pub video_codec: String,
    /// Audio codec of the sequence header (`aac`, ...).
    pub audio_codec: String,
    /// Picture size from `onMetaData` (0 when not given).
    pub width: u32,
    /// Picture height from `onMetaData`.
    pub height: u32,
    /// Media bit rate over the last seconds, kbit/s.
    pub bitrate_kbps: u64,
    /// Tags the core took in (from the publisher or from the origin).
    pub tags_in: u64,
    /// Media bytes the core took in.
    pub bytes_in: u64,
    /// Viewers on this core now.
    pub viewers: u64,
    /// Tags this core's slow viewers skipped.
    pub skipped_tags: u64,
    /// This core's viewers disconnected as too slow.
    pub slow_disconnects: u64,
    /// Bytes in this core's GOP cache of the stream.
    pub gop_cache_bytes: u64,
}

/// The MQTT broker's figures on one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttFigures {
    /// Sessions on the core now (with a connection or offline).
    pub sessions: u64,
    /// Of them, without a connection.
    pub offline_sessions: u64,
    /// Retained messages the core keeps.
    pub retained: u64,
    /// QoS 1/2 messages dropped because a session's queue was full.
    pub queue_drops: u64,
    /// QoS 0 messages not kept for an offline session.
    pub offline_drops: u64,
    /// Messages whose Message Expiry passed before delivery.
    pub expired: u64,
    /// Publishes and subscriptions a product's permissions refused.
    pub acl_denials: u64,
    /// Retained messages refused because the store was full.
    pub retained_refused: u64,
    /// Sessions taken over by a new connection with the same client id.
    pub takeovers: u64,
    /// Connections closed for a protocol error (malformed packet, ...).
    pub protocol_errors: u64,
    /// Subscriptions refused because the session held `max_subscriptions`.
    pub subscriptions_refused: u64,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// Samples in the histogram.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// Figures of one pool size class on one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolClassFigures {
    /// Bytes per buffer.
    pub buffer_bytes: u32,
    /// Most buffers the class may hold.
    pub capacity: u32,
    /// Buffers allocated so far (in use or free).
    pub allocated: u32,
    /// Buffers in use now.
    pub in_use: u32,
    /// Most buffers ever in use at once.
    pub high_water: u32,
    /// Requests the class could not serve.
    pub exhausted: u64,
}

impl fmt::Display for CoreFigures {
    /// One line of `key=value` fields, stable for scripts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "core={} conns={} accepted={} refused={} msgs_in={} msgs_out={} bytes_in={} \
             bytes_out={} frame_errors={} idle_timeouts={} outbound_drops={} slow_closes={} \
             mesh_sent={} mesh_received={} mesh_drops={} route_republished={} route_dropped={} \
             forward_sent={} forward_drops={} backpressure={} auth_failures={} \
             mqtt_sessions={} mqtt_offline={} mqtt_retained={} mqtt_queue_drops={} \
             mqtt_acl_denials={} mqtt_protocol_errors={} mqtt_subscriptions_refused={} \
             streams_published={} stream_viewers={} stream_skipped={} stream_slow_disconnects={}",
            self.core,
            self.connections,
            self.accepted,
            self.refused,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
            self.frame_errors,
            self.idle_timeouts,
            self.outbound_drops,
            self.slow_closes,
            self.mesh_sent,
            self.mesh_received,
            self.mesh_drops,
            self.route_republished,
            self.route_dropped,
            self.forward_sent,
            self.forward_drops,
            self.backpressure_pauses,
            self.auth_failures,
            self.mqtt.sessions,
            self.mqtt.offline_sessions,
            self.mqtt.retained,
            self.mqtt.queue_drops,
            self.mqtt.acl_denials,
            self.mqtt.protocol_errors,
            self.mqtt.subscriptions_refused,
            self.stream_totals.published,
            self.streams.iter().map(|s| s.viewers).sum::<u64>(),
            self.stream_totals.skipped_tags,
            self.stream_totals.slow_disconnects,
        )?;
        for p in &self.pools {
            write!(
                f,
                " pool{}={}/{}/{}/{}/{}",
                p.buffer_bytes, p.in_use, p.allocated, p.capacity, p.high_water, p.exhausted
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_is_stable() {
        let f = CoreFigures {
            core: 1,
            connections: 2,
            auth_failures: 3,
            pools: vec![PoolClassFigures {
                buffer_bytes: 512,
                capacity: 10,
                allocated: 4,
                in_use: 3,
                high_water: 4,
                exhausted: 0,
            }],
            ..CoreFigures::default()
        };
        let line = f.to_string();
        assert!(line.starts_with("core=1 conns=2 accepted=0 "), "{line}");
        assert!(line.contains(" backpressure=0 auth_failures=3 "), "{line}");
        assert!(line.ends_with(" pool512=3/4/10/4/0"), "{line}");
    }
}
