//! What travels on the bus and over the mesh between cores.

use std::rc::Rc;
use std::time::Instant;

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
}

/// Everything cores tell each other.
#[derive(Debug)]
pub(crate) enum MeshMsg {
    /// Deliver to the receiving core's local subscribers.
    Publish(CrossMessage),
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
    RegistryAnswer { query: u64, verdict: AuthVerdict },
    /// These devices left the registry (or were kicked): close their
    /// connections on the receiving core.
    CloseDevices { devices: Vec<Box<str>> },
}
