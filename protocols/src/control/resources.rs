//! The desired-state resources as they travel on the control sockets.
//!
//! These mirror the config types of [`crate::config`] field for field, but
//! with a wire layout of their own (postcard: fields in order, enum variants
//! by index), so the TOML shape and the wire shape can evolve separately.
//! Enums here are append-only: a new variant goes at the end and the
//! protocol version moves when a struct gains a field.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config;
use crate::framing;

use super::secret::SecretDigest;

/// One item of desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Resource {
    /// A device listener.
    Listener(Listener),
    /// A kind of device, with what its devices may publish and subscribe.
    Product(Product),
    /// A device in the registry.
    Device(Device),
    /// A route.
    Route(Route),
    /// Rules for a live stream (or a family of streams).
    Stream(Stream),
}

impl Resource {
    /// The resource's kind and name.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind(),
            name: self.name().to_owned(),
        }
    }

    /// The resource's kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::Listener(_) => ResourceKind::Listener,
            Self::Product(_) => ResourceKind::Product,
            Self::Device(_) => ResourceKind::Device,
            Self::Route(_) => ResourceKind::Route,
            Self::Stream(_) => ResourceKind::Stream,
        }
    }

    /// The resource's name (a device's id).
    pub fn name(&self) -> &str {
        match self {
            Self::Listener(l) => &l.name,
            Self::Product(p) => &p.name,
            Self::Device(d) => &d.id,
            Self::Route(r) => &r.name,
            Self::Stream(s) => &s.name,
        }
    }
}

/// The kinds of resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResourceKind {
    /// [`Listener`].
    Listener,
    /// [`Product`].
    Product,
    /// [`Device`].
    Device,
    /// [`Route`].
    Route,
    /// [`Stream`].
    Stream,
}

impl ResourceKind {
    /// Every kind, in the order a snapshot lists them (what others refer to
    /// comes first).
    pub const ALL: [Self; 5] = [
        Self::Listener,
        Self::Product,
        Self::Device,
        Self::Route,
        Self::Stream,
    ];

    /// The kind's name as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listener => "listener",
            Self::Product => "product",
            Self::Device => "device",
            Self::Route => "route",
            Self::Stream => "stream",
        }
    }

    /// Parses a kind, singular or plural.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.strip_suffix('s').unwrap_or(text);
        Self::ALL.into_iter().find(|k| k.as_str() == t)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceKey {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name (a device's id).
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)
    }
}

/// A device listener: [`config::ListenerConfig`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Transport.
    pub protocol: ListenerProtocol,
    /// `ip:port` bound on every core.
    pub bind: String,
    /// Open connections (TCP) or sessions (UDP) before new ones are refused.
    pub max_connections: u32,
    /// Largest frame or datagram accepted.
    pub max_frame_bytes: u32,
    /// Silence after which a connection or session is closed, in ms.
    pub idle_timeout_ms: u64,
    /// Framing; required for TCP.
    pub framing: Option<Framing>,
    /// How a connection's device is known.
    pub identity: Identity,
    /// What a device must show.
    pub auth: ListenerAuth,
}

/// A listener's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ListenerProtocol {
    /// Raw TCP with framing.
    Tcp,
    /// Raw UDP.
    Udp,
    /// MQTT over TCP.
    Mqtt,
    /// HTTP/1.1 (WebSocket upgrades, HTTP-FLV).
    Http,
    /// RTMP (live streams).
    Rtmp,
    /// CoAP over UDP (device uplink, observed downlink).
    Coap,
}

/// [`framing::FramingConfig`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Framing {
    /// Frames end with a delimiter.
    Delimiter {
        /// The delimiter's bytes (UTF-8).
        delimiter: String,
        /// Leave it out of the delivered frame.
        strip_delimiter: bool,
    },
    /// Every frame has the same size.
    FixedLength {
        /// The size.
        frame_bytes: u32,
    },
    /// A length field gives each frame's size.
    LengthField {
        /// Bytes before the field.
        offset: u32,
        /// Size of the field: 1, 2, 4 or 8.
        width: u8,
        /// Byte order of the field.
        big_endian: bool,
        /// Added to the field's value.
        adjustment: i64,
        /// Leading bytes removed; none means the header.
        strip_bytes: Option<u32>,
    },
}

/// [`config::IdentityRule`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Identity {
    /// The first frame names the device.
    LoginFrame,
    /// The peer's `ip:port` is the device id.
    PeerAddress,
    /// Each datagram starts with this many bytes of device id.
    PayloadPrefix {
        /// Length of the prefix.
        bytes: u32,
    },
}

/// [`config::ListenerAuth`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ListenerAuth {
    /// No proof asked.
    None,
    /// The login frame carries `{id}:{secret}`, checked against the registry.
    DeviceSecret,
}

/// A route: [`config::RouteConfig`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Topic filter.
    pub filter: String,
    /// Only messages from this listener.
    pub listener: Option<String>,
    /// Only messages from this device.
    pub device: Option<String>,
    /// What to do.
    pub action: RouteAction,
}

/// [`config::RouteAction`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RouteAction {
    /// Publish a copy on a templated topic.
    Republish {
        /// Topic template.
        topic: String,
    },
    /// Send the payload, framed, to a TCP upstream.
    ForwardTcp {
        /// Upstream `ip:port`.
        address: String,
        /// Framing of the upstream stream.
        framing: Framing,
        /// Bytes queued per core before messages are dropped.
        queue_bytes: u32,
    },
    /// Send the payload as a datagram.
    ForwardUdp {
        /// Upstream `ip:port`.
        address: String,
    },
    /// Stop the message.
    Drop,
    /// POST the message, batched as JSON, to an HTTP webhook.
    ForwardHttp(Webhook),
}

/// [`config::WebhookConfig`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `http://host[:port][/path]`.
    pub url: String,
    /// Most messages in one POST.
    pub batch_max: u32,
    /// How long a batch waits for more after its first message.
    pub batch_wait_ms: u64,
    /// Bytes queued per core before messages are dropped.
    pub queue_bytes: u32,
    /// Messages queued per core before messages are dropped.
    pub queue_messages: u32,
    /// Keep-alive connections per core.
    pub connections: u16,
    /// Time one attempt has to connect, send and get its answer.
    pub timeout_ms: u64,
    /// Attempts after the first for a batch that can be retried.
    pub max_retries: u32,
}

impl From<&config::WebhookConfig> for Webhook {
    fn from(w: &config::WebhookConfig) -> Self {
        Self {
            url: w.url.clone(),
            batch_max: w.batch_max,
            batch_wait_ms: millis(w.batch_wait),
            queue_bytes: w.queue_bytes,
            queue_messages: w.queue_messages,
            connections: w.connections,
            timeout_ms: millis(w.timeout),
            max_retries: w.max_retries,
        }
    }
}

impl From<&Webhook> for config::WebhookConfig {
    fn from(w: &Webhook) -> Self {
        Self {
            url: w.url.clone(),
            batch_max: w.batch_max,
            batch_wait: Duration::from_millis(w.batch_wait_ms),
            queue_bytes: w.queue_bytes,
            queue_messages: w.queue_messages,
            connections: w.connections,
            timeout: Duration::from_millis(w.timeout_ms),
            max_retries: w.max_retries,
        }
    }
}

/// A kind of device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Unique name.
    pub name: String,
    /// Free text for people.
    pub description: String,
    /// Topic filters its devices may publish to; `{device}` stands for the
    /// device's own id. Empty: the device's own `devices/{device}/up/#`.
    pub publish: Vec<String>,
    /// Topic filters its devices may subscribe to. Empty: the device's own
    /// `devices/{device}/down/#`.
    pub subscribe: Vec<String>,
}

/// A device in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Unique id.
    pub id: String,
    /// Its product's name.
    pub product: String,
    /// Digest of its secret; the secret itself is never stored or sent.
    pub secret: SecretDigest,
}

/// Rules for live streams whose `app/name` matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// `app/name`, or `app/*` for every stream of an app.
    pub name: String,
    /// Key a publisher must give (`?key=`); none: anyone may publish.
    pub publish_key: Option<String>,
    /// Whether viewers may play it.
    pub allow_play: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&framing::FramingConfig> for Framing {
    fn from(f: &framing::FramingConfig) -> Self {
        match f {
            framing::FramingConfig::Delimiter {
                delimiter,
                strip_delimiter,
            } => Self::Delimiter {
                delimiter: delimiter.clone(),
                strip_delimiter: *strip_delimiter,
            },
            framing::FramingConfig::FixedLength { frame_bytes } => Self::FixedLength {
                frame_bytes: *frame_bytes,
            },
            framing::FramingConfig::LengthField {
                offset,
                width,
                byte_order,
                adjustment,
                strip_bytes,
            } => Self::LengthField {
                offset: *offset,
                width: *width,
                big_endian: *byte_order == framing::ByteOrder::BigEndian,
                adjustment: *adjustment,
                strip_bytes: *strip_bytes,
            },
        }
    }
}

impl From<&Framing> for framing::FramingConfig {
    fn from(f: &Framing) -> Self {
        match f {
            Framing::Delimiter {
                delimiter,
                strip_delimiter,
            } => Self::Delimiter {
                delimiter: delimiter.clone(),
                strip_delimiter: *strip_delimiter,
            },
            Framing::FixedLength { frame_bytes } => Self::FixedLength {
                frame_bytes: *frame_bytes,
            },
            Framing::LengthField {
                offset,
                width,
                big_endian,
                adjustment,
                strip_bytes,
            } => Self::LengthField {
                offset: *offset,
                width: *width,
                byte_order: if *big_endian {
                    framing::ByteOrder::BigEndian
                } else {
                    framing::ByteOrder::LittleEndian
                },
                adjustment: *adjustment,
                strip_bytes: *strip_bytes,
            },
        }
    }
}

impl From<&config::ListenerConfig> for Listener {
    fn from(l: &config::ListenerConfig) -> Self {
        Self {
            name: l.name.clone(),
            protocol: match l.protocol {
                config::ListenerProtocol::Tcp => ListenerProtocol::Tcp,
                config::ListenerProtocol::Udp => ListenerProtocol::Udp,
                config::ListenerProtocol::Mqtt => ListenerProtocol::Mqtt,
                config::ListenerProtocol::Http => ListenerProtocol::Http,
                config::ListenerProtocol::Rtmp => ListenerProtocol::Rtmp,
                config::ListenerProtocol::Coap => ListenerProtocol::Coap,
            },
            bind: l.bind.clone(),
            max_connections: l.max_connections,
            max_frame_bytes: l.max_frame_bytes,
            idle_timeout_ms: millis(l.idle_timeout),
            framing: l.framing.as_ref().map(Framing::from),
            identity: match &l.identity {
                config::IdentityRule::LoginFrame => Identity::LoginFrame,
                config::IdentityRule::PeerAddress => Identity::PeerAddress,
                config::IdentityRule::PayloadPrefix { bytes } => {
                    Identity::PayloadPrefix { bytes: *bytes }
                }
            },
            auth: match l.auth {
                config::ListenerAuth::None => ListenerAuth::None,
                config::ListenerAuth::DeviceSecret => ListenerAuth::DeviceSecret,
            },
        }
    }
}

impl From<&Listener> for config::ListenerConfig {
    fn from(l: &Listener) -> Self {
        Self {
            name: l.name.clone(),
            protocol: match l.protocol {
                ListenerProtocol::Tcp => config::ListenerProtocol::Tcp,
                ListenerProtocol::Udp => config::ListenerProtocol::Udp,
                ListenerProtocol::Mqtt => config::ListenerProtocol::Mqtt,
                ListenerProtocol::Http => config::ListenerProtocol::Http,
                ListenerProtocol::Rtmp => config::ListenerProtocol::Rtmp,
                ListenerProtocol::Coap => config::ListenerProtocol::Coap,
            },
            bind: l.bind.clone(),
            max_connections: l.max_connections,
            max_frame_bytes: l.max_frame_bytes,
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            framing: l.framing.as_ref().map(framing::FramingConfig::from),
            identity: match &l.identity {
                Identity::LoginFrame => config::IdentityRule::LoginFrame,
                Identity::PeerAddress => config::IdentityRule::PeerAddress,
                Identity::PayloadPrefix { bytes } => {
                    config::IdentityRule::PayloadPrefix { bytes: *bytes }
                }
            },
            auth: match l.auth {
                ListenerAuth::None => config::ListenerAuth::None,
                ListenerAuth::DeviceSecret => config::ListenerAuth::DeviceSecret,
            },
        }
    }
}

impl From<&config::RouteConfig> for Route {
    fn from(r: &config::RouteConfig) -> Self {
        Self {
            name: r.name.clone(),
            filter: r.filter.clone(),
            listener: r.listener.clone(),
            device: r.device.clone(),
            action: match &r.action {
                config::RouteAction::Republish { topic } => RouteAction::Republish {
                    topic: topic.clone(),
                },
                config::RouteAction::ForwardTcp {
                    address,
                    framing,
                    queue_bytes,
                } => RouteAction::ForwardTcp {
                    address: address.clone(),
                    framing: Framing::from(framing),
                    queue_bytes: *queue_bytes,
                },
                config::RouteAction::ForwardUdp { address } => RouteAction::ForwardUdp {
                    address: address.clone(),
                },
                config::RouteAction::ForwardHttp(w) => RouteAction::ForwardHttp(Webhook::from(w)),
                config::RouteAction::Drop => RouteAction::Drop,
            },
        }
    }
}

impl From<&Route> for config::RouteConfig {
    fn from(r: &Route) -> Self {
        Self {
            name: r.name.clone(),
            filter: r.filter.clone(),
            listener: r.listener.clone(),
            device: r.device.clone(),
            action: match &r.action {
                RouteAction::Republish { topic } => config::RouteAction::Republish {
                    topic: topic.clone(),
                },
                RouteAction::ForwardTcp {
                    address,
                    framing,
                    queue_bytes,
                } => config::RouteAction::ForwardTcp {
                    address: address.clone(),
                    framing: framing::FramingConfig::from(framing),
                    queue_bytes: *queue_bytes,
                },
                RouteAction::ForwardUdp { address } => config::RouteAction::ForwardUdp {
                    address: address.clone(),
                },
                RouteAction::ForwardHttp(w) => {
                    config::RouteAction::ForwardHttp(config::WebhookConfig::from(w))
                }
                RouteAction::Drop => config::RouteAction::Drop,
            },
        }
    }
}

impl From<&config::ProductConfig> for Product {
    fn from(p: &config::ProductConfig) -> Self {
        Self {
            name: p.name.clone(),
            description: String::new(),
            publish: p.publish.clone(),
            subscribe: p.subscribe.clone(),
        }
    }
}

impl From<&Product> for config::ProductConfig {
    fn from(p: &Product) -> Self {
        Self {
            name: p.name.clone(),
            publish: p.publish.clone(),
            subscribe: p.subscribe.clone(),
        }
    }
}

/// The data-plane config that `listeners`, `routes` (in this order),
/// `products` and `streams` give, with the data plane's own runtime and
/// pool settings.
pub fn to_dataplane_config(
    runtime: config::RuntimeSettings,
    pools: config::PoolSettings,
    listeners: &[Listener],
    routes: &[Route],
    products: &[Product],
    streams: &[Stream],
) -> config::DataPlaneConfig {
    config::DataPlaneConfig {
        runtime,
        pools,
        listeners: listeners.iter().map(config::ListenerConfig::from).collect(),
        routes: routes.iter().map(config::RouteConfig::from).collect(),
        products: products.iter().map(config::ProductConfig::from).collect(),
        streams: streams.iter().map(config::StreamRule::from).collect(),
    }
}

impl From<&config::StreamRule> for Stream {
    fn from(s: &config::StreamRule) -> Self {
        Self {
            name: s.name.clone(),
            publish_key: s.publish_key.clone(),
            allow_play: s.allow_play,
        }
    }
}

impl From<&Stream> for config::StreamRule {
    fn from(s: &Stream) -> Self {
        Self {
            name: s.name.clone(),
            publish_key: s.publish_key.clone(),
            allow_play: s.allow_play,
        }
    }
}
