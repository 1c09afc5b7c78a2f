//! `apply -f FILE [--dry-run] [--prune]`: make the desired state match a
//! declarative TOML document.
//!
//! The changes are an upsert of every resource in the file, then, with
//! `--prune`, a removal of every stored resource of a kind the file lists
//! that the file does not name (routes and devices first, listeners last,
//! so nothing is removed while something still refers to it).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use shoal_protocols::control::{Change, DesiredStateDocument, Resource, ResourceKey, ResourceKind};

use crate::args::OutputFormat;
use crate::client::ControlClient;
use crate::commands::{get, print_report, send_apply, status};
use crate::error::{CliError, CliResult};

/// Reads `file` (`-`: standard input) into resources.
pub(crate) fn read_document(file: &Path) -> CliResult<Vec<Resource>> {
    let name = file.display().to_string();
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::invalid(format!("cannot read standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::invalid(format!("cannot read {name}: {e}")))?
    };
    parse_document(&text).map_err(|e| e.context(if name == "-" { "standard input" } else { &name }))
}

/// Parses a document's text into resources (secrets become digests).
pub(crate) fn parse_document(text: &str) -> CliResult<Vec<Resource>> {
    let relying = shoal_protocols::config::listeners_relying_on_default_auth(text);
    if let Some(warning) = shoal_protocols::config::default_auth_warning(&relying) {
        eprintln!("shoalctl: warning: {warning}");
    }
    DesiredStateDocument::from_toml(text)
        .and_then(|doc| doc.to_resources())
        .map_err(|e| CliError::invalid(e.to_string()))
}

/// Applies `resources` (and prunes) and prints the diff and the outcome.
pub(crate) fn run(
    client: &mut ControlClient,
    resources: Vec<Resource>,
    dry_run: bool,
    prune: bool,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let removals = if prune {
        prune_removals(client, &resources)?
    } else {
        Vec::new()
    };
    let mut changes: Vec<Change> = resources.into_iter().map(Change::Upsert).collect();
    changes.extend(removals.into_iter().map(Change::Remove));
    let report = send_apply(client, changes, dry_run)?;
    print_report(out, format, &report)
}

/// The stored resources of the kinds in `resources` that `resources` does
/// not name, dependents first.
fn prune_removals(
    client: &mut ControlClient,
    resources: &[Resource],
) -> CliResult<Vec<ResourceKey>> {
    let wanted: HashSet<ResourceKey> = resources.iter().map(Resource::key).collect();
    let kinds: HashSet<ResourceKind> = resources.iter().map(Resource::kind).collect();
    let mut removals = Vec::new();
    // Reverse snapshot order: what refers to others goes first.
    for kind in ResourceKind::ALL.into_iter().rev() {
        if !kinds.contains(&kind) {
            continue;
        }
        let stored = get::fetch(client, kind, None)?;
        if kind == ResourceKind::Device && stored.len() >= get::DEVICE_LIST_LIMIT {
            warn_if_devices_were_cut(client, stored.len())?;
        }
        removals.extend(
            stored
                .iter()
                .map(Resource::key)
                .filter(|key| !wanted.contains(key)),
        );
    }
    Ok(removals)
}

/// Says so when the device list was cut at the control plane's limit, so
/// some devices were not considered for pruning.
fn warn_if_devices_were_cut(client: &mut ControlClient, listed: usize) -> CliResult {
    let report = status::fetch(client)?;
    let stored = report
        .counts
        .iter()
        .find(|(kind, _)| *kind == ResourceKind::Device)
        .map_or(0, |(_, n)| *n);
    if stored > listed as u64 {
        eprintln!(
            "shoalctl: warning: the control plane listed {listed} of {stored} devices; only those \
             were considered for --prune (run it again to prune more)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_resources_with_digests() {
        let text = r#"
[[product]]
name = "meter"

[[device]]
id = "meter-1"
product = "meter"
secret = "k3XbQ9-token-1"
"#;
        let resources = parse_document(text).unwrap();
        assert_eq!(resources.len(), 2);
        assert_eq!(resources[1].kind(), ResourceKind::Device);
        let e = parse_document("[[device]]\nid = \"x\"\nproduct = \"p\"\n").unwrap_err();
        assert_eq!(e.failure.exit_code(), 2);
        assert!(e.message.contains("device[0]"), "{}", e.message);
        let e = parse_document("[[widget]]\n").unwrap_err();
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn a_missing_file_is_invalid_input() {
        let e = read_document(Path::new("/nonexistent/shoal.toml")).unwrap_err();
        assert_eq!(e.failure.exit_code(), 2);
        assert!(e.message.starts_with("cannot read /nonexistent/shoal.toml"));
    }
}
