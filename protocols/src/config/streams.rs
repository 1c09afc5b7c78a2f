//! Live streams: the bounds every core applies (`[runtime.streams]`) and the
//! rules for who may publish and play (`[[stream]]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The longest a core may gather tags before writing them to viewers.
const MAX_WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// How the stream hub bounds what it keeps for publishers and viewers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Bytes queued for one viewer (shared tags, counted by size). A tag
    /// that does not fit makes the viewer skip to the next keyframe.
    pub viewer_queue_bytes: u32,
    /// Media time queued for one viewer (newest tag's timestamp minus the
    /// oldest unwritten one's); past it the viewer skips to the next
    /// keyframe.
    #[serde(with = "humantime_serde")]
    pub viewer_queue_duration: Duration,
    /// A viewer that stays behind (skipping) this long is disconnected.
    #[serde(with = "humantime_serde")]
    pub max_viewer_lag: Duration,
    /// Bytes of the GOP cache per stream per core (metadata, sequence
    /// headers and the tags since the last keyframe). A GOP that outgrows
    /// it is not cached: new viewers wait for the next keyframe.
    pub gop_cache_bytes: u32,
    /// The largest media message a publisher may send.
    pub max_tag_bytes: u32,
    /// How long a viewer of a stream that has no publisher waits for one
    /// (0s: refused at once, HTTP 404 / NetStream.Play.StreamNotFound).
    #[serde(with = "humantime_serde")]
    pub play_wait: Duration,
    /// Chunk size announced to RTMP peers (Set Chunk Size); media messages
    /// up to it go to players as one chunk.
    pub rtmp_chunk_bytes: u32,
    /// Largest chunk size a peer may set; larger requests are clamped.
    pub max_peer_chunk_bytes: u32,
    /// Live streams one data plane serves at once; more publishers are
    /// refused.
    pub max_streams: u32,
    /// How long a core gathers the tags for its viewers before it writes
    /// them, each viewer's in one vectored write: fewer, larger writes
    /// cost less CPU per delivered bit, for at most this much more
    /// latency. 0s writes every tag at once. At most 100ms.
    #[serde(with = "humantime_serde")]
    pub write_interval: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            viewer_queue_bytes: 4 * 1024 * 1024,
            viewer_queue_duration: Duration::from_secs(5),
            max_viewer_lag: Duration::from_secs(10),
            gop_cache_bytes: 8 * 1024 * 1024,
            max_tag_bytes: 4 * 1024 * 1024,
            play_wait: Duration::ZERO,
            rtmp_chunk_bytes: 64 * 1024,
            max_peer_chunk_bytes: 64 * 1024,
            max_streams: 1000,
            write_interval: Duration::from_millis(20),
        }
    }
}

impl StreamSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let at = "runtime.streams";
        if self.max_tag_bytes < 1024 || self.max_tag_bytes > 0x00FF_FFFF {
            return Err(ConfigError::new(
                at,
                format!(
                    "max_tag_bytes must be between 1024 and 16777215 (RTMP's limit), got {}",
                    self.max_tag_bytes
                ),
            ));
        }
        if self.viewer_queue_bytes < self.max_tag_bytes {
            return Err(ConfigError::new(
                at,
                format!(
                    "viewer_queue_bytes ({}) must hold at least one tag of max_tag_bytes ({})",
                    self.viewer_queue_bytes, self.max_tag_bytes
                ),
            ));
        }
        if self.viewer_queue_duration.is_zero() {
            return Err(ConfigError::new(
                at,
                "viewer_queue_duration must be more than 0s",
            ));
        }
        if self.max_viewer_lag < self.viewer_queue_duration {
            return Err(ConfigError::new(
                at,
                "max_viewer_lag must be at least viewer_queue_duration",
            ));
        }
        for (name, value) in [
            ("rtmp_chunk_bytes", self.rtmp_chunk_bytes),
            ("max_peer_chunk_bytes", self.max_peer_chunk_bytes),
        ] {
            if !(128..=0x00FF_FFFF).contains(&value) {
                return Err(ConfigError::new(
                    at,
                    format!("{name} must be between 128 and 16777215, got {value}"),
                ));
            }
        }
        if self.max_streams == 0 {
            return Err(ConfigError::new(at, "max_streams must be at least 1"));
        }
        if self.write_interval >= self.viewer_queue_duration {
            return Err(ConfigError::new(
                at,
                "write_interval must be shorter than viewer_queue_duration (gathered tags count as queued)",
            ));
        }
        if self.write_interval > MAX_WRITE_INTERVAL {
            return Err(ConfigError::new(
                at,
                format!(
                    "write_interval must be at most {}ms, got {:?}",
                    MAX_WRITE_INTERVAL.as_millis(),
                    self.write_interval
                ),
            ));
        }
        Ok(())
    }
}

/// Who may publish and play the streams whose `app/name` matches `name`.
/// A stream no rule matches may be published and played only through a
/// listener whose `auth` is `none`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRule {
    /// `app/name`, or `app/*` for every stream of an app.
    pub name: String,
    /// Key a publisher must give (`rtmp://host/app/name?key=...`); none:
    /// anyone may publish.
    #[serde(default)]
    pub publish_key: Option<String>,
    /// Whether viewers may play it.
    #[serde(default = "yes")]
    pub allow_play: bool,
}

fn yes() -> bool {
    true
}

impl StreamRule {
    /// Whether the rule covers stream `app/name`.
    pub fn matches(&self, app: &str, name: &str) -> bool {
        match self.name.split_once('/') {
            Some((rule_app, "*")) => rule_app == app,
            Some((rule_app, rule_name)) => rule_app == app && rule_name == name,
            None => false,
        }
    }

    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_stream_rule_name(&self.name).map_err(|e| ConfigError::new(at, e))?;
        if self.publish_key.as_deref() == Some("") {
            return Err(ConfigError::new(
                at,
                "publish_key is empty (leave it out to let anyone publish)",
            ));
        }
        Ok(())
    }
}

/// The first rule of `rules` that covers `app/name`.
pub fn stream_rule_for<'a>(
    rules: &'a [StreamRule],
    app: &str,
    name: &str,
) -> Option<&'a StreamRule> {
    rules.iter().find(|r| r.matches(app, name))
}

/// Checks a rule's `app/name` (or `app/*`).
pub fn validate_stream_rule_name(name: &str) -> Result<(), String> {
    let Some((app, stream)) = name.split_once('/') else {
        return Err(format!(
            "stream name {name:?} must be `app/name` or `app/*`"
        ));
    };
    for (what, part) in [("app", app), ("name", stream)] {
        if part.is_empty() || part.len() > 128 {
            return Err(format!(
                "stream name {name:?}: the {what} must have 1 to 128 bytes"
            ));
        }
        if part.contains('/') || part.chars().any(char::is_control) {
            return Err(format!(
                "stream name {name:?}: the {what} may not hold `/` or control characters"
            ));
        }
    }
    if stream.contains('*') && stream != "*" {
        return Err(format!(
            "stream name {name:?}: `*` stands alone for every stream of the app"
        ));
    }
    Ok(())
}
