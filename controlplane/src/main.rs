//! `shoal-controlplane`: keeps the desired state of the data planes and
//! pushes it to them.
//!
//! `run` is the daemon. It owns the desired state (listeners, products,
//! devices, routes, streams) in a redb database, serves shoalctl on
//! `control.sock` and data planes on `dataplane.sock`. Invariant: a change
//! is stored only once every connected data plane ACKed it, and it is
//! stored durably before shoalctl hears that it succeeded; a refused change
//! leaves nothing behind (the planes that took it take it back).
//!
//! ```text
//! shoalctl ── Apply ──▶ validate ──▶ Delta{v+1} to every data plane ──▶ all ACK?
//!                                                   yes: commit v+1, answer Applied
//!                                                   no:  undo on the ACKers (v+2), answer the error
//! ```
//!
//! `check FILE` validates a data-plane config file with exactly the data
//! plane's rules; `default` prints the embedded default config.

mod daemon;
mod diff;
mod handshake;
mod planes;
mod service;
mod session;
mod state;
mod store;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use tracing_subscriber::EnvFilter;

/// Shoal's control plane.
#[derive(Debug, Parser)]
#[command(name = "shoal-controlplane", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a data-plane config file; exit 0 when valid, 2 when not.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the data plane's embedded default config.
    Default,
    /// Run the control plane daemon.
    #[command(long_about = RUN_LONG_ABOUT)]
    Run(RunArgs),
}

const RUN_LONG_ABOUT: &str = "\
Run the control plane daemon.

It keeps the desired state (listeners, products, devices, routes, streams) in \
STATE_DIR/desired.redb, serves shoalctl on SOCKET_DIR/control.sock and data \
planes on SOCKET_DIR/dataplane.sock (both mode 0660). A change is stored only \
once every connected data plane ACKed it; with no data plane connected it is \
stored and sent with the snapshot a data plane gets when it connects.

Access: every connection is checked with SO_PEERCRED. Root, the daemon's own \
user, every --allow-uid and every member of an --allow-gid group may connect; \
others are refused with the reason.

`shoalctl get devices` lists at most the first 100,000 devices by id (a \
million devices would not fit in one control frame); get one device by id to \
see any other.

Logs go to stderr (RUST_LOG, default info). `shoal-controlplane ready` is \
logged, and READY=1 sent to systemd, once both sockets listen. SIGTERM or \
SIGINT stops it.";

#[derive(Debug, Args)]
struct RunArgs {
    /// Directory of the desired-state database (desired.redb); created if
    /// missing.
    #[arg(
        long,
        env = "SHOAL_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/shoal/controlplane"
    )]
    state_dir: PathBuf,
    /// Directory of control.sock and dataplane.sock; created if missing.
    #[arg(
        long,
        env = "SHOAL_SOCKET_DIR",
        value_name = "DIR",
        default_value = "/run/shoal"
    )]
    socket_dir: PathBuf,
    /// Node id in hellos and logs [default: the host name].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Also allow this user id on the sockets (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Also allow members of this group id on the sockets (repeatable);
    /// the daemon's own group is always allowed.
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gid: Vec<u32>,
    /// How long a change waits for the data planes' answers.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    ack_timeout: Duration,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Default => {
            print!("{EMBEDDED_DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Check { file } => check(&file),
        Command::Run(args) => {
            init_logging();
            let settings = daemon::RunSettings {
                state_dir: args.state_dir,
                socket_dir: args.socket_dir,
                node: args.node.unwrap_or_else(daemon::host_name),
                allow_uids: args.allow_uid,
                allow_gids: args.allow_gid,
                ack_timeout: args.ack_timeout,
            };
            match daemon::run(settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shoal-controlplane: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn check(file: &PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shoal-controlplane: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match DataPlaneConfig::from_toml(&text).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => {
            println!(
                "{}: ok ({} listeners, {} routes)",
                file.display(),
                c.listeners.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}
