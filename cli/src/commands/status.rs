//! `status`: the control plane, each data plane, and each core.

use std::io::Write;

use shoal_protocols::control::{CliRequest, CliResponse, DataPlaneStatus, StatusReport};

use crate::args::OutputFormat;
use crate::client::{unexpected, ControlClient};
use crate::error::CliResult;
use crate::human;
use crate::table::Table;
use crate::view;

/// Asks for the status and prints it.
pub(crate) fn run(
    client: &mut ControlClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let report = fetch(client)?;
    match format {
        OutputFormat::Json => view::write_json(out, &view::status(&report))?,
        OutputFormat::Table => print_tables(&report, out)?,
    }
    Ok(())
}

/// The status report.
pub(crate) fn fetch(client: &mut ControlClient) -> CliResult<StatusReport> {
    match client.call(&CliRequest::Status)? {
        CliResponse::Status(report) => Ok(report),
        other => Err(unexpected("a status report", &other)),
    }
}

/// Three tables: the control plane, the data planes, their cores.
fn print_tables(report: &StatusReport, out: &mut dyn Write) -> CliResult {
    writeln!(out, "control plane")?;
    let mut header = vec!["NODE", "RELEASE", "UPTIME", "VERSION"];
    let kinds: Vec<String> = report
        .counts
        .iter()
        .map(|(kind, _)| format!("{}S", kind.as_str().to_uppercase()))
        .collect();
    header.extend(kinds.iter().map(String::as_str));
    let mut cp = Table::new(&header);
    let mut row = vec![
        report.node.clone(),
        report.software_version.clone(),
        human::compact_duration_ms(report.uptime_ms),
        report.desired_version.to_string(),
    ];
    row.extend(report.counts.iter().map(|(_, n)| n.to_string()));
    cp.row(row);
    cp.write_to(out)?;
    writeln!(out)?;

    writeln!(out, "data planes")?;
    if report.data_planes.is_empty() {
        writeln!(
            out,
            "none has connected since the control plane started \
             (start one: shoal-dataplane --control <socket dir>/dataplane.sock)"
        )?;
        return Ok(());
    }
    let mut planes = Table::new(&[
        "NODE",
        "STATE",
        "RELEASE",
        "APPLIED",
        "CORES",
        "RSS",
        "DEVICES",
        "FIGURES_AGE",
        "LAST_ERROR",
    ]);
    for p in &report.data_planes {
        planes.row(vec![
            p.node.clone(),
            if p.connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_owned(),
            p.software_version.clone(),
            p.applied_version.to_string(),
            p.cores.to_string(),
            human::bytes(p.figures.rss_bytes),
            p.figures.registry_devices.to_string(),
            human::age_ms(p.figures_age_ms),
            p.last_error.clone().unwrap_or_default(),
        ]);
    }
    planes.write_to(out)?;
    writeln!(out)?;

    writeln!(out, "cores")?;
    core_table(&report.data_planes).write_to(out)?;
    Ok(())
}

/// One row per core of every data plane; pools as `in_use/capacity`, one
/// column per buffer size.
fn core_table(planes: &[DataPlaneStatus]) -> Table {
    let mut sizes: Vec<u32> = planes
        .iter()
        .flat_map(|p| &p.figures.cores)
        .flat_map(|c| c.pools.iter().map(|pool| pool.buffer_bytes))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut header: Vec<String> = ["NODE", "CORE", "CONNS", "MSGS_IN", "MSGS_OUT"]
        .map(String::from)
        .to_vec();
    header.extend(sizes.iter().map(|s| format!("POOL{s}")));
    let mut table = Table::new(&header);
    for p in planes {
        for c in &p.figures.cores {
            let mut row = vec![
                p.node.clone(),
                c.core.to_string(),
                c.connections.to_string(),
                c.messages_in.to_string(),
                c.messages_out.to_string(),
            ];
            row.extend(sizes.iter().map(|size| {
                c.pools
                    .iter()
                    .find(|pool| pool.buffer_bytes == *size)
                    .map(|pool| format!("{}/{}", pool.in_use, pool.capacity))
                    .unwrap_or_default()
            }));
            table.row(row);
        }
    }
    table
}
