//! The desired state of a data plane: listeners, routes, pools and runtime
//! settings.
//!
//! These are the types a `--config` TOML file holds and the ones the control
//! plane pushes; the data plane converts them into its runtime types once, at
//! apply time. [`DataPlaneConfig::validate`] is pure: it checks the whole
//! config and names what is wrong and where (`listener[1] "udp-meters":
//! ...`), so a bad config is refused before anything is applied.

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::framing::{Framer, FramingConfig};
use crate::topic::{validate_topic_filter, validate_topic_name};

mod http;
mod mqtt;
mod streams;
mod webhook;

pub use http::HttpSettings;
pub use mqtt::{MqttSettings, ProductConfig, QueueOverflow};
pub use streams::{stream_rule_for, validate_stream_rule_name, StreamRule, StreamSettings};
pub use webhook::{
    parse_webhook_url, WebhookConfig, WebhookUrl, WEBHOOK_DEFAULT_BATCH_MAX,
    WEBHOOK_DEFAULT_BATCH_WAIT, WEBHOOK_DEFAULT_CONNECTIONS, WEBHOOK_DEFAULT_MAX_RETRIES,
    WEBHOOK_DEFAULT_QUEUE_BYTES, WEBHOOK_DEFAULT_QUEUE_MESSAGES, WEBHOOK_DEFAULT_TIMEOUT,
    WEBHOOK_MAX_BATCH_MAX, WEBHOOK_MAX_BATCH_WAIT, WEBHOOK_MAX_CONNECTIONS,
    WEBHOOK_MAX_QUEUE_MESSAGES, WEBHOOK_MAX_RETRIES, WEBHOOK_MAX_TIMEOUT, WEBHOOK_MAX_URL_BYTES,
    WEBHOOK_QUEUE_BYTES_RANGE,
};

/// The most bytes a device id may have.
pub const MAX_DEVICE_ID_BYTES: usize = 128;

/// Everything one data plane runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataPlaneConfig {
    /// Process-wide runtime settings.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// Per-core buffer pools.
    #[serde(default)]
    pub pools: PoolSettings,
    /// Device listeners, bound on every core.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Routes evaluated, in order, for every message published on a core.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Products: what their devices may publish and subscribe to.
    #[serde(default, rename = "product")]
    pub products: Vec<ProductConfig>,
    /// Who may publish and play live streams.
    #[serde(default, rename = "stream")]
    pub streams: Vec<StreamRule>,
}

/// Runtime settings that apply to every core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// How long open connections get to finish when the data plane stops.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Messages queued per direction between two cores; beyond it a
    /// cross-core message is dropped and counted.
    pub mesh_channel_capacity: u32,
    /// Bytes queued for one connection before further messages to it are
    /// dropped and counted.
    pub outbound_queue_bytes: u32,
    /// How long a write to a connection may stay blocked before the
    /// connection is closed as too slow.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// How many times a message may be republished by routes before it is
    /// dropped (guards against route loops).
    pub max_route_hops: u8,
    /// The MQTT broker's bounds.
    pub mqtt: MqttSettings,
    /// The live-stream hub's bounds.
    pub streams: StreamSettings,
    /// HTTP listeners' bounds and the device mailboxes.
    pub http: HttpSettings,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
            mesh_channel_capacity: 4096,
            outbound_queue_bytes: 256 * 1024,
            write_stall_timeout: Duration::from_secs(30),
            max_route_hops: 4,
            mqtt: MqttSettings::default(),
            streams: StreamSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

/// The buffer pools every core owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// Size classes, smallest first.
    pub classes: Vec<PoolClassConfig>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            classes: vec![
                PoolClassConfig {
                    buffer_bytes: 512,
                    capacity: 16384,
                },
                PoolClassConfig {
                    buffer_bytes: 4096,
                    capacity: 4096,
                },
                PoolClassConfig {
                    buffer_bytes: 65536,
                    capacity: 256,
                },
            ],
        }
    }
}

/// One size class of a per-core pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolClassConfig {
    /// Bytes in every buffer of the class.
    pub buffer_bytes: u32,
    /// Buffers of this class a core may hold at once.
    pub capacity: u32,
}

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListenerProtocol {
    /// Raw TCP with configurable framing.
    Tcp,
    /// Raw UDP: a datagram is one message, or holds frames.
    Udp,
    /// MQTT 3.1.1 and 5.0 over TCP.
    Mqtt,
    /// HTTP/1.1: WebSocket upgrades (MQTT over WebSocket at `/mqtt`),
    /// live streams as HTTP-FLV and WebSocket-FLV.
    Http,
    /// RTMP: live streams published and played.
    Rtmp,
    /// CoAP over UDP (RFC 7252, with block-wise transfers and observe):
    /// `POST /devices/{id}/up[/…]` publishes, `GET /devices/{id}/down`
    /// with Observe follows the device's downlink. `max_frame_bytes`
    /// bounds a whole (reassembled) request body.
    Coap,
}

impl ListenerProtocol {
    /// Whether it runs over UDP (else TCP): two listeners of the same
    /// transport cannot share an address.
    pub fn is_udp(self) -> bool {
        matches!(self, Self::Udp | Self::Coap)
    }
}

impl fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Mqtt => "mqtt",
            Self::Http => "http",
            Self::Rtmp => "rtmp",
            Self::Coap => "coap",
        })
    }
}

/// How a listener learns which device a connection or datagram is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum IdentityRule {
    /// The first frame of a TCP connection carries the device id (UTF-8).
    LoginFrame,
    /// The peer's `ip:port` is the device id.
    PeerAddress,
    /// Each UDP datagram starts with `bytes` bytes of device id (UTF-8,
    /// trailing NUL and space bytes trimmed); the rest is the payload.
    PayloadPrefix {
        /// Length of the id prefix.
        bytes: u32,
    },
}

/// A device listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in routes, logs and figures.
    pub name: String,
    /// Transport.
    pub protocol: ListenerProtocol,
    /// Address to bind on every core (SO_REUSEPORT).
    pub bind: String,
    /// TCP: open connections; UDP: known device sessions. Beyond it new
    /// ones are refused and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Largest frame (TCP) or datagram (UDP) accepted; on CoAP listeners
    /// the largest request body (reassembled from its Block1 blocks).
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// A connection (or UDP session) silent this long is closed.
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Framing; required for TCP. For UDP, absent means one datagram is one
    /// message.
    #[serde(default)]
    pub framing: Option<FramingConfig>,
    /// Identity rule (raw TCP and UDP; MQTT and HTTP know their devices
    /// from their own logins).
    #[serde(default = "default_identity")]
    pub identity: IdentityRule,
    /// Whether a device must prove it is in the registry: `device_secret`
    /// unless set. Raw UDP listeners, and raw TCP ones whose identity is
    /// not a login frame, cannot check a secret: they must say
    /// `auth = "none"`.
    #[serde(default)]
    pub auth: ListenerAuth,
}

/// What a device must show before its messages are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListenerAuth {
    /// Any device id is taken as it is given.
    None,
    /// The login frame is `{device_id}:{secret}` (split at the last `:`),
    /// and the device must be in the registry with that secret. On MQTT
    /// listeners: user name = device id, password = secret. On RTMP and
    /// HTTP listeners, live streams are served only where a `[[stream]]`
    /// rule covers them (with `none`, any stream is). The default: a
    /// listener takes devices without credentials only when it says so.
    #[default]
    DeviceSecret,
}

fn default_identity() -> IdentityRule {
    IdentityRule::LoginFrame
}

fn default_max_connections() -> u32 {
    100_000
}

fn default_max_frame_bytes() -> u32 {
    4096
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

/// What a route matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// MQTT topic filter the message topic must match.
    pub filter: String,
    /// Only messages that arrived on this listener.
    #[serde(default)]
    pub listener: Option<String>,
    /// Only messages from this device.
    #[serde(default)]
    pub device: Option<String>,
    /// What to do with a matching message.
    pub action: RouteAction,
}

/// What a route does with a message it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RouteAction {
    /// Publish a copy on the topic the template gives. Placeholders:
    /// `{device}`, `{listener}`, `{topic}`, and `{1}`..`{9}` for the topic's
    /// levels (1-based).
    Republish {
        /// Topic template.
        topic: String,
    },
    /// Send the payload, framed, over a TCP connection to `address`.
    ForwardTcp {
        /// Upstream `ip:port`.
        address: String,
        /// Framing of the upstream stream.
        #[serde(default)]
        framing: FramingConfig,
        /// Bytes queued per core for the upstream before messages are
        /// dropped and counted.
        #[serde(default = "default_forward_queue_bytes")]
        queue_bytes: u32,
    },
    /// Send the payload as one datagram to `address`.
    ForwardUdp {
        /// Upstream `ip:port`.
        address: String,
    },
    /// POST the message, batched with others as JSON, to an HTTP/1.1
    /// webhook (plain `http://` only; see [`WebhookConfig`]).
    ForwardHttp(WebhookConfig),
    /// Stop: the message reaches no subscriber and no later route.
    Drop,
}

fn default_forward_queue_bytes() -> u32 {
    1024 * 1024
}

/// A placeholder of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text.
    Literal(String),
    /// The origin device id.
    Device,
    /// The origin listener name.
    Listener,
    /// The whole topic.
    Topic,
    /// One topic level, 1-based.
    Level(u8),
}

/// Splits a topic template into parts, refusing unknown placeholders.
pub fn parse_topic_template(template: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (literal, tail) = rest.split_at(open);
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal.to_owned()));
        }
        let Some(close) = tail.find('}') else {
            return Err(format!("unclosed '{{' in topic template {template:?}"));
        };
        let name = tail.get(1..close).unwrap_or_default();
        let part = match name {
            "device" => TemplatePart::Device,
            "listener" => TemplatePart::Listener,
            "topic" => TemplatePart::Topic,
            _ => match name.parse::<u8>() {
                Ok(n) if (1..=9).contains(&n) => TemplatePart::Level(n),
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{name}}} in topic template {template:?} \
                         (known: {{device}}, {{listener}}, {{topic}}, {{1}}..{{9}})"
                    ))
                }
            },
        };
        parts.push(part);
        rest = tail.get(close + 1..).unwrap_or_default();
    }
    if rest.contains('}') {
        return Err(format!("stray '}}' in topic template {template:?}"));
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    if parts.is_empty() {
        return Err("empty topic template".to_owned());
    }
    Ok(parts)
}

/// Checks a device id: 1..=128 bytes, no `/`, `+`, `#`, control characters
/// or NUL.
pub fn validate_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("device id is empty".to_owned());
    }
    if id.len() > MAX_DEVICE_ID_BYTES {
        return Err(format!(
            "device id is {} bytes, more than {MAX_DEVICE_ID_BYTES}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(format!("device id {id:?} contains {c:?}"));
    }
    Ok(())
}

/// A config that was refused, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct ConfigError {
    /// Where, e.g. `listener[0] "tcp-default"`.
    pub location: String,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            reason: reason.into(),
        }
    }
}

/// Parses an `ip:port` socket address.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not an ip:port address (e.g. 127.0.0.1:7000)"))
}

/// The names of the `[[listener]]` tables of a TOML document (a data-plane
/// config or a `shoalctl apply` document) that do not say `auth`: they
/// require the device's secret, which configs written before that became
/// the default did not mean. Loaders warn about them. Empty when the text
/// is not TOML (its parse error is reported elsewhere).
pub fn listeners_relying_on_default_auth(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(toml::Value::Array(listeners)) = doc.get("listener") else {
        return Vec::new();
    };
    listeners
        .iter()
        .filter_map(toml::Value::as_table)
        .filter(|l| !l.contains_key("auth"))
        .map(|l| {
            l.get("name")
                .and_then(toml::Value::as_str)
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

/// The warning for [`listeners_relying_on_default_auth`]'s names.
pub fn default_auth_warning(names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "listener(s) {} do not say `auth`: they require the device's secret \
         (auth = \"device_secret\", the default); add auth = \"none\" to take device ids as given",
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

impl DataPlaneConfig {
    /// Parses a TOML document; the error names the line and column.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml_like_parse(text)
    }

    /// Checks the whole config; the first problem found is returned with its
    /// location.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_runtime()?;
        self.validate_pools()?;
        let largest_class = self
            .pools
            .classes
            .iter()
            .map(|c| c.buffer_bytes)
            .max()
            .unwrap_or(0);
        let mut seen_names: Vec<&str> = Vec::new();
        let mut seen_binds: Vec<(ListenerProtocol, SocketAddr, &str)> = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listener[{i}] {:?}", l.name);
            if l.name.is_empty() {
                return Err(ConfigError::new(at, "name is empty"));
            }
            if seen_names.contains(&l.name.as_str()) {
                return Err(ConfigError::new(at, "another listener has this name"));
            }
            seen_names.push(&l.name);
            let addr = parse_socket_addr(&l.bind).map_err(|e| ConfigError::new(&at, e))?;
            if let Some((_, _, other)) = seen_binds
                .iter()
                .find(|(p, a, _)| p.is_udp() == l.protocol.is_udp() && *a == addr)
            {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "{} {} is already bound by listener {other:?}",
                        l.protocol, l.bind
                    ),
                ));
            }
            seen_binds.push((l.protocol, addr, &l.name));
            if l.max_connections == 0 {
                return Err(ConfigError::new(at, "max_connections must be at least 1"));
            }
            if l.max_frame_bytes == 0 || l.max_frame_bytes >= largest_class {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "max_frame_bytes must be between 1 and {} (one less than the largest \
                         pool class, {largest_class} bytes), got {}",
                        largest_class.saturating_sub(1),
                        l.max_frame_bytes
                    ),
                ));
            }
            if l.idle_timeout.is_zero() {
                return Err(ConfigError::new(at, "idle_timeout must be more than 0s"));
            }
            let raw = matches!(l.protocol, ListenerProtocol::Tcp | ListenerProtocol::Udp);
            if !raw && l.framing.is_some() {
                return Err(ConfigError::new(
                    at,
                    format!("`framing` is for tcp and udp listeners, not {}", l.protocol),
                ));
            }
            if !raw && l.identity != IdentityRule::LoginFrame {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "`identity` is for tcp and udp listeners; {} knows its devices from its logins",
                        l.protocol
                    ),
                ));
            }
            match (&l.framing, l.protocol) {
                (None, ListenerProtocol::Tcp) => {
                    return Err(ConfigError::new(
                        at,
                        "a tcp listener needs `framing` (e.g. framing = { kind = \"length_field\", width = 2 })",
                    ))
                }
                (Some(f), _) => {
                    Framer::new(f, l.max_frame_bytes)
                        .map_err(|e| ConfigError::new(format!("{at}: framing"), e.to_string()))?;
                }
                (None, _) => {}
            }
            match (&l.identity, l.protocol) {
                (IdentityRule::PayloadPrefix { .. }, ListenerProtocol::Tcp) => {
                    return Err(ConfigError::new(
                        at,
                        "identity payload_prefix is for udp listeners; tcp uses login_frame or peer_address",
                    ))
                }
                (IdentityRule::LoginFrame, ListenerProtocol::Udp) => {
                    return Err(ConfigError::new(
                        at,
                        "identity login_frame is for tcp listeners; udp uses peer_address or payload_prefix",
                    ))
                }
                (IdentityRule::PayloadPrefix { bytes }, _)
                    if *bytes == 0 || *bytes as usize > MAX_DEVICE_ID_BYTES =>
                {
                    return Err(ConfigError::new(
                        at,
                        format!(
                            "identity payload_prefix bytes must be 1..={MAX_DEVICE_ID_BYTES}, got {bytes}"
                        ),
                    ))
                }
                _ => {}
            }
            if l.auth == ListenerAuth::DeviceSecret
                && (l.protocol == ListenerProtocol::Udp
                    || (l.protocol == ListenerProtocol::Tcp
                        && l.identity != IdentityRule::LoginFrame))
            {
                return Err(ConfigError::new(
                    at,
                    "auth is device_secret (the default), which this listener cannot check: \
                     it is for tcp (identity login_frame: the login frame carries \
                     `{device_id}:{secret}`), mqtt, http, rtmp and coap listeners; \
                     set auth = \"none\" to take device ids as given",
                ));
            }
        }
        let mut product_names: Vec<&str> = Vec::new();
        for (i, p) in self.products.iter().enumerate() {
            let at = format!("product[{i}] {:?}", p.name);
            if product_names.contains(&p.name.as_str()) {
                return Err(ConfigError::new(at, "another product has this name"));
            }
            product_names.push(&p.name);
            p.validate(&at)?;
        }
        let mut stream_names: Vec<&str> = Vec::new();
        for (i, rule) in self.streams.iter().enumerate() {
            let at = format!("stream[{i}] {:?}", rule.name);
            if stream_names.contains(&rule.name.as_str()) {
                return Err(ConfigError::new(at, "another stream rule has this name"));
            }
            stream_names.push(&rule.name);
            rule.validate(&at)?;
        }
        let mut route_names: Vec<&str> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("route[{i}] {:?}", r.name);
            if r.name.is_empty() {
                return Err(ConfigError::new(at, "name is empty"));
            }
            if route_names.contains(&r.name.as_str()) {
                return Err(ConfigError::new(at, "another route has this name"));
            }
            route_names.push(&r.name);
            validate_topic_filter(&r.filter).map_err(|e| {
                ConfigError::new(
                    &at,
                    format!("filter {:?} is not a topic filter: {e}", r.filter),
                )
            })?;
            if let Some(l) = &r.listener {
                if !self.listeners.iter().any(|x| &x.name == l) {
                    return Err(ConfigError::new(
                        at,
                        format!("listener {l:?} does not exist"),
                    ));
                }
            }
            if let Some(d) = &r.device {
                validate_device_id(d).map_err(|e| ConfigError::new(&at, e))?;
            }
            match &r.action {
                RouteAction::Republish { topic } => {
                    let parts = parse_topic_template(topic)
                        .map_err(|e| ConfigError::new(format!("{at}: action"), e))?;
                    let literal_only: Option<String> = parts
                        .iter()
                        .map(|p| match p {
                            TemplatePart::Literal(s) => Some(s.as_str()),
                            _ => None,
                        })
                        .collect();
                    if let Some(fixed) = literal_only {
                        validate_topic_name(&fixed).map_err(|e| {
                            ConfigError::new(
                                format!("{at}: action"),
                                format!("topic {fixed:?} is not a topic name: {e}"),
                            )
                        })?;
                    } else if parts.iter().any(|p| {
                        matches!(p, TemplatePart::Literal(s) if s.contains('+') || s.contains('#'))
                    }) {
                        return Err(ConfigError::new(
                            format!("{at}: action"),
                            format!("topic template {topic:?} contains a wildcard"),
                        ));
                    }
                }
                RouteAction::ForwardTcp {
                    address,
                    framing,
                    queue_bytes,
                } => {
                    parse_socket_addr(address)
                        .map_err(|e| ConfigError::new(format!("{at}: action"), e))?;
                    Framer::new(framing, largest_class.saturating_sub(1)).map_err(|e| {
                        ConfigError::new(format!("{at}: action.framing"), e.to_string())
                    })?;
                    if *queue_bytes < 1024 {
                        return Err(ConfigError::new(
                            format!("{at}: action"),
                            "queue_bytes must be at least 1024",
                        ));
                    }
                }
                RouteAction::ForwardUdp { address } => {
                    parse_socket_addr(address)
                        .map_err(|e| ConfigError::new(format!("{at}: action"), e))?;
                }
                RouteAction::ForwardHttp(webhook) => {
                    webhook
                        .validate()
                        .map_err(|e| ConfigError::new(format!("{at}: action"), e))?;
                }
                RouteAction::Drop => {}
            }
        }
        Ok(())
    }

    fn validate_runtime(&self) -> Result<(), ConfigError> {
        let r = &self.runtime;
        if r.mesh_channel_capacity == 0 {
            return Err(ConfigError::new(
                "runtime",
                "mesh_channel_capacity must be at least 1",
            ));
        }
        if r.outbound_queue_bytes < 1024 {
            return Err(ConfigError::new(
                "runtime",
                "outbound_queue_bytes must be at least 1024",
            ));
        }
        if r.max_route_hops > 16 {
            return Err(ConfigError::new(
                "runtime",
                format!(
                    "max_route_hops must be at most 16, got {}",
                    r.max_route_hops
                ),
            ));
        }
        if r.write_stall_timeout.is_zero() {
            return Err(ConfigError::new(
                "runtime",
                "write_stall_timeout must be more than 0s",
            ));
        }
        r.mqtt.validate()?;
        r.streams.validate()?;
        r.http.validate()
    }

    fn validate_pools(&self) -> Result<(), ConfigError> {
        let classes = &self.pools.classes;
        if classes.is_empty() || classes.len() > 8 {
            return Err(ConfigError::new(
                "pools.classes",
                format!(
                    "between 1 and 8 size classes are needed, got {}",
                    classes.len()
                ),
            ));
        }
        let mut previous = 0u32;
        for (i, c) in classes.iter().enumerate() {
            let at = format!("pools.classes[{i}]");
            if c.buffer_bytes < 64 || c.buffer_bytes > 16 * 1024 * 1024 {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "buffer_bytes must be between 64 and 16777216, got {}",
                        c.buffer_bytes
                    ),
                ));
            }
            if c.buffer_bytes <= previous {
                return Err(ConfigError::new(
                    at,
                    "classes must be listed smallest first, each larger than the one before",
                ));
            }
            if c.capacity == 0 {
                return Err(ConfigError::new(at, "capacity must be at least 1"));
            }
            previous = c.buffer_bytes;
        }
        Ok(())
    }
}

fn toml_like_parse(text: &str) -> Result<DataPlaneConfig, ConfigError> {
    parse_toml(text)
}

/// Parses a TOML document into `T`; the error names the line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}")
            }
            None => "config".to_owned(),
        };
        ConfigError::new(location, e.message().trim().to_owned())
    })
}

/// The configuration the data plane runs when it is given none: loopback
/// only.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("default-config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn default_config() -> DataPlaneConfig {
        DataPlaneConfig::from_toml(EMBEDDED_DEFAULT_TOML).unwrap()
    }

    #[test]
    fn mqtt_and_http_listeners_take_no_framing_or_identity() {
        let base = "[[listener]]\nname = \"m\"\nprotocol = \"mqtt\"\nbind = \"127.0.0.1:1883\"\n";
        DataPlaneConfig::from_toml(base)
            .unwrap()
            .validate()
            .unwrap();
        let framed = format!("{base}framing = {{ kind = \"length_field\", width = 2 }}\n");
        let e = DataPlaneConfig::from_toml(&framed)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("`framing` is for tcp and udp"),
            "{e}"
        );
        let identity = format!("{base}identity = {{ kind = \"peer_address\" }}\n");
        let e = DataPlaneConfig::from_toml(&identity)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("`identity` is for tcp and udp"),
            "{e}"
        );
        let secret = format!("{base}auth = \"device_secret\"\n");
        DataPlaneConfig::from_toml(&secret)
            .unwrap()
            .validate()
            .unwrap();
        // An mqtt listener and a tcp one cannot share an address.
        let clash = format!(
            "{base}[[listener]]\nname = \"t\"\nprotocol = \"tcp\"\nbind = \"127.0.0.1:1883\"\n\
             framing = {{ kind = \"length_field\", width = 2 }}\n"
        );
        let e = DataPlaneConfig::from_toml(&clash)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("already bound"), "{e}");
    }

    #[test]
    fn products_and_mqtt_settings_are_checked() {
        let bad = "[[product]]\nname = \"p\"\npublish = [\"a/#/b\"]\n";
        let e = DataPlaneConfig::from_toml(bad)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("product[0] \"p\": publish[0]"),
            "{e}"
        );
        let ok = "[[product]]\nname = \"p\"\npublish = [\"t/{device}/#\"]\n";
        DataPlaneConfig::from_toml(ok).unwrap().validate().unwrap();
        let streams = "[[stream]]\nname = \"live/*\"\npublish_key = \"k\"\n";
        DataPlaneConfig::from_toml(streams)
            .unwrap()
            .validate()
            .unwrap();
        for (bad, what) in [
            ("[[stream]]\nname = \"live\"\n", "stream[0]"),
            ("[[stream]]\nname = \"live/a*\"\n", "stream[0]"),
            (
                "[runtime.streams]\nviewer_queue_bytes = 10\n",
                "runtime.streams",
            ),
        ] {
            let e = DataPlaneConfig::from_toml(bad)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains(what), "{bad}: {e}");
        }
        let zero = "[runtime.mqtt]\nmax_inflight = 0\n";
        let e = DataPlaneConfig::from_toml(zero)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("runtime.mqtt"), "{e}");
    }

    #[test]
    fn embedded_default_is_valid_and_loopback_only() {
        let c = default_config();
        c.validate().unwrap();
        assert_eq!(c.listeners.len(), 6);
        let coap = &c.listeners[5];
        assert_eq!(
            (coap.protocol, coap.bind.as_str(), coap.auth),
            (ListenerProtocol::Coap, "127.0.0.1:5683", ListenerAuth::None)
        );
        assert!(coap.protocol.is_udp());
        assert_eq!(coap.protocol.to_string(), "coap");
        let rtmp = &c.listeners[4];
        assert_eq!(
            (rtmp.protocol, rtmp.bind.as_str(), rtmp.auth),
            (ListenerProtocol::Rtmp, "127.0.0.1:1935", ListenerAuth::None)
        );
        let mqtt = &c.listeners[2];
        assert_eq!(
            (mqtt.protocol, mqtt.bind.as_str(), mqtt.auth),
            (ListenerProtocol::Mqtt, "127.0.0.1:1883", ListenerAuth::None)
        );
        let http = &c.listeners[3];
        assert_eq!(
            (http.protocol, http.bind.as_str()),
            (ListenerProtocol::Http, "127.0.0.1:8080")
        );
        for l in &c.listeners {
            assert!(parse_socket_addr(&l.bind).unwrap().ip().is_loopback());
        }
        let tcp = &c.listeners[0];
        assert_eq!(tcp.bind, "127.0.0.1:7000");
        assert_eq!(tcp.identity, IdentityRule::LoginFrame);
        assert_eq!(tcp.framing, Some(FramingConfig::default()));
        let udp = &c.listeners[1];
        assert_eq!(udp.bind, "127.0.0.1:7001");
        assert_eq!(udp.identity, IdentityRule::PeerAddress);
    }

    #[test]
    fn errors_name_the_place() {
        let mut c = default_config();
        c.listeners[1].bind = "127.0.0.1:99999".into();
        let e = c.validate().unwrap_err();
        assert!(e.location.starts_with("listener[1] \"udp-default\""), "{e}");
        assert!(e.reason.contains("127.0.0.1:99999"), "{e}");

        let mut c = default_config();
        c.listeners[1].protocol = ListenerProtocol::Tcp;
        c.listeners[1].bind = c.listeners[0].bind.clone();
        c.listeners[1].framing = Some(FramingConfig::default());
        c.listeners[1].identity = IdentityRule::LoginFrame;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("already bound by listener \"tcp-default\""),
            "{e}"
        );

        let mut c = default_config();
        c.routes.push(RouteConfig {
            name: "r".into(),
            filter: "devices/#/up".into(),
            listener: None,
            device: None,
            action: RouteAction::Drop,
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("route[0] \"r\""), "{e}");

        let mut c = default_config();
        c.routes.push(RouteConfig {
            name: "r".into(),
            filter: "devices/+/up".into(),
            listener: Some("nope".into()),
            device: None,
            action: RouteAction::Drop,
        });
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("\"nope\" does not exist"));
    }

    #[test]
    fn listeners_that_rely_on_the_default_auth_are_named() {
        let text = "[[listener]]\nname = \"a\"\nauth = \"none\"\n\n[[listener]]\nname = \"b\"\n";
        let names = listeners_relying_on_default_auth(text);
        assert_eq!(names, ["b"]);
        let warning = default_auth_warning(&names).unwrap();
        assert!(
            warning.contains("\"b\"") && warning.contains("auth = \"none\""),
            "{warning}"
        );
        assert!(default_auth_warning(&[]).is_none());
        assert!(listeners_relying_on_default_auth(EMBEDDED_DEFAULT_TOML).is_empty());
        assert!(listeners_relying_on_default_auth("not toml [").is_empty());
    }

    #[test]
    fn listeners_require_the_device_secret_unless_they_say_none() {
        let tcp = "[[listener]]\nname = \"t\"\nprotocol = \"tcp\"\nbind = \"127.0.0.1:7100\"\n\
                   framing = { kind = \"length_field\", width = 2 }\n";
        let c = DataPlaneConfig::from_toml(tcp).unwrap();
        assert_eq!(c.listeners[0].auth, ListenerAuth::DeviceSecret);
        let udp = "[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:7101\"\n\
                   identity = { kind = \"peer_address\" }\n";
        let e = DataPlaneConfig::from_toml(udp)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("listener[0] \"u\""), "{e}");
        assert!(e.contains("auth = \"none\""), "{e}");
        let c = DataPlaneConfig::from_toml(&format!("{udp}auth = \"none\"\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listeners[0].auth, ListenerAuth::None);
    }

    #[test]
    fn toml_errors_carry_line_numbers() {
        let e = DataPlaneConfig::from_toml("[[listener]]\nname = 5\n").unwrap_err();
        assert!(e.location.contains("line 2"), "{e}");
        let e = DataPlaneConfig::from_toml("[runtime]\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_topic_template("devices/{device}-rx/down").unwrap(),
            vec![
                TemplatePart::Literal("devices/".into()),
                TemplatePart::Device,
                TemplatePart::Literal("-rx/down".into())
            ]
        );
        assert_eq!(
            parse_topic_template("x/{2}/{topic}").unwrap()[1],
            TemplatePart::Level(2)
        );
        assert!(parse_topic_template("a/{nope}").is_err());
        assert!(parse_topic_template("a/{device").is_err());
        assert!(parse_topic_template("a/}").is_err());
        assert!(parse_topic_template("{0}").is_err());
        assert!(parse_topic_template("").is_err());
    }

    #[test]
    fn device_ids() {
        assert!(validate_device_id("meter-42").is_ok());
        assert!(validate_device_id("").is_err());
        assert!(validate_device_id("a/b").is_err());
        assert!(validate_device_id("a+").is_err());
        assert!(validate_device_id("a\n").is_err());
        assert!(validate_device_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn forward_http_routes_parse_with_defaults_and_are_checked() {
        let route = |action: &str| {
            format!("[[route]]\nname = \"hook\"\nfilter = \"devices/#\"\naction = {action}\n")
        };
        let c = DataPlaneConfig::from_toml(&route(
            r#"{ kind = "forward_http", url = "http://127.0.0.1:9000/in", batch_wait = "5ms", connections = 4 }"#,
        ))
        .unwrap();
        c.validate().unwrap();
        let RouteAction::ForwardHttp(w) = &c.routes[0].action else {
            panic!("not forward_http: {:?}", c.routes[0].action);
        };
        let mut want = WebhookConfig::new("http://127.0.0.1:9000/in");
        want.batch_wait = Duration::from_millis(5);
        want.connections = 4;
        assert_eq!(w, &want);

        let e = DataPlaneConfig::from_toml(&route(
            r#"{ kind = "forward_http", url = "http://127.0.0.1/", bogus = 1 }"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = DataPlaneConfig::from_toml(&route(r#"{ kind = "forward_http" }"#)).unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");

        for (action, why) in [
            (
                r#"{ kind = "forward_http", url = "https://127.0.0.1/" }"#,
                "https is not supported",
            ),
            (
                r#"{ kind = "forward_http", url = "http://hooks.example/" }"#,
                "does not resolve names",
            ),
            (
                r#"{ kind = "forward_http", url = "http://127.0.0.1/", batch_max = 0 }"#,
                "batch_max must be between 1",
            ),
        ] {
            let e = DataPlaneConfig::from_toml(&route(action))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.location, "route[0] \"hook\": action", "{e}");
            assert!(e.reason.contains(why), "{action}: {e}");
        }
    }

    #[test]
    fn coap_listeners_take_device_secret_but_no_framing_and_share_no_udp_port() {
        let mut c = default_config();
        let coap = c.listeners.len() - 1;
        c.listeners[coap].auth = ListenerAuth::DeviceSecret;
        c.validate().unwrap();

        let mut framed = c.clone();
        framed.listeners[coap].framing = Some(FramingConfig::default());
        let e = framed.validate().unwrap_err().to_string();
        assert!(
            e.contains("`framing` is for tcp and udp listeners, not coap"),
            "{e}"
        );

        let mut same_port = c.clone();
        same_port.listeners[coap].bind = same_port.listeners[1].bind.clone();
        let e = same_port.validate().unwrap_err().to_string();
        assert!(
            e.contains("already bound by listener \"udp-default\""),
            "{e}"
        );

        // A TCP listener may use the CoAP listener's port number.
        let mut tcp_too = c;
        tcp_too.listeners[0].bind = "127.0.0.1:5683".into();
        tcp_too.validate().unwrap();
    }
}
