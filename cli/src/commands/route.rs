//! `route add` and `route rm`.

use std::io::Write;

use shoal_protocols::control::{Framing, Resource, ResourceKey, ResourceKind, Route, RouteAction};

use crate::args::{OutputFormat, RouteAddArgs};
use crate::client::ControlClient;
use crate::commands::{remove_one, upsert_one};
use crate::error::{CliError, CliResult};

/// Bytes a TCP upstream queues per core unless told otherwise.
pub(crate) const DEFAULT_FORWARD_QUEUE_BYTES: u32 = 1024 * 1024;

/// The route `route add` describes.
pub(crate) fn route_of(args: &RouteAddArgs) -> CliResult<Route> {
    let a = &args.action;
    if a.forward_tcp.is_none() && (args.framing.is_some() || args.queue_bytes.is_some()) {
        return Err(CliError::invalid(
            "--framing and --queue-bytes are for --forward-tcp routes",
        ));
    }
    let action = if let Some(topic) = &a.republish {
        RouteAction::Republish {
            topic: topic.clone(),
        }
    } else if let Some(address) = &a.forward_tcp {
        let framing = match &args.framing {
            Some(Some(f)) => f.clone(),
            Some(None) => {
                return Err(CliError::invalid(
                    "a TCP upstream needs framing (e.g. --framing length:2 or --framing line)",
                ))
            }
            None => Framing::LengthField {
                offset: 0,
                width: 2,
                big_endian: true,
                adjustment: 0,
                strip_bytes: None,
            },
        };
        RouteAction::ForwardTcp {
            address: address.clone(),
            framing,
            queue_bytes: args.queue_bytes.unwrap_or(DEFAULT_FORWARD_QUEUE_BYTES),
        }
    } else if let Some(address) = &a.forward_udp {
        RouteAction::ForwardUdp {
            address: address.clone(),
        }
    } else if a.drop {
        RouteAction::Drop
    } else {
        return Err(CliError::invalid(
            "give one action: --republish, --forward-tcp, --forward-udp or --drop",
        ));
    };
    Ok(Route {
        name: args.name.clone(),
        filter: args.filter.clone(),
        listener: args.listener.clone(),
        device: args.device.clone(),
        action,
    })
}

/// `route add`.
pub(crate) fn add(
    client: &mut ControlClient,
    args: &RouteAddArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let route = route_of(args)?;
    upsert_one(client, out, format, Resource::Route(route))
}

/// `route rm`.
pub(crate) fn rm(
    client: &mut ControlClient,
    name: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let key = ResourceKey {
        kind: ResourceKind::Route,
        name,
    };
    remove_one(client, out, format, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, RouteCommand};
    use clap::Parser;

    fn route(args: &[&str]) -> CliResult<Route> {
        let cli = Cli::try_parse_from(
            ["shoalctl", "route", "add", "r", "--filter", "devices/#"]
                .iter()
                .chain(args),
        )
        .map_err(|e| CliError::invalid(e.to_string()))?;
        let Command::Route(RouteCommand::Add(a)) = cli.command else {
            panic!("not route add");
        };
        route_of(&a)
    }

    #[test]
    fn forward_tcp_gets_default_framing_and_queue() {
        let r = route(&["--forward-tcp", "10.0.0.5:9000"]).unwrap();
        assert_eq!(
            r.action,
            RouteAction::ForwardTcp {
                address: "10.0.0.5:9000".into(),
                framing: Framing::LengthField {
                    offset: 0,
                    width: 2,
                    big_endian: true,
                    adjustment: 0,
                    strip_bytes: None,
                },
                queue_bytes: DEFAULT_FORWARD_QUEUE_BYTES,
            }
        );
        let r = route(&[
            "--forward-tcp",
            "10.0.0.5:9000",
            "--framing",
            "line",
            "--queue-bytes",
            "4096",
        ])
        .unwrap();
        let RouteAction::ForwardTcp {
            queue_bytes,
            framing,
            ..
        } = r.action
        else {
            panic!("not forward-tcp");
        };
        assert_eq!(queue_bytes, 4096);
        assert!(matches!(framing, Framing::Delimiter { .. }));
    }

    #[test]
    fn tcp_options_without_forward_tcp_are_refused() {
        for args in [
            &["--drop", "--framing", "line"][..],
            &["--republish", "x/y", "--queue-bytes", "9"],
        ] {
            let e = route(args).unwrap_err();
            assert_eq!(e.failure.exit_code(), 2);
            assert!(e.message.contains("--forward-tcp"), "{e}");
        }
        assert!(route(&["--forward-tcp", "1.2.3.4:5", "--framing", "none"]).is_err());
        let r = route(&["--device", "d1", "--listener", "l", "--drop"]).unwrap();
        assert_eq!(
            (r.device.as_deref(), r.listener.as_deref()),
            (Some("d1"), Some("l"))
        );
    }
}
