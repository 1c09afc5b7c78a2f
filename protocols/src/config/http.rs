//! The bounds of HTTP listeners (`[runtime.http]`): how long a client may
//! take, how long a downlink poll may wait, and what a device's downlink
//! mailbox holds between polls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How HTTP listeners bound their clients and the device mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// A kept-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Time a client has to send a whole request head once it started.
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Time a client has to send a whole request body once its head is in.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// The longest `?wait=` a downlink poll may ask for; longer asks are
    /// cut to it.
    #[serde(with = "humantime_serde")]
    pub max_poll_wait: Duration,
    /// Downlink messages a device's mailbox keeps between polls; beyond
    /// it the oldest is dropped and counted.
    pub mailbox_messages: u32,
    /// Payload bytes a device's mailbox keeps between polls (same policy).
    pub mailbox_bytes: u32,
    /// A mailbox nobody polled for this long is closed (its device stops
    /// receiving downlink messages over HTTP until it polls again).
    #[serde(with = "humantime_serde")]
    pub mailbox_idle: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            keep_alive_timeout: Duration::from_secs(75),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_poll_wait: Duration::from_secs(60),
            mailbox_messages: 100,
            mailbox_bytes: 256 * 1024,
            mailbox_idle: Duration::from_secs(300),
        }
    }
}

impl HttpSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let at = "runtime.http";
        for (name, value) in [
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("head_timeout", self.head_timeout),
            ("body_timeout", self.body_timeout),
            ("mailbox_idle", self.mailbox_idle),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(at, format!("{name} must be more than 0s")));
            }
        }
        if self.max_poll_wait > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                at,
                format!(
                    "max_poll_wait must be at most 1h, got {}s",
                    self.max_poll_wait.as_secs()
                ),
            ));
        }
        if self.mailbox_messages == 0 || self.mailbox_messages > 100_000 {
            return Err(ConfigError::new(
                at,
                format!(
                    "mailbox_messages must be between 1 and 100000, got {}",
                    self.mailbox_messages
                ),
            ));
        }
        if self.mailbox_bytes < 1024 {
            return Err(ConfigError::new(
                at,
                format!(
                    "mailbox_bytes must be at least 1024, got {}",
                    self.mailbox_bytes
                ),
            ));
        }
        Ok(())
    }
}
