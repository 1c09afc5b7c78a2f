//! `shoalctl`: what operators run against Shoal.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid input (bad config,
//! bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use shoal_protocols::figures::CoreFigures;

/// Operate Shoal.
#[derive(Debug, Parser)]
#[command(name = "shoalctl", version, about)]
struct Cli {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Data-plane config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Summarise figure lines (as `shoal-dataplane` prints them every
    /// --stats-interval) read from standard input: the last line per core.
    Figures,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file and list its listeners and routes.
    Check { file: PathBuf },
    /// Print the embedded default config.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{EMBEDDED_DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(&file, cli.output),
        Command::Figures => figures(cli.output),
    }
}

fn check(file: &PathBuf, output: Output) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shoalctl: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let config = match DataPlaneConfig::from_toml(&text).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoalctl: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match output {
        Output::Json => {
            let listeners: Vec<_> = config
                .listeners
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "name": l.name, "protocol": l.protocol.to_string(), "bind": l.bind,
                        "max_connections": l.max_connections, "max_frame_bytes": l.max_frame_bytes,
                    })
                })
                .collect();
            let routes: Vec<_> = config
                .routes
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "filter": r.filter}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"valid": true, "listeners": listeners, "routes": routes})
            );
        }
        Output::Table => {
            println!(
                "{:<20} {:<6} {:<24} {:>10} {:>10}",
                "LISTENER", "PROTO", "BIND", "MAX_CONNS", "MAX_FRAME"
            );
            for l in &config.listeners {
                println!(
                    "{:<20} {:<6} {:<24} {:>10} {:>10}",
                    l.name, l.protocol, l.bind, l.max_connections, l.max_frame_bytes
                );
            }
            println!();
            println!("{:<20} {:<30}", "ROUTE", "FILTER");
            for r in &config.routes {
                println!("{:<20} {:<30}", r.name, r.filter);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Parses `key=value` figure lines; the last line of each core wins.
fn figures(output: Output) -> ExitCode {
    let mut latest: std::collections::BTreeMap<u16, Vec<(String, String)>> = Default::default();
    for line in std::io::stdin().lines().map_while(Result::ok) {
        let Some(start) = line.find("core=") else {
            continue;
        };
        let fields: Vec<(String, String)> = line[start..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let Some(core) = fields
            .iter()
            .find(|(k, _)| k == "core")
            .and_then(|(_, v)| v.parse().ok())
        else {
            continue;
        };
        latest.insert(core, fields);
    }
    if latest.is_empty() {
        eprintln!("shoalctl: no figure lines on standard input (run shoal-dataplane with --stats-interval)");
        return ExitCode::from(2);
    }
    match output {
        Output::Json => {
            let all: Vec<_> = latest
                .values()
                .map(|f| {
                    serde_json::Value::Object(
                        f.iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect(),
                    )
                })
                .collect();
            println!("{}", serde_json::Value::Array(all));
        }
        Output::Table => {
            let cols = [
                "core",
                "conns",
                "msgs_in",
                "msgs_out",
                "bytes_in",
                "bytes_out",
                "outbound_drops",
                "mesh_drops",
            ];
            println!("{}", cols.map(|c| format!("{c:>14}")).join(""));
            for fields in latest.values() {
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(x, _)| x == k)
                        .map_or("-", |(_, v)| v.as_str())
                        .to_owned()
                };
                println!("{}", cols.map(|c| format!("{:>14}", get(c))).join(""));
            }
        }
    }
    let _ = CoreFigures::default();
    ExitCode::SUCCESS
}
