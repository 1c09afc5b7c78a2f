//! What travels on the bus and over the mesh between cores.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shoal_protocols::control::SecretDigest;

use crate::pool::{Detached, Payload};
use crate::registry::AuthVerdict;

/// Where a message entered the data plane.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The listener it arrived on.
    pub(crate) listener: Option<Rc<str>>,
    /// The device that sent it.
    pub(crate) device: Option<Rc<str>>,
    /// The MQTT session that published it on this core (0: none), for
    /// No Local subscriptions. Not carried to other cores: a session's
    /// subscriptions live on its connection's core.
    pub(crate) session: u64,
}

/// MQTT 5.0 properties a message carries from its publisher to its
/// subscribers (owned, `Send`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PublishProps {
    pub(crate) payload_format_indicator: Option<u8>,
    /// When the message stops being worth delivering (Message Expiry).
    pub(crate) expires_at: Option<Instant>,
    pub(crate) content_type: Option<Box<str>>,
    pub(crate) response_topic: Option<Box<str>>,
    pub(crate) correlation_data: Option<Box<[u8]>>,
    pub(crate) user_properties: Vec<(Box<str>, Box<str>)>,
}

/// A message on a core's bus.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) topic: Rc<str>,
    pub(crate) payload: Payload,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) origin: Origin,
    /// Times routes have republished it (loop guard).
    pub(crate) hops: u8,
    /// MQTT 5.0 properties, when the publisher set any.
    pub(crate) props: Option<Rc<PublishProps>>,
}

/// A message on its way to another core: owned, `Send`, its payload copied
/// once.
#[derive(Debug)]
pub(crate) struct CrossMessage {
    pub(crate) topic: Box<str>,
    pub(crate) payload: Detached,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) origin_listener: Option<Box<str>>,
    pub(crate) origin_device: Option<Box<str>>,
    pub(crate) props: Option<Box<PublishProps>>,
}

impl CrossMessage {
    /// The owned, `Send` form of `m`, its payload detached from this core.
    pub(crate) fn of(m: &Message, payload: Detached) -> Self {
        Self {
            topic: m.topic.as_ref().into(),
            payload,
            qos: m.qos,
            retain: m.retain,
            origin_listener: m.origin.listener.as_deref().map(Into::into),
            origin_device: m.origin.device.as_deref().map(Into::into),
            props: m.props.as_deref().map(|p| Box::new(p.clone())),
        }
    }

    /// The message on the receiving core, its payload adopted by `pool`
    /// (`None` when the pool cannot take it).
    pub(crate) fn adopt_into(mut self, pool: &crate::pool::SlabPool) -> Option<Message> {
        let detached = std::mem::replace(&mut self.payload, Detached::empty());
        let buf = pool.adopt(detached)?;
        Some(self.into_message(Payload::whole(buf)))
    }

    /// The message on the receiving core, its payload in `payload`.
    pub(crate) fn into_message(self, payload: Payload) -> Message {
        Message {
            topic: self.topic.into(),
            payload,
            qos: self.qos,
            retain: self.retain,
            origin: Origin {
                listener: self.origin_listener.map(Into::into),
                device: self.origin_device.map(Into::into),
                session: 0,
            },
            hops: 0,
            props: self.props.map(|p| Rc::new(*p)),
        }
    }
}

/// Everything cores tell each other.
#[derive(Debug)]
pub(crate) enum MeshMsg {
    /// Deliver to the receiving core's local subscribers.
    Publish(CrossMessage),
    /// Deliver to one local member of shared subscription `group`
    /// (`{name}/{filter}`), picked by the sending core.
    SharedPublish { group: Box<str>, msg: CrossMessage },
    /// Answer with [`MeshMsg::InterestSynced`]: the receiving core has
    /// applied every interest announcement sent before it.
    InterestSync { epoch: u64 },
    /// The answer to [`MeshMsg::InterestSync`] `epoch`.
    InterestSynced { epoch: u64 },
    /// Store (or, with an empty payload, clear) a retained message.
    Retain(CrossMessage),
    /// An MQTT client connected on the sending core: close this core's
    /// connection of the same client id (session taken over) and answer
    /// with [`MeshMsg::SessionHandover`], giving up the session.
    SessionClaim {
        claim: u64,
        client_id: Box<str>,
        /// The new connection asked for a clean start: discard the session.
        clean_start: bool,
    },
    /// The answer to [`MeshMsg::SessionClaim`] `claim`: the session, if
    /// this core had it and it was to be kept.
    SessionHandover {
        claim: u64,
        session: Option<Box<crate::mqtt::SessionTransfer>>,
    },
    /// The sending core has (or no longer has) subscribers for `filter`.
    Interest { filter: Box<str>, present: bool },
    /// A device logged in on the sending core at `since`: an older
    /// connection of the same device elsewhere is taken over.
    DeviceOnline { device: Box<str>, since: Instant },
    /// Asks the device's owner whether `digest` (of the secret a
    /// connection on the sending core gave) is the device's.
    RegistryQuery {
        query: u64,
        device: Box<str>,
        digest: SecretDigest,
    },
    /// The owner's answer to [`MeshMsg::RegistryQuery`] `query`.
    RegistryAnswer {
        query: u64,
        verdict: AuthVerdict,
        /// The device's product, when accepted.
        product: Option<Box<str>>,
    },
    /// These devices left the registry (or were kicked): close their
    /// connections on the receiving core.
    CloseDevices { devices: Vec<Box<str>> },
    /// Live stream `stream` got (or lost) its publisher on the sending core.
    StreamLive { stream: Box<str>, live: bool },
    /// The sending core has (or no longer has) viewers of `stream`: its
    /// origin sends it the stream's tags (its GOP cache first).
    StreamViewers { stream: Box<str>, present: bool },
    /// One tag of `stream` from its origin core.
    StreamTag {
        stream: Box<str>,
        tag: crate::stream::CrossTag,
    },
    /// To `stream`'s owner core: may the sending core publish it? Answered
    /// with [`MeshMsg::StreamClaimed`].
    StreamClaim { claim: u64, stream: Box<str> },
    /// The owner's answer to [`MeshMsg::StreamClaim`] `claim`.
    StreamClaimed { claim: u64, granted: bool },
    /// The sending core's publisher of `stream` left (to the owner core).
    StreamRelease { stream: Box<str> },
    /// To `device`'s owner core, from an HTTP poll on the sending core:
    /// answer with [`MeshMsg::MailboxBatch`] `poll` once the device's
    /// mailbox holds messages, or empty after `wait`.
    MailboxPoll {
        poll: u64,
        device: Box<str>,
        wait: Duration,
        max: u32,
    },
    /// The owner's answer to [`MeshMsg::MailboxPoll`] `poll`.
    MailboxBatch {
        poll: u64,
        items: Vec<crate::http::MailItem>,
    },
    /// The poll `poll` of `device` gave up (its client left or it timed
    /// out on the asking core): the owner forgets it.
    MailboxCancel { poll: u64, device: Box<str> },
}
