//! `shoalctl`: what operators run against Shoal.
//!
//! It talks only to the control plane, over its Unix socket (`--socket`,
//! else `$SHOAL_SOCKET`, else `./.shoal/control.sock` when it exists, else
//! `/run/shoal/control.sock`), with the control protocol of
//! `shoal_protocols::control`: a hello, then one request and one answer at
//! a time.
//!
//! ```text
//! parse arguments ─▶ resolve the socket ─▶ connect + Hello{Cli} ─▶ Welcome (version checked)
//!   ─▶ CliRequest ─▶ CliResponse ─▶ table (default) or JSON (-o json) on stdout
//!   errors ─▶ stderr `shoalctl: <message>`, exit code by class
//! ```
//!
//! Exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: the control plane is unreachable, a data plane refused the change or did not answer in time, an internal error |
//! | 2 | invalid input: bad arguments, a bad file, or a change the control plane refused as invalid |
//! | 3 | not found: the resource does not exist |
//!
//! The JSON shapes are described in [`view`]. `config` and `figures` work
//! without a control plane; `up` starts one (and a data plane) in the
//! foreground.

mod args;
mod client;
mod commands;
mod device_csv;
mod error;
mod human;
mod secret_gen;
mod socket;
mod spec;
mod table;
mod up;
mod view;

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod fake_plane;
#[cfg(test)]
mod testdir;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use shoal_protocols::control::{Product, Stream};

use args::{
    Cli, Command, ConfigCommand, DeviceCommand, ListenerCommand, ProductCommand, RouteCommand,
    StreamCommand,
};
use client::ControlClient;
use commands::{
    apply, completions, config, device, figures, get, import, listener, product, route, stats,
    status, stream,
};
use error::{CliError, CliResult};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(cli, &mut out).and_then(|()| out.flush().map_err(CliError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

/// Runs one command, writing its output to `out`.
fn run(cli: Cli, out: &mut dyn Write) -> CliResult {
    let format = cli.output;
    let connect = || ControlClient::connect(&socket::resolve_for_process(cli.socket.as_deref()));
    match cli.command {
        Command::Config(ConfigCommand::Default) => config::default(out),
        Command::Config(ConfigCommand::Check { file }) => config::check(&file, format, out),
        Command::Figures => figures::run(&mut std::io::stdin().lock(), format, out),
        Command::Completions { shell } => completions::run(shell, out),
        Command::Up(args) => up::run(&args),
        Command::Status => status::run(&mut connect()?, format, out),
        Command::Apply(args) => {
            // A bad file is refused before the control plane is dialed.
            let resources = apply::read_document(&args.file)?;
            apply::run(
                &mut connect()?,
                resources,
                args.dry_run,
                args.prune,
                format,
                out,
            )
        }
        Command::Get(args) => {
            get::parse_kind(&args.kind)?;
            get::run(&mut connect()?, &args.kind, args.name, format, out)
        }
        Command::Listener(ListenerCommand::Add(args)) => {
            listener::add(&mut connect()?, &args, format, out)
        }
        Command::Listener(ListenerCommand::Rm { name }) => {
            listener::rm(&mut connect()?, name, format, out)
        }
        Command::Product(ProductCommand::Add {
            name,
            description,
            publish,
            subscribe,
        }) => {
            let product = Product {
                name,
                description,
                publish,
                subscribe,
            };
            product::add(&mut connect()?, product, format, out)
        }
        Command::Product(ProductCommand::Rm { name }) => {
            product::rm(&mut connect()?, name, format, out)
        }
        Command::Device(DeviceCommand::Add {
            id,
            product,
            secret,
        }) => {
            let new_device = device::prepare(id, product, secret)?;
            device::add(&mut connect()?, new_device, format, out)
        }
        Command::Device(DeviceCommand::Rm { id }) => device::rm(&mut connect()?, id, format, out),
        Command::Device(DeviceCommand::Kick { id }) => {
            device::kick(&mut connect()?, id, format, out)
        }
        Command::Device(DeviceCommand::Import { file, batch }) => {
            import::run(&mut connect()?, &file, batch, format, out)
        }
        Command::Route(RouteCommand::Add(args)) => {
            // Argument errors are reported before the control plane is dialed.
            route::route_of(&args)?;
            route::add(&mut connect()?, &args, format, out)
        }
        Command::Route(RouteCommand::Rm { name }) => route::rm(&mut connect()?, name, format, out),
        Command::Stream(StreamCommand::Add {
            name,
            publish_key,
            no_play,
        }) => {
            let rules = Stream {
                name,
                publish_key,
                allow_play: !no_play,
            };
            stream::add(&mut connect()?, rules, format, out)
        }
        Command::Stream(StreamCommand::Rm { name }) => {
            stream::rm(&mut connect()?, name, format, out)
        }
        Command::Stream(StreamCommand::List) => stream::list(&mut connect()?, format, out),
        Command::Stream(StreamCommand::Kick { name }) => {
            // A bad name is refused before the control plane is dialed.
            stream::check_stream_name(&name)?;
            stream::kick(&mut connect()?, name, format, out)
        }
        Command::Stats(args) => {
            let stop = Arc::new(AtomicBool::new(false));
            if args.watch {
                for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                    signal_hook::flag::register(sig, Arc::clone(&stop))
                        .map_err(|e| CliError::runtime(format!("cannot catch signals: {e}")))?;
                }
            }
            let watch = args.watch.then_some(args.interval);
            stats::run(&mut connect()?, watch, &stop, format, out)
        }
    }
}
