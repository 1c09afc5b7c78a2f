//! `listener add` and `listener rm`.

use std::io::Write;

use shoal_protocols::control::{
    Framing, Identity, Listener, ListenerAuth, ListenerProtocol, Resource, ResourceKey,
    ResourceKind,
};

use crate::args::{AuthArg, ListenerAddArgs, OutputFormat, ProtocolArg};
use crate::client::ControlClient;
use crate::commands::{remove_one, upsert_one};
use crate::error::CliResult;

/// The listener `listener add` describes, with the transport's defaults
/// filled in (tcp: `length:2` and login-frame; udp: no framing and
/// peer-address; mqtt, http, rtmp and coap: neither applies).
pub(crate) fn listener_of(args: &ListenerAddArgs) -> Listener {
    let (protocol, default_framing, default_identity) = match args.protocol {
        ProtocolArg::Tcp => (
            ListenerProtocol::Tcp,
            Some(Framing::LengthField {
                offset: 0,
                width: 2,
                big_endian: true,
                adjustment: 0,
                strip_bytes: None,
            }),
            Identity::LoginFrame,
        ),
        ProtocolArg::Udp => (ListenerProtocol::Udp, None, Identity::PeerAddress),
        ProtocolArg::Mqtt => (ListenerProtocol::Mqtt, None, Identity::LoginFrame),
        ProtocolArg::Http => (ListenerProtocol::Http, None, Identity::LoginFrame),
        ProtocolArg::Rtmp => (ListenerProtocol::Rtmp, None, Identity::LoginFrame),
        ProtocolArg::Coap => (ListenerProtocol::Coap, None, Identity::LoginFrame),
    };
    Listener {
        name: args.name.clone(),
        protocol,
        bind: args.bind.clone(),
        max_connections: args.max_connections,
        max_frame_bytes: args.max_frame_bytes,
        idle_timeout_ms: u64::try_from(args.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        framing: args.framing.clone().unwrap_or(default_framing),
        identity: args.identity.clone().unwrap_or(default_identity),
        auth: match args.auth {
            AuthArg::None => ListenerAuth::None,
            AuthArg::DeviceSecret => ListenerAuth::DeviceSecret,
        },
    }
}

/// `listener add`.
pub(crate) fn add(
    client: &mut ControlClient,
    args: &ListenerAddArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    upsert_one(client, out, format, Resource::Listener(listener_of(args)))
}

/// `listener rm`.
pub(crate) fn rm(
    client: &mut ControlClient,
    name: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let key = ResourceKey {
        kind: ResourceKind::Listener,
        name,
    };
    remove_one(client, out, format, key)
}
