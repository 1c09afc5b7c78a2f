//! `stream add` and `stream rm`.

use std::io::Write;

use shoal_protocols::control::{Resource, ResourceKey, ResourceKind, Stream};

use crate::args::OutputFormat;
use crate::client::ControlClient;
use crate::commands::{remove_one, upsert_one};
use crate::error::CliResult;

/// `stream add`.
pub(crate) fn add(
    client: &mut ControlClient,
    stream: Stream,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    upsert_one(client, out, format, Resource::Stream(stream))
}

/// `stream rm`.
pub(crate) fn rm(
    client: &mut ControlClient,
    name: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let key = ResourceKey {
        kind: ResourceKind::Stream,
        name,
    };
    remove_one(client, out, format, key)
}
