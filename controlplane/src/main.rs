//! `shoal-controlplane`: keeps the desired state of the data planes.
//!
//! This first version validates desired-state documents with exactly the
//! rules the data plane applies, so a config can be checked before it is
//! deployed. The state store and the push to data planes build on it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};

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
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Default => {
            print!("{EMBEDDED_DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Check { file } => {
            let text = match std::fs::read_to_string(&file) {
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
    }
}
