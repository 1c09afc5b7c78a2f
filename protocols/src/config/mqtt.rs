//! The MQTT broker's settings (`[runtime.mqtt]`) and the products' topic
//! permissions (`[[product]]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::topic;

/// How the broker bounds what it keeps for clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// QoS 1 and 2 messages in flight per direction per connection: the
    /// Receive Maximum the broker announces, and the most it sends a client
    /// before an acknowledgement (or the client's own Receive Maximum, if
    /// lower).
    pub max_inflight: u16,
    /// Messages a session queues while its client is offline or its
    /// in-flight window is full; beyond it `queue_overflow` applies.
    pub max_queued_messages: u32,
    /// Which message goes when a session's queue is full.
    pub queue_overflow: QueueOverflow,
    /// Longest a session outlives its connection (a client asking for more
    /// gets this; MQTT 3.1.1 persistent sessions get this).
    #[serde(with = "humantime_serde")]
    pub max_session_expiry: Duration,
    /// Sessions without a connection one core keeps; beyond it the one
    /// offline the longest is ended.
    pub max_offline_sessions: u32,
    /// Time a new connection has to send CONNECT.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retained messages kept (every core keeps the whole set).
    pub max_retained_messages: u32,
    /// Payload bytes of retained messages kept.
    pub max_retained_bytes: u64,
    /// Topic aliases a client may set (Topic Alias Maximum).
    pub max_topic_aliases: u16,
    /// Topic filters one session may hold; a SUBSCRIBE past it gets
    /// Quota exceeded (0x97; 0x80 in 3.1.1) for the filters beyond.
    pub max_subscriptions: u32,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            max_inflight: 32,
            max_queued_messages: 1000,
            queue_overflow: QueueOverflow::DropOldest,
            max_session_expiry: Duration::from_secs(24 * 3600),
            max_offline_sessions: 100_000,
            connect_timeout: Duration::from_secs(10),
            max_retained_messages: 100_000,
            max_retained_bytes: 64 * 1024 * 1024,
            max_topic_aliases: 64,
            max_subscriptions: 1000,
        }
    }
}

/// Overflow policy of a session queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueOverflow {
    /// The oldest queued message is dropped to make room.
    #[default]
    DropOldest,
    /// The new message is dropped.
    DropNewest,
}

impl MqttSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let at = "runtime.mqtt";
        if self.max_inflight == 0 {
            return Err(ConfigError::new(at, "max_inflight must be at least 1"));
        }
        if self.max_queued_messages == 0 {
            return Err(ConfigError::new(
                at,
                "max_queued_messages must be at least 1",
            ));
        }
        if self.max_subscriptions == 0 {
            return Err(ConfigError::new(at, "max_subscriptions must be at least 1"));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(at, "connect_timeout must be more than 0s"));
        }
        if self.max_session_expiry > Duration::from_secs(u64::from(u32::MAX)) {
            return Err(ConfigError::new(
                at,
                "max_session_expiry must be at most 4294967295s (MQTT's limit)",
            ));
        }
        Ok(())
    }
}

/// What a product's devices may do, by topic filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// Unique name; devices name it.
    pub name: String,
    /// Filters of the topics its devices may publish to; `{device}` stands
    /// for the device's own id. Empty: `devices/{device}/up/#` and
    /// `devices/{device}/up`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters its devices may subscribe to. Empty:
    /// `devices/{device}/down/#` and `devices/{device}/down`.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl ProductConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(at, "name is empty"));
        }
        for (kind, list) in [("publish", &self.publish), ("subscribe", &self.subscribe)] {
            for (i, f) in list.iter().enumerate() {
                let probe = f.replace("{device}", "d");
                topic::validate_topic_filter(&probe).map_err(|e| {
                    ConfigError::new(format!("{at}: {kind}[{i}]"), format!("{f:?}: {e}"))
                })?;
            }
        }
        Ok(())
    }
}
