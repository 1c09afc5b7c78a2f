//! `device import FILE.csv [--batch N]`: checks the whole file, then sends
//! it in batches of upserts.
//!
//! The file is read twice, streaming, and never held in memory: the first
//! pass checks every line (and refuses the file with `FILE:LINE: reason`
//! before anything is sent), the second builds one batch at a time.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_protocols::control::{Change, DiffOp, Resource, ResourceKind};

use crate::args::OutputFormat;
use crate::client::ControlClient;
use crate::commands::{get, send_apply};
use crate::device_csv::{check_file, parse_line, read_line, CsvLine};
use crate::error::{CliError, CliResult};
use crate::human;

/// Bytes of the read buffer.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How often the progress line is redrawn at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImportSummary {
    /// Devices sent and accepted.
    pub(crate) devices: u64,
    /// Of those, new ones.
    pub(crate) added: u64,
    /// Of those, replaced ones.
    pub(crate) changed: u64,
    /// Desired-state version after the last batch.
    pub(crate) version: u64,
    /// Whether some batch was stored with no data plane connected.
    pub(crate) pending: bool,
    /// Data planes that acknowledged the last batch.
    pub(crate) acked_by: Vec<String>,
}

fn open(file: &Path) -> CliResult<BufReader<File>> {
    File::open(file)
        .map(|f| BufReader::with_capacity(READ_BUFFER_BYTES, f))
        .map_err(|e| CliError::invalid(format!("cannot read {}: {e}", file.display())))
}

/// Line `n` (1-based) of `file`, read again.
fn line_of(file: &Path, n: u64) -> std::io::Result<Option<String>> {
    let mut reader = BufReader::new(File::open(file)?);
    let mut buf = String::new();
    for _ in 0..n {
        if !read_line(&mut reader, &mut buf)? {
            return Ok(None);
        }
    }
    Ok(Some(buf))
}

/// Runs the import and prints the summary.
pub(crate) fn run(
    client: &mut ControlClient,
    file: &Path,
    batch: u32,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let name = file.display().to_string();
    let started = Instant::now();
    let products: HashSet<String> = get::fetch(client, ResourceKind::Product, None)?
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    let total = check_file(&mut open(file)?, &products, &mut |n| line_of(file, n)).map_err(
        |e| match e.line {
            0 => CliError::invalid(format!("{name}: {}", e.reason)),
            line => CliError::invalid(format!("{name}:{line}: {}", e.reason)),
        },
    )?;
    let mut progress = Progress::new(total, started);
    let summary = send_batches(client, &mut open(file)?, &name, batch, &mut progress)?;
    progress.finish();
    let elapsed = started.elapsed();
    print_summary(&summary, &name, elapsed, format, out)
}

/// Sends the checked file in batches of `batch` upserts.
pub(crate) fn send_batches(
    client: &mut ControlClient,
    reader: &mut dyn BufRead,
    name: &str,
    batch: u32,
    progress: &mut Progress,
) -> CliResult<ImportSummary> {
    let batch = batch.max(1) as usize;
    let mut summary = ImportSummary::default();
    let mut changes: Vec<Change> = Vec::with_capacity(batch);
    let mut buf = String::new();
    let mut line_no = 0u64;
    let mut first_line_of_batch = 1u64;
    let mut header_allowed = true;
    let mut batch_no = 0u64;
    loop {
        let more = read_line(reader, &mut buf)
            .map_err(|e| CliError::runtime(format!("{name}:{}: cannot read: {e}", line_no + 1)))?;
        if more {
            line_no += 1;
            let parsed = parse_line(&buf, header_allowed).map_err(|e| {
                CliError::runtime(format!(
                    "{name}:{line_no}: {e} (the file changed while it was imported; {} devices \
                     were imported and stay imported)",
                    summary.devices
                ))
            })?;
            match parsed {
                CsvLine::Skip => continue,
                CsvLine::Header => {
                    header_allowed = false;
                    continue;
                }
                CsvLine::Device(d) => {
                    header_allowed = false;
                    if changes.is_empty() {
                        first_line_of_batch = line_no;
                    }
                    changes.push(Change::Upsert(Resource::Device(d.to_device())));
                }
            }
        }
        if changes.len() >= batch || (!more && !changes.is_empty()) {
            batch_no += 1;
            let sent = changes.len() as u64;
            let lines = format!("lines {first_line_of_batch}-{line_no}");
            let request = std::mem::replace(&mut changes, Vec::with_capacity(batch));
            let report = send_apply(client, request, false).map_err(|e| {
                progress.finish();
                refused_batch(e, batch_no, &lines, summary.devices)
            })?;
            summary.devices += sent;
            for d in &report.diff {
                match d.op {
                    DiffOp::Add => summary.added += 1,
                    DiffOp::Change => summary.changed += 1,
                    _ => {}
                }
            }
            summary.version = report.version;
            summary.pending |= report.pending;
            summary.acked_by = report.acked_by;
            progress.update(summary.devices);
        }
        if !more {
            return Ok(summary);
        }
    }
}

/// The error of a refused batch: what the control plane said, and that
/// the earlier batches stay.
fn refused_batch(e: CliError, batch_no: u64, lines: &str, imported_before: u64) -> CliError {
    let earlier = match imported_before {
        0 => "no device was imported".to_owned(),
        1 => "1 device from the earlier batches was imported and stays imported".to_owned(),
        n => format!("{n} devices from the earlier batches were imported and stay imported"),
    };
    CliError {
        failure: e.failure,
        message: format!(
            "batch {batch_no} ({lines}) was refused: {}\n{earlier}; fix the problem and run the \
             import again (devices already there are left as they are)",
            e.message
        ),
    }
}

fn print_summary(
    s: &ImportSummary,
    name: &str,
    elapsed: Duration,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let rate = human::per_second(s.devices, elapsed);
    let unchanged = s.devices - s.added - s.changed;
    match format {
        OutputFormat::Json => crate::view::write_json(
            out,
            &serde_json::json!({
                "file": name,
                "devices": s.devices,
                "added": s.added,
                "changed": s.changed,
                "unchanged": unchanged,
                "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                "devices_per_s": rate.round(),
                "version": s.version,
                "pending": s.pending,
                "acked_by": s.acked_by,
            }),
        )?,
        OutputFormat::Table => {
            writeln!(
                out,
                "imported {} devices from {name} in {:.1}s ({rate:.0} devices/s): {} added, {} \
                 changed, {unchanged} unchanged",
                s.devices,
                elapsed.as_secs_f64(),
                s.added,
                s.changed,
            )?;
            if s.pending {
                writeln!(
                    out,
                    "stored version {}; no data plane connected, it will get it when it connects",
                    s.version
                )?;
            } else if s.added + s.changed > 0 {
                writeln!(
                    out,
                    "applied version {} (acked by {})",
                    s.version,
                    s.acked_by.join(", ")
                )?;
            } else {
                writeln!(
                    out,
                    "no changes; desired state stays at version {}",
                    s.version
                )?;
            }
        }
    }
    Ok(())
}

/// The progress line on standard error, redrawn in place, only when
/// standard error is a terminal.
#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    total: u64,
    started: Instant,
    last_drawn: Option<Instant>,
}

impl Progress {
    /// Progress towards `total` devices.
    pub(crate) fn new(total: u64, started: Instant) -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            total,
            started,
            last_drawn: None,
        }
    }

    fn update(&mut self, sent: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_drawn
            .is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY)
            && sent < self.total
        {
            return;
        }
        self.last_drawn = Some(now);
        let rate = human::per_second(sent, now.duration_since(self.started));
        eprint!(
            "\r\x1b[Ksent {sent} of {} devices ({rate:.0}/s)",
            self.total
        );
    }

    /// Clears the line.
    fn finish(&mut self) {
        if self.enabled && self.last_drawn.take().is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
