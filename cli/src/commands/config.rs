//! `config check FILE` and `config default`: data-plane config files,
//! checked locally with exactly the data plane's rules.

use std::io::Write;
use std::path::Path;

use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};

use crate::args::OutputFormat;
use crate::error::{CliError, CliResult};
use crate::table::Table;

/// Prints the embedded default config.
pub(crate) fn default(out: &mut dyn Write) -> CliResult {
    out.write_all(EMBEDDED_DEFAULT_TOML.as_bytes())?;
    Ok(())
}

/// Validates `file` and lists its listeners and routes.
pub(crate) fn check(file: &Path, format: OutputFormat, out: &mut dyn Write) -> CliResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::invalid(format!("cannot read {}: {e}", file.display())))?;
    let config = DataPlaneConfig::from_toml(&text)
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| CliError::invalid(format!("{}: {e}", file.display())))?;
    let relying = shoal_protocols::config::listeners_relying_on_default_auth(&text);
    if let Some(warning) = shoal_protocols::config::default_auth_warning(&relying) {
        eprintln!("shoalctl: warning: {}: {warning}", file.display());
    }
    match format {
        OutputFormat::Json => {
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
            writeln!(
                out,
                "{}",
                serde_json::json!({"valid": true, "listeners": listeners, "routes": routes})
            )?;
        }
        OutputFormat::Table => {
            let mut listeners =
                Table::new(&["LISTENER", "PROTO", "BIND", "MAX_CONNS", "MAX_FRAME"]);
            for l in &config.listeners {
                listeners.row(vec![
                    l.name.clone(),
                    l.protocol.to_string(),
                    l.bind.clone(),
                    l.max_connections.to_string(),
                    l.max_frame_bytes.to_string(),
                ]);
            }
            listeners.write_to(out)?;
            writeln!(out)?;
            let mut routes = Table::new(&["ROUTE", "FILTER"]);
            for r in &config.routes {
                routes.row(vec![r.name.clone(), r.filter.clone()]);
            }
            routes.write_to(out)?;
        }
    }
    Ok(())
}
