//! `listener add` and `listener rm`.

use std::io::Write;

use shoal_protocols::control::{
    Framing, Identity, Listener, ListenerAuth, ListenerProtocol, Resource, ResourceKey,
    ResourceKind,
};

use crate::args::{AuthArg, ListenerAddArgs, OutputFormat, ProtocolArg};
use crate::client::ControlClient;
use crate::commands::{remove_one, upsert_one};
use crate::error::{CliError, CliResult};

/// The listener `listener add` describes, with the transport's defaults
/// filled in (tcp: `length:2` and login-frame; udp: no framing and
/// peer-address; mqtt, http, rtmp and coap: neither applies; auth:
/// device-secret). A listener that cannot check secrets must be told
/// `--auth none`.
pub(crate) fn listener_of(args: &ListenerAddArgs) -> CliResult<Listener> {
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
    let identity = args.identity.clone().unwrap_or(default_identity);
    let checks_secrets = match protocol {
        ListenerProtocol::Udp => false,
        ListenerProtocol::Tcp => identity == Identity::LoginFrame,
        _ => true,
    };
    let auth = match args.auth {
        Some(AuthArg::None) => ListenerAuth::None,
        Some(AuthArg::DeviceSecret) => ListenerAuth::DeviceSecret,
        None if checks_secrets => ListenerAuth::DeviceSecret,
        None => {
            return Err(CliError::invalid(
                "this listener cannot check device secrets (raw udp, or tcp whose identity is \
                 not the login frame); add --auth none to take device ids as given",
            ))
        }
    };
    Ok(Listener {
        name: args.name.clone(),
        protocol,
        bind: args.bind.clone(),
        max_connections: args.max_connections,
        max_frame_bytes: args.max_frame_bytes,
        idle_timeout_ms: u64::try_from(args.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        framing: args.framing.clone().unwrap_or(default_framing),
        identity,
        auth,
    })
}

/// `listener add`.
pub(crate) fn add(
    client: &mut ControlClient,
    args: &ListenerAddArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    upsert_one(client, out, format, Resource::Listener(listener_of(args)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, ListenerCommand};
    use clap::Parser;

    fn listener(args: &[&str]) -> CliResult<Listener> {
        let cli = Cli::try_parse_from(
            [
                "shoalctl",
                "listener",
                "add",
                "l",
                "--bind",
                "127.0.0.1:9000",
            ]
            .iter()
            .chain(args),
        )
        .map_err(|e| CliError::invalid(e.to_string()))?;
        let Command::Listener(ListenerCommand::Add(a)) = cli.command else {
            panic!("not listener add");
        };
        listener_of(&a)
    }

    #[test]
    fn listeners_require_the_device_secret_unless_told_otherwise() {
        for protocol in ["tcp", "mqtt", "http", "rtmp", "coap"] {
            let l = listener(&["--protocol", protocol]).unwrap();
            assert_eq!(l.auth, ListenerAuth::DeviceSecret, "{protocol}");
            let l = listener(&["--protocol", protocol, "--auth", "none"]).unwrap();
            assert_eq!(l.auth, ListenerAuth::None, "{protocol}");
        }
        // Listeners that cannot check a secret must say so.
        for args in [
            &["--protocol", "udp"][..],
            &["--protocol", "tcp", "--identity", "peer-address"][..],
        ] {
            let e = listener(args).unwrap_err();
            assert!(e.to_string().contains("--auth none"), "{args:?}: {e}");
            let mut with_none = args.to_vec();
            with_none.extend_from_slice(&["--auth", "none"]);
            assert_eq!(listener(&with_none).unwrap().auth, ListenerAuth::None);
        }
    }
}
