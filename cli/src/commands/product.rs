//! `product add` and `product rm`.

use std::io::Write;

use shoal_protocols::control::{Product, Resource, ResourceKey, ResourceKind};

use crate::args::OutputFormat;
use crate::client::ControlClient;
use crate::commands::{remove_one, upsert_one};
use crate::error::CliResult;

/// `product add`.
pub(crate) fn add(
    client: &mut ControlClient,
    product: Product,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    upsert_one(client, out, format, Resource::Product(product))
}

/// `product rm`.
pub(crate) fn rm(
    client: &mut ControlClient,
    name: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let key = ResourceKey {
        kind: ResourceKind::Product,
        name,
    };
    remove_one(client, out, format, key)
}
