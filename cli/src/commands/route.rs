//! `route add` and `route rm`.

use std::io::Write;

use shoal_protocols::config::WebhookConfig;
use shoal_protocols::control::{
    Framing, Resource, ResourceKey, ResourceKind, Route, RouteAction, Webhook,
};

use crate::args::{OutputFormat, RouteAddArgs};
use crate::client::ControlClient;
use crate::commands::{remove_one, upsert_one};
use crate::error::{CliError, CliResult};

/// Bytes a TCP upstream queues per core unless told otherwise.
pub(crate) const DEFAULT_FORWARD_QUEUE_BYTES: u32 = 1024 * 1024;

/// The route `route add` describes.
pub(crate) fn route_of(args: &RouteAddArgs) -> CliResult<Route> {
    let a = &args.action;
    if a.forward_tcp.is_none() && args.framing.is_some() {
        return Err(CliError::invalid("--framing is for --forward-tcp routes"));
    }
    if a.forward_tcp.is_none() && a.forward_http.is_none() && args.queue_bytes.is_some() {
        return Err(CliError::invalid(
            "--queue-bytes is for --forward-tcp and --forward-http routes",
        ));
    }
    if a.forward_http.is_none() {
        if let Some(flag) = args.webhook.given().first() {
            return Err(CliError::invalid(format!(
                "{flag} is for --forward-http routes"
            )));
        }
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
    } else if let Some(url) = &a.forward_http {
        RouteAction::ForwardHttp(webhook_of(url, args)?)
    } else if a.drop {
        RouteAction::Drop
    } else {
        return Err(CliError::invalid(
            "give one action: --republish, --forward-tcp, --forward-udp, --forward-http or --drop",
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

/// The webhook of `route add --forward-http URL`: the flags given, the
/// defaults for the rest, checked here so that a typo is answered before
/// anything is sent.
fn webhook_of(url: &str, args: &RouteAddArgs) -> CliResult<Webhook> {
    let w = &args.webhook;
    let mut config = WebhookConfig::new(url);
    config.batch_max = w.batch_max.unwrap_or(config.batch_max);
    config.batch_wait = w.batch_wait.unwrap_or(config.batch_wait);
    config.queue_bytes = args.queue_bytes.unwrap_or(config.queue_bytes);
    config.queue_messages = w.queue_messages.unwrap_or(config.queue_messages);
    config.connections = w.connections.unwrap_or(config.connections);
    config.timeout = w.timeout.unwrap_or(config.timeout);
    config.max_retries = w.max_retries.unwrap_or(config.max_retries);
    config
        .validate()
        .map_err(|e| CliError::invalid(format!("--forward-http: {e}")))?;
    Ok(Webhook::from(&config))
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
    fn forward_http_takes_its_options_and_defaults() {
        let r = route(&["--forward-http", "http://127.0.0.1:9000/in"]).unwrap();
        assert_eq!(
            r.action,
            RouteAction::ForwardHttp(Webhook::from(&WebhookConfig::new(
                "http://127.0.0.1:9000/in"
            )))
        );
        let r = route(&[
            "--forward-http",
            "http://localhost:9000/in",
            "--batch-max",
            "10",
            "--batch-wait",
            "5ms",
            "--queue-bytes",
            "4096",
            "--queue-messages",
            "50",
            "--connections",
            "3",
            "--timeout",
            "2s",
            "--max-retries",
            "0",
        ])
        .unwrap();
        let RouteAction::ForwardHttp(w) = r.action else {
            panic!("not forward-http");
        };
        assert_eq!(
            (
                w.batch_max,
                w.batch_wait_ms,
                w.queue_bytes,
                w.queue_messages,
                w.connections,
                w.timeout_ms,
                w.max_retries
            ),
            (10, 5, 4096, 50, 3, 2000, 0)
        );
    }

    #[test]
    fn bad_forward_http_routes_are_refused_before_sending() {
        for (args, why) in [
            (
                &["--forward-http", "https://127.0.0.1/x"][..],
                "https is not supported",
            ),
            (
                &["--forward-http", "http://hooks.example/x"],
                "does not resolve names",
            ),
            (
                &["--forward-http", "http://127.0.0.1/", "--batch-max", "0"],
                "batch_max",
            ),
            (
                &["--forward-http", "http://127.0.0.1/", "--connections", "65"],
                "connections",
            ),
            (
                &["--drop", "--batch-max", "5"],
                "--batch-max is for --forward-http",
            ),
            (
                &["--forward-udp", "127.0.0.1:9", "--timeout", "1s"],
                "--timeout is for --forward-http",
            ),
        ] {
            let e = route(args).unwrap_err();
            assert_eq!(e.failure.exit_code(), 2, "{args:?}");
            assert!(e.message.contains(why), "{args:?}: {e}");
        }
        // Two actions at once are refused by the parser.
        assert!(route(&["--forward-http", "http://127.0.0.1/", "--drop"]).is_err());
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
