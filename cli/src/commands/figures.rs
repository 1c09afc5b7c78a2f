//! `figures`: tabulates the `key=value` figure lines a data plane prints
//! every `--stats-interval`, read from standard input; the last line of
//! each core wins.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use crate::args::OutputFormat;
use crate::error::{CliError, CliResult};
use crate::table::Table;

/// Columns of the table, in order.
const COLUMNS: [&str; 8] = [
    "core",
    "conns",
    "msgs_in",
    "msgs_out",
    "bytes_in",
    "bytes_out",
    "outbound_drops",
    "mesh_drops",
];

/// Reads figure lines from `input` and prints the latest per core.
pub(crate) fn run(input: &mut dyn BufRead, format: OutputFormat, out: &mut dyn Write) -> CliResult {
    let mut latest: BTreeMap<u16, Vec<(String, String)>> = BTreeMap::new();
    for line in input.lines().map_while(Result::ok) {
        let Some(start) = line.find("core=") else {
            continue;
        };
        let fields: Vec<(String, String)> = line
            .get(start..)
            .unwrap_or_default()
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
        return Err(CliError::invalid(
            "no figure lines on standard input (run shoal-dataplane with --stats-interval)",
        ));
    }
    match format {
        OutputFormat::Json => {
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
            writeln!(out, "{}", serde_json::Value::Array(all))?;
        }
        OutputFormat::Table => {
            let mut table = Table::new(&COLUMNS);
            for fields in latest.values() {
                table.row(
                    COLUMNS
                        .iter()
                        .map(|c| {
                            fields
                                .iter()
                                .find(|(k, _)| k == c)
                                .map_or_else(String::new, |(_, v)| v.clone())
                        })
                        .collect(),
                );
            }
            table.write_to(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_per_core_wins() {
        let input = "x core=0 conns=1 msgs_in=2\nnoise\ncore=1 conns=5\ncore=0 conns=3 msgs_in=4\n";
        let mut out = Vec::new();
        run(&mut input.as_bytes(), OutputFormat::Json, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["conns"], "3");
        assert_eq!(v[1]["conns"], "5");
        let e = run(&mut "nothing\n".as_bytes(), OutputFormat::Table, &mut out).unwrap_err();
        assert_eq!(e.failure.exit_code(), 2);
    }
}
