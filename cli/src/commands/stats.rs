//! `stats [--watch] [--interval DUR]`: live figures of every core of every
//! data plane; with `--watch`, redrawn every interval with per-second
//! message rates from the difference of two samples.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_protocols::control::{CliRequest, CliResponse, DataPlaneFigures};
use shoal_protocols::figures::CoreFigures;

use crate::args::OutputFormat;
use crate::client::{unexpected, ControlClient};
use crate::error::CliResult;
use crate::human;
use crate::table::Table;
use crate::view;

/// ANSI: cursor home, clear the screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// How often a waiting watch checks for Ctrl-C.
const STOP_POLL: Duration = Duration::from_millis(50);

/// One core's message counters at one moment of the data plane's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    uptime_ms: u64,
    messages_in: u64,
    messages_out: u64,
}

/// The last two distinct samples of every core, for rates.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    samples: HashMap<(String, u16), (Option<Sample>, Sample)>,
}

impl Rates {
    /// Records the figures of a data plane.
    pub(crate) fn record(&mut self, plane: &DataPlaneFigures) {
        for c in &plane.figures.cores {
            let sample = Sample {
                uptime_ms: plane.figures.uptime_ms,
                messages_in: c.messages_in,
                messages_out: c.messages_out,
            };
            let key = (plane.node.clone(), c.core);
            match self.samples.get_mut(&key) {
                Some((previous, latest)) if sample.uptime_ms > latest.uptime_ms => {
                    *previous = Some(*latest);
                    *latest = sample;
                }
                // The same sample again: keep the rate of the last two.
                Some((_, latest)) if sample.uptime_ms == latest.uptime_ms => {}
                // First sample, or the data plane restarted.
                _ => {
                    self.samples.insert(key, (None, sample));
                }
            }
        }
    }

    /// Messages per second in and out for a core, once two samples exist.
    pub(crate) fn of(&self, node: &str, core: u16) -> Option<(f64, f64)> {
        let (previous, latest) = self.samples.get(&(node.to_owned(), core))?;
        let previous = (*previous)?;
        let elapsed = Duration::from_millis(latest.uptime_ms.checked_sub(previous.uptime_ms)?);
        Some((
            human::per_second(
                latest.messages_in.saturating_sub(previous.messages_in),
                elapsed,
            ),
            human::per_second(
                latest.messages_out.saturating_sub(previous.messages_out),
                elapsed,
            ),
        ))
    }
}

/// The figures of every data plane.
pub(crate) fn fetch(client: &mut ControlClient) -> CliResult<Vec<DataPlaneFigures>> {
    match client.call(&CliRequest::Figures)? {
        CliResponse::Figures(planes) => Ok(planes),
        other => Err(unexpected("figures", &other)),
    }
}

/// One sample, or a watch until `stop` is raised.
pub(crate) fn run(
    client: &mut ControlClient,
    watch: Option<Duration>,
    stop: &AtomicBool,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let Some(interval) = watch else {
        let planes = fetch(client)?;
        return print_sample(&planes, None, format, false, out);
    };
    let redraw = format == OutputFormat::Table && std::io::stdout().is_terminal();
    let mut rates = Rates::default();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let planes = fetch(client)?;
        planes.iter().for_each(|p| rates.record(p));
        if redraw {
            write!(out, "{CLEAR_SCREEN}")?;
        } else if !first && format == OutputFormat::Table {
            writeln!(out)?;
        }
        first = false;
        print_sample(&planes, Some(&rates), format, true, out)?;
        out.flush()?;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < interval {
            std::thread::sleep(STOP_POLL.min(interval.saturating_sub(started.elapsed())));
        }
    }
    Ok(())
}

/// Prints one sample: a table per data plane, or JSON (one line per
/// sample when watching).
pub(crate) fn print_sample(
    planes: &[DataPlaneFigures],
    rates: Option<&Rates>,
    format: OutputFormat,
    one_line_json: bool,
    out: &mut dyn Write,
) -> CliResult {
    match format {
        OutputFormat::Json => {
            let value =
                serde_json::Value::Array(planes.iter().map(|p| plane_json(p, rates)).collect());
            if one_line_json {
                writeln!(out, "{value}")?;
            } else {
                view::write_json(out, &value)?;
            }
        }
        OutputFormat::Table => {
            if planes.is_empty() {
                writeln!(
                    out,
                    "no data plane has connected since the control plane started"
                )?;
            }
            for (i, p) in planes.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(
                    out,
                    "data plane {} ({}, version {}, up {}, figures {} old)",
                    p.node,
                    if p.connected {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    p.figures.applied_version,
                    human::compact_duration_ms(p.figures.uptime_ms),
                    human::age_ms(p.figures_age_ms),
                )?;
                core_table(p, rates).write_to(out)?;
            }
        }
    }
    Ok(())
}

fn plane_json(p: &DataPlaneFigures, rates: Option<&Rates>) -> serde_json::Value {
    serde_json::json!({
        "node": p.node,
        "connected": p.connected,
        "figures_age_ms": p.figures_age_ms,
        "applied_version": p.figures.applied_version,
        "uptime_ms": p.figures.uptime_ms,
        "rss_bytes": p.figures.rss_bytes,
        "registry_devices": p.figures.registry_devices,
        "cores": p.figures.cores.iter()
            .map(|c| view::core_figures(c, rates.and_then(|r| r.of(&p.node, c.core))))
            .collect::<Vec<_>>(),
    })
}

/// The per-core table of one data plane; rate columns only when watching.
pub(crate) fn core_table(p: &DataPlaneFigures, rates: Option<&Rates>) -> Table {
    let mut header = vec!["CORE", "CONNS", "MSGS_IN", "MSGS_OUT"];
    if rates.is_some() {
        header.extend(["IN/S", "OUT/S"]);
    }
    header.extend([
        "BYTES_IN",
        "BYTES_OUT",
        "DROPS_OUT",
        "DROPS_MESH",
        "DROPS_FWD",
        "POOL_IN_USE",
        "P50_US",
        "P99_US",
        "P99.9_US",
        "MAX_US",
    ]);
    let mut table = Table::new(&header);
    for c in &p.figures.cores {
        table.row(core_row(c, rates.map(|r| r.of(&p.node, c.core))));
    }
    table
}

fn core_row(c: &CoreFigures, rates: Option<Option<(f64, f64)>>) -> Vec<String> {
    let mut row = vec![
        c.core.to_string(),
        c.connections.to_string(),
        c.messages_in.to_string(),
        c.messages_out.to_string(),
    ];
    match rates {
        Some(Some((rate_in, rate_out))) => {
            row.push(format!("{rate_in:.0}"));
            row.push(format!("{rate_out:.0}"));
        }
        Some(None) => row.extend(["-".to_owned(), "-".to_owned()]),
        None => {}
    }
    let pool_in_use: u64 = c.pools.iter().map(|p| u64::from(p.in_use)).sum();
    let l = &c.latency;
    row.extend([
        c.bytes_in.to_string(),
        c.bytes_out.to_string(),
        c.outbound_drops.to_string(),
        c.mesh_drops.to_string(),
        c.forward_drops.to_string(),
        pool_in_use.to_string(),
        l.p50_us.to_string(),
        l.p99_us.to_string(),
        l.p999_us.to_string(),
        l.max_us.to_string(),
    ]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::PlaneFigures;

    fn plane(uptime_ms: u64, msgs_in: u64) -> DataPlaneFigures {
        DataPlaneFigures {
            node: "n".into(),
            connected: true,
            figures: PlaneFigures {
                uptime_ms,
                cores: vec![CoreFigures {
                    core: 0,
                    messages_in: msgs_in,
                    messages_out: msgs_in / 2,
                    ..CoreFigures::default()
                }],
                ..PlaneFigures::default()
            },
            figures_age_ms: 100,
        }
    }

    #[test]
    fn rates_come_from_two_distinct_samples() {
        let mut r = Rates::default();
        r.record(&plane(1000, 100));
        assert_eq!(r.of("n", 0), None);
        r.record(&plane(1000, 100));
        assert_eq!(r.of("n", 0), None);
        r.record(&plane(3000, 500));
        assert_eq!(r.of("n", 0), Some((200.0, 100.0)));
        // The same sample again keeps the rate.
        r.record(&plane(3000, 500));
        assert_eq!(r.of("n", 0), Some((200.0, 100.0)));
        // A restart starts over.
        r.record(&plane(500, 10));
        assert_eq!(r.of("n", 0), None);
    }

    #[test]
    fn tables_have_rate_columns_only_when_watching() {
        let p = plane(1000, 7);
        let render = |rates: Option<&Rates>| {
            let mut out = Vec::new();
            core_table(&p, rates).write_to(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let once = render(None);
        assert!(!once.contains("IN/S"), "{once}");
        let rows: Vec<Vec<&str>> = once
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0].len(), rows[1].len());
        let watched = render(Some(&Rates::default()));
        assert!(watched.contains("IN/S"), "{watched}");
    }
}
