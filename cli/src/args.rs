//! The command line, as clap derives it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::spec::{parse_framing, parse_identity, FramingSpec};
use shoal_protocols::control::Identity;

/// The long help's text after the command list.
const LONG_ABOUT: &str = "\
Operate Shoal: talks to the control plane over its Unix socket.

The socket is --socket PATH, else $SHOAL_SOCKET, else ./.shoal/control.sock
when it exists (what `shoalctl up` starts), else /run/shoal/control.sock.

Tables by default; -o json prints JSON for scripts. Errors go to standard
error as `shoalctl: <message>`.

Exit codes:
  0  success
  1  failure: the control plane is unreachable, a data plane refused the
     change or did not answer in time, or an internal error
  2  invalid input: bad arguments, a bad file, or a change the control
     plane refused as invalid
  3  not found: the resource does not exist";

/// Operate Shoal.
#[derive(Debug, Parser)]
#[command(
    name = "shoalctl",
    version,
    about = "Operate Shoal: listeners, products, devices, routes, streams, status and figures",
    long_about = LONG_ABOUT,
    after_help = "Example:\n  shoalctl up            # start a local control plane and data plane\n  shoalctl status        # in another terminal"
)]
pub(crate) struct Cli {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub(crate) output: OutputFormat,
    /// The control plane's socket (default: $SHOAL_SOCKET, ./.shoal/control.sock if it
    /// exists, /run/shoal/control.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned columns with a header row.
    Table,
    /// JSON for scripts.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The control plane, the data planes, and every core's connections,
    /// messages and pools.
    #[command(
        after_help = "Example:\n  shoalctl status\n  shoalctl -o json status | jq .data_planes"
    )]
    Status,
    /// Make the desired state match a TOML file (listeners, products,
    /// devices, routes, streams).
    #[command(
        after_help = "Example:\n  shoalctl apply -f shoal.toml --dry-run\n  shoalctl apply -f shoal.toml --prune"
    )]
    Apply(ApplyArgs),
    /// List resources of a kind, or show one.
    #[command(after_help = "Example:\n  shoalctl get listeners\n  shoalctl get device meter-1")]
    Get(GetArgs),
    /// Add, change or remove device listeners.
    #[command(subcommand)]
    Listener(ListenerCommand),
    /// Add or remove products (kinds of devices).
    #[command(subcommand)]
    Product(ProductCommand),
    /// Add, remove, import and disconnect devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Add or remove routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Add or remove live-stream rules; list live streams, end a
    /// publisher.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Live figures of every core: connections, messages, bytes, drops,
    /// pools, latency.
    #[command(after_help = "Example:\n  shoalctl stats\n  shoalctl stats --watch --interval 2s")]
    Stats(StatsArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  shoalctl completions bash > /etc/bash_completion.d/shoalctl\n  shoalctl completions zsh > \"${fpath[1]}/_shoalctl\""
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Start a control plane and a data plane in the foreground, in DIR
    /// (Ctrl-C stops both).
    #[command(after_help = "Example:\n  shoalctl up\n  shoalctl up --dir /tmp/shoal --cores 2")]
    Up(UpArgs),
    /// Data-plane config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Summarise figure lines (as `shoal-dataplane` prints them every
    /// --stats-interval) read from standard input: the last line per core.
    #[command(after_help = "Example:\n  journalctl -u shoal-dataplane | shoalctl figures")]
    Figures,
}

/// `apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The desired-state TOML file (`-`: standard input).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Only say what would change.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also remove the resources of every kind in the file that the file
    /// does not list.
    #[arg(long)]
    pub(crate) prune: bool,
}

/// `get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// listener(s), product(s), device(s), route(s) or stream(s).
    pub(crate) kind: String,
    /// One resource (a device's id).
    pub(crate) name: Option<String>,
}

/// `listener ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ListenerCommand {
    /// Add a listener, or replace the one with this name.
    #[command(
        after_help = "Framing: length:2 (2-byte big-endian length), length:4:le, \
                      length:2:offset=N:adjust=N:strip=N, line, delimiter:TEXT (escapes \\n \\r \\t \\0 \\xHH), \
                      line-keep, delimiter-keep:TEXT, fixed:N, none.\n\n\
                      Example:\n  shoalctl listener add meters --protocol tcp --bind 0.0.0.0:7100 --framing line\n  \
                      shoalctl listener add probes --protocol udp --bind 0.0.0.0:7101 --identity payload-prefix:8"
    )]
    Add(ListenerAddArgs),
    /// Remove a listener (its connections drain).
    #[command(after_help = "Example:\n  shoalctl listener rm meters")]
    Rm {
        /// Its name.
        name: String,
    },
}

/// `listener add`.
#[derive(Debug, Args)]
pub(crate) struct ListenerAddArgs {
    /// Unique name.
    pub(crate) name: String,
    /// Transport.
    #[arg(long, value_enum)]
    pub(crate) protocol: ProtocolArg,
    /// `ip:port` to bind on every core.
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: String,
    /// How the byte stream is cut into frames (tcp default: length:2; udp
    /// default: none).
    #[arg(long, value_name = "SPEC", value_parser = parse_framing)]
    pub(crate) framing: Option<FramingSpec>,
    /// How a device is known: login-frame, peer-address or payload-prefix:N
    /// (tcp default: login-frame; udp default: peer-address).
    #[arg(long, value_name = "RULE", value_parser = parse_identity)]
    pub(crate) identity: Option<Identity>,
    /// What a device must show (default: device-secret; raw udp listeners,
    /// and tcp ones whose identity is not the login frame, cannot check a
    /// secret and need --auth none).
    #[arg(long, value_enum)]
    pub(crate) auth: Option<AuthArg>,
    /// Open connections (udp: sessions) before new ones are refused.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub(crate) max_connections: u32,
    /// Largest frame or datagram accepted.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub(crate) max_frame_bytes: u32,
    /// Silence after which a connection or session is closed.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Duration,
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProtocolArg {
    /// Raw TCP with framing.
    Tcp,
    /// Raw UDP.
    Udp,
    /// MQTT 3.1.1 and 5.0 (with auth device-secret: user name = device id,
    /// password = secret).
    Mqtt,
    /// HTTP/1.1: the device API at /v1/devices/{id}/messages (with auth
    /// device-secret: Bearer or Basic credentials), /metrics, /healthz,
    /// /readyz; MQTT over WebSocket at /mqtt; live streams as HTTP-FLV and
    /// WebSocket-FLV at /{app}/{name}.flv.
    Http,
    /// RTMP: live streams published and played (with auth device-secret,
    /// only streams a stream rule covers).
    Rtmp,
    /// CoAP over UDP: POST /devices/{id}/up[/{subtopic}] publishes, GET
    /// /devices/{id}/down with Observe follows the downlink (with auth
    /// device-secret: a `secret=` Uri-Query).
    Coap,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuthArg {
    /// Any device id is taken as given.
    None,
    /// The device's id and secret are checked against the registry (tcp:
    /// login frame `{id}:{secret}`; mqtt: user name and password).
    DeviceSecret,
}

/// `product ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ProductCommand {
    /// Add a product, or replace the one with this name.
    #[command(
        after_help = "Example:\n  shoalctl product add meter --description 'power meters' \\\n    --publish 'devices/{device}/up/#' --subscribe 'devices/{device}/down/#'"
    )]
    Add {
        /// Unique name.
        name: String,
        /// Free text for people.
        #[arg(long, default_value = "")]
        description: String,
        /// A topic filter its devices may publish to (`{device}`: the
        /// device's id); repeat for more.
        #[arg(long, value_name = "FILTER")]
        publish: Vec<String>,
        /// A topic filter its devices may subscribe to; repeat for more.
        #[arg(long, value_name = "FILTER")]
        subscribe: Vec<String>,
    },
    /// Remove a product (no device may use it).
    #[command(after_help = "Example:\n  shoalctl product rm meter")]
    Rm {
        /// Its name.
        name: String,
    },
}

/// `device ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Add a device, or replace the one with this id. Without --secret a
    /// random one is made and printed once.
    #[command(after_help = "Example:\n  shoalctl device add meter-1 --product meter")]
    Add {
        /// Unique id.
        id: String,
        /// Its product.
        #[arg(long)]
        product: String,
        /// Its secret (8..=256 printable ASCII characters, no ':'); only
        /// its digest is sent.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Remove a device (its connections are closed).
    #[command(after_help = "Example:\n  shoalctl device rm meter-1")]
    Rm {
        /// Its id.
        id: String,
    },
    /// Close a device's connections on every data plane.
    #[command(after_help = "Example:\n  shoalctl device kick meter-1")]
    Kick {
        /// Its id.
        id: String,
    },
    /// Import devices from a CSV file: `id,product,secret` or
    /// `id,product,digest=<32 hex digits>` per line.
    #[command(
        after_help = "Lines: `id,product,secret` or `id,product,digest=<32 hex>`; an optional first \
                      line starting with `id,` is a header; blank lines and lines starting with # \
                      are skipped; fields may not contain commas. The whole file is checked before \
                      anything is sent.\n\nExample:\n  shoalctl device import fleet.csv --batch 20000"
    )]
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Devices per request.
        #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
    },
}

/// `route ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RouteCommand {
    /// Add a route (after the existing ones), or replace the one with this
    /// name (it keeps its place).
    #[command(
        after_help = "Example:\n  shoalctl route add to-lamp --filter 'devices/+/up' --listener udp-default --republish devices/lamp/down\n  \
                      shoalctl route add north --filter 'devices/#' --forward-tcp 10.0.0.5:9000 --framing line\n  \
                      shoalctl route add hook --filter 'devices/+/up/#' --forward-http http://127.0.0.1:9000/ingest --batch-max 100 --batch-wait 20ms"
    )]
    Add(Box<RouteAddArgs>),
    /// Remove a route.
    #[command(after_help = "Example:\n  shoalctl route rm to-lamp")]
    Rm {
        /// Its name.
        name: String,
    },
}

/// `route add`.
#[derive(Debug, Args)]
pub(crate) struct RouteAddArgs {
    /// Unique name.
    pub(crate) name: String,
    /// Topic filter a message must match.
    #[arg(long)]
    pub(crate) filter: String,
    /// Only messages that arrived on this listener.
    #[arg(long)]
    pub(crate) listener: Option<String>,
    /// Only messages from this device.
    #[arg(long)]
    pub(crate) device: Option<String>,
    /// What the route does.
    #[command(flatten)]
    pub(crate) action: RouteActionArgs,
    /// Framing of the TCP upstream (with --forward-tcp; default length:2).
    #[arg(long, value_name = "SPEC", value_parser = parse_framing)]
    pub(crate) framing: Option<FramingSpec>,
    /// Bytes queued per core for the upstream before messages are dropped
    /// (with --forward-tcp or --forward-http; default 1048576).
    #[arg(long, value_name = "N")]
    pub(crate) queue_bytes: Option<u32>,
    /// Webhook options (with --forward-http).
    #[command(flatten)]
    pub(crate) webhook: WebhookArgs,
}

/// Options of `route add --forward-http`; unset ones take the defaults of
/// `forward_http` routes.
#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// Most messages in one POST (default 100).
    #[arg(long, value_name = "N")]
    pub(crate) batch_max: Option<u32>,
    /// How long a batch waits for more messages after its first (default
    /// 20ms).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub(crate) batch_wait: Option<Duration>,
    /// Messages queued per core before messages are dropped (default
    /// 10000).
    #[arg(long, value_name = "N")]
    pub(crate) queue_messages: Option<u32>,
    /// Keep-alive connections per core (default 2).
    #[arg(long, value_name = "N")]
    pub(crate) connections: Option<u16>,
    /// Time one attempt has to connect, send and get its answer (default
    /// 5s).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Attempts after the first for a batch answered 5xx, 408 or 429 or
    /// met with a timeout or connection trouble (default 3).
    #[arg(long, value_name = "N")]
    pub(crate) max_retries: Option<u32>,
}

impl WebhookArgs {
    /// The flags given, by name.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        for (set, name) in [
            (self.batch_max.is_some(), "--batch-max"),
            (self.batch_wait.is_some(), "--batch-wait"),
            (self.queue_messages.is_some(), "--queue-messages"),
            (self.connections.is_some(), "--connections"),
            (self.timeout.is_some(), "--timeout"),
            (self.max_retries.is_some(), "--max-retries"),
        ] {
            if set {
                given.push(name);
            }
        }
        given
    }
}

/// Exactly one action of `route add`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RouteActionArgs {
    /// Publish a copy on this topic template ({device}, {listener},
    /// {topic}, {1}..{9}).
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) republish: Option<String>,
    /// Send the payload, framed, to this TCP upstream.
    #[arg(long, value_name = "ADDR")]
    pub(crate) forward_tcp: Option<String>,
    /// Send the payload as a datagram to this UDP upstream.
    #[arg(long, value_name = "ADDR")]
    pub(crate) forward_udp: Option<String>,
    /// POST messages in JSON batches to this webhook
    /// (`http://host[:port]/path`; host an IP address or localhost; no
    /// https).
    #[arg(long, value_name = "URL")]
    pub(crate) forward_http: Option<String>,
    /// Stop the message.
    #[arg(long)]
    pub(crate) drop: bool,
}

/// `stream ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum StreamCommand {
    /// Add rules for a stream (`app/name`) or an app's streams (`app/*`),
    /// or replace them.
    #[command(after_help = "Example:\n  shoalctl stream add 'live/*' --publish-key studio-key")]
    Add {
        /// `app/name` or `app/*`.
        name: String,
        /// Key a publisher must give (`?key=`); without it anyone may
        /// publish.
        #[arg(long, value_name = "KEY")]
        publish_key: Option<String>,
        /// Viewers may not play it.
        #[arg(long)]
        no_play: bool,
    },
    /// Remove a stream's rules.
    #[command(after_help = "Example:\n  shoalctl stream rm 'live/*'")]
    Rm {
        /// Its name.
        name: String,
    },
    /// List the live streams of every connected data plane: publisher,
    /// uptime, codecs, size, bit rate, viewers (total and per core),
    /// skipped tags, slow viewers disconnected.
    #[command(
        after_help = "Example:\n  shoalctl stream list\n  shoalctl -o json stream list | jq '.[].viewers'"
    )]
    List,
    /// End a live stream's publisher (its RTMP connection closes) on
    /// whichever data plane and core it publishes to.
    #[command(after_help = "Example:\n  shoalctl stream kick live/cam1")]
    Kick {
        /// The stream, `app/name`.
        name: String,
    },
}

/// `stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Redraw every interval until Ctrl-C, with per-second rates.
    #[arg(short, long)]
    pub(crate) watch: bool,
    /// Time between samples with --watch.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_interval)]
    pub(crate) interval: Duration,
}

/// `up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where the sockets and both planes' state live.
    #[arg(long, value_name = "DIR", default_value = "./.shoal")]
    pub(crate) dir: PathBuf,
    /// Data-plane cores (default: every CPU).
    #[arg(long, value_name = "N")]
    pub(crate) cores: Option<u16>,
}

/// `completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `config ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a config file and list its listeners and routes.
    #[command(after_help = "Example:\n  shoalctl config check /etc/shoal/dataplane.toml")]
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the embedded default config.
    #[command(after_help = "Example:\n  shoalctl config default > shoal.toml")]
    Default,
}

/// A `--interval`: a duration of at least 100 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.has_subcommands() {
                for sub in cmd.get_subcommands() {
                    if sub.get_name() != "help" {
                        walk(sub, &path);
                    }
                }
            } else {
                let help = cmd
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(help.contains("Example:"), "{path} has no example");
            }
        }
        walk(&Cli::command(), "");
    }

    #[test]
    fn route_add_takes_exactly_one_action() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["shoalctl", "route", "add", "r", "--filter", "a/#"]
                    .iter()
                    .chain(args),
            )
        };
        assert!(parse(&["--drop"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--drop", "--republish", "x"]).is_err());
        assert!(parse(&["--forward-tcp", "127.0.0.1:9", "--framing", "line"]).is_ok());
    }

    #[test]
    fn stream_list_and_kick_parse() {
        let cli = Cli::try_parse_from(["shoalctl", "stream", "list", "-o", "json"]).unwrap();
        assert!(matches!(cli.command, Command::Stream(StreamCommand::List)));
        assert_eq!(cli.output, OutputFormat::Json);
        let cli = Cli::try_parse_from(["shoalctl", "stream", "kick", "live/cam"]).unwrap();
        let Command::Stream(StreamCommand::Kick { name }) = cli.command else {
            panic!("not stream kick");
        };
        assert_eq!(name, "live/cam");
        assert!(Cli::try_parse_from(["shoalctl", "stream", "kick"]).is_err());
        assert!(Cli::try_parse_from(["shoalctl", "stream", "list", "extra"]).is_err());
    }

    #[test]
    fn listener_add_parses_specs_and_defaults() {
        let cli = Cli::try_parse_from([
            "shoalctl",
            "listener",
            "add",
            "m",
            "--protocol",
            "udp",
            "--bind",
            "127.0.0.1:7101",
            "--identity",
            "payload-prefix:4",
            "--framing",
            "none",
        ])
        .unwrap();
        let Command::Listener(ListenerCommand::Add(a)) = cli.command else {
            panic!("not listener add");
        };
        assert_eq!(a.protocol, ProtocolArg::Udp);
        assert_eq!(a.framing, Some(None));
        assert_eq!(a.identity, Some(Identity::PayloadPrefix { bytes: 4 }));
        assert_eq!(a.max_connections, 100_000);
        assert_eq!(a.max_frame_bytes, 4096);
        assert_eq!(a.idle_timeout, Duration::from_secs(300));
        assert_eq!(a.auth, None);
        assert!(Cli::try_parse_from([
            "shoalctl",
            "listener",
            "add",
            "m",
            "--protocol",
            "tcp",
            "--bind",
            "x",
            "--framing",
            "length:3"
        ])
        .is_err());
    }
}
