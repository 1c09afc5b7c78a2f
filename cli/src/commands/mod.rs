//! One module per command. Every command that talks to the control plane
//! takes the connected client, the output format and where to write, so
//! tests drive them against a fake control plane.

pub(crate) mod apply;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod device;
pub(crate) mod figures;
pub(crate) mod get;
pub(crate) mod import;
pub(crate) mod listener;
pub(crate) mod product;
pub(crate) mod route;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod stream;

use std::io::Write;

use shoal_protocols::control::{
    ApplyReport, Change, CliRequest, CliResponse, DiffEntry, DiffOp, Resource, ResourceKey,
};

use crate::args::OutputFormat;
use crate::client::{unexpected, ControlClient};
use crate::error::CliResult;
use crate::view;

/// Sends `changes` as one apply and returns the report.
pub(crate) fn send_apply(
    client: &mut ControlClient,
    changes: Vec<Change>,
    dry_run: bool,
) -> CliResult<ApplyReport> {
    match client.call(&CliRequest::Apply { changes, dry_run })? {
        CliResponse::Applied(report) => Ok(report),
        other => Err(unexpected("an apply report", &other)),
    }
}

/// A diff line: `+ listener "x"`, `~ route "y" (detail)`, `- device "z"`.
pub(crate) fn diff_line(entry: &DiffEntry) -> String {
    let sign = match entry.op {
        DiffOp::Add => '+',
        DiffOp::Change => '~',
        DiffOp::Remove => '-',
        _ => '?',
    };
    if entry.detail.is_empty() {
        format!("{sign} {}", entry.key)
    } else {
        format!("{sign} {} ({})", entry.key, entry.detail)
    }
}

/// The line that says what became of an apply.
pub(crate) fn outcome_line(report: &ApplyReport) -> String {
    if report.dry_run {
        let n = report.diff.len();
        format!(
            "dry run: {n} change{}, nothing applied (desired state version {})",
            if n == 1 { "" } else { "s" },
            report.version
        )
    } else if report.diff.is_empty() {
        format!(
            "no changes; desired state stays at version {}",
            report.version
        )
    } else if report.pending {
        format!(
            "stored version {}; no data plane connected, it will get it when it connects",
            report.version
        )
    } else {
        format!(
            "applied version {} (acked by {})",
            report.version,
            report.acked_by.join(", ")
        )
    }
}

/// Prints a whole apply report: the diff, then the outcome.
pub(crate) fn print_report(
    out: &mut dyn Write,
    format: OutputFormat,
    report: &ApplyReport,
) -> CliResult {
    match format {
        OutputFormat::Json => view::write_json(out, &view::apply_report(report))?,
        OutputFormat::Table => {
            for entry in &report.diff {
                writeln!(out, "{}", diff_line(entry))?;
            }
            writeln!(out, "{}", outcome_line(report))?;
        }
    }
    Ok(())
}

/// What happened to one resource: `added`, `changed (detail)`,
/// `removed` or `unchanged`.
pub(crate) fn fate_of(report: &ApplyReport, key: &ResourceKey) -> String {
    match report.diff.iter().find(|d| &d.key == key) {
        Some(d) => {
            let word = match d.op {
                DiffOp::Add => "added",
                DiffOp::Change => "changed",
                DiffOp::Remove => "removed",
                _ => "updated",
            };
            if d.detail.is_empty() {
                word.to_owned()
            } else {
                format!("{word} ({})", d.detail)
            }
        }
        None => "unchanged".to_owned(),
    }
}

/// Applies one change to one resource and prints `KIND "NAME" FATE` and
/// the outcome (or the report as JSON).
pub(crate) fn change_one(
    client: &mut ControlClient,
    out: &mut dyn Write,
    format: OutputFormat,
    change: Change,
) -> CliResult<ApplyReport> {
    let key = change.key();
    let report = send_apply(client, vec![change], false)?;
    match format {
        OutputFormat::Json => view::write_json(out, &view::apply_report(&report))?,
        OutputFormat::Table => {
            writeln!(out, "{key} {}", fate_of(&report, &key))?;
            writeln!(out, "{}", outcome_line(&report))?;
        }
    }
    Ok(report)
}

/// Upserts one resource (see [`change_one`]).
pub(crate) fn upsert_one(
    client: &mut ControlClient,
    out: &mut dyn Write,
    format: OutputFormat,
    resource: Resource,
) -> CliResult {
    change_one(client, out, format, Change::Upsert(resource)).map(drop)
}

/// Removes one resource (see [`change_one`]).
pub(crate) fn remove_one(
    client: &mut ControlClient,
    out: &mut dyn Write,
    format: OutputFormat,
    key: ResourceKey,
) -> CliResult {
    change_one(client, out, format, Change::Remove(key)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::ResourceKind;

    fn entry(op: DiffOp, kind: ResourceKind, name: &str, detail: &str) -> DiffEntry {
        DiffEntry {
            op,
            key: ResourceKey {
                kind,
                name: name.into(),
            },
            detail: detail.into(),
        }
    }

    #[test]
    fn diff_lines_have_a_sign_the_key_and_the_detail() {
        assert_eq!(
            diff_line(&entry(DiffOp::Add, ResourceKind::Listener, "x", "")),
            "+ listener \"x\""
        );
        assert_eq!(
            diff_line(&entry(DiffOp::Change, ResourceKind::Route, "y", "filter")),
            "~ route \"y\" (filter)"
        );
        assert_eq!(
            diff_line(&entry(DiffOp::Remove, ResourceKind::Device, "z", "")),
            "- device \"z\""
        );
    }

    #[test]
    fn outcome_lines() {
        let mut r = ApplyReport {
            version: 7,
            dry_run: false,
            diff: vec![entry(DiffOp::Add, ResourceKind::Stream, "a/b", "")],
            acked_by: vec!["n1".into(), "n2".into()],
            pending: false,
        };
        assert_eq!(outcome_line(&r), "applied version 7 (acked by n1, n2)");
        r.pending = true;
        r.acked_by.clear();
        assert_eq!(
            outcome_line(&r),
            "stored version 7; no data plane connected, it will get it when it connects"
        );
        r.dry_run = true;
        assert_eq!(
            outcome_line(&r),
            "dry run: 1 change, nothing applied (desired state version 7)"
        );
        r.dry_run = false;
        r.diff.clear();
        assert_eq!(
            outcome_line(&r),
            "no changes; desired state stays at version 7"
        );
        assert_eq!(
            fate_of(
                &r,
                &ResourceKey {
                    kind: ResourceKind::Stream,
                    name: "a/b".into()
                }
            ),
            "unchanged"
        );
    }
}
