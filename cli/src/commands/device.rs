//! `device add`, `device rm` and `device kick` (`device import` is in
//! [`super::import`]).

use std::io::Write;

use shoal_protocols::config::validate_device_id;
use shoal_protocols::control::{
    validate_secret, Change, CliRequest, CliResponse, Device, Resource, ResourceKey, ResourceKind,
    SecretDigest,
};

use crate::args::OutputFormat;
use crate::client::{unexpected, ControlClient};
use crate::commands::{fate_of, outcome_line, remove_one, send_apply};
use crate::error::{CliError, CliResult};
use crate::secret_gen;
use crate::view;

/// A device ready to be sent, with the secret when it was made here.
#[derive(Debug, Clone)]
pub(crate) struct NewDevice {
    /// The registry entry (only the secret's digest).
    pub(crate) device: Device,
    /// The secret, when shoalctl made it (printed once).
    pub(crate) generated_secret: Option<String>,
}

/// Checks the id and the secret, or makes a random secret.
pub(crate) fn prepare(id: String, product: String, secret: Option<String>) -> CliResult<NewDevice> {
    validate_device_id(&id).map_err(CliError::invalid)?;
    let (secret, generated) = match secret {
        Some(s) => {
            validate_secret(&s).map_err(CliError::invalid)?;
            (s, false)
        }
        None => {
            let s = secret_gen::generate().map_err(|e| {
                CliError::runtime(format!(
                    "cannot read /dev/urandom to make a secret: {e} (give one with --secret)"
                ))
            })?;
            (s, true)
        }
    };
    Ok(NewDevice {
        device: Device {
            secret: SecretDigest::of(&id, secret.as_bytes()),
            id,
            product,
        },
        generated_secret: generated.then_some(secret),
    })
}

/// `device add`: prints a secret made here once.
pub(crate) fn add(
    client: &mut ControlClient,
    new: NewDevice,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let key = ResourceKey {
        kind: ResourceKind::Device,
        name: new.device.id.clone(),
    };
    let device = new.device;
    let report = send_apply(
        client,
        vec![Change::Upsert(Resource::Device(device))],
        false,
    )?;
    match format {
        OutputFormat::Json => {
            let mut v = view::apply_report(&report);
            if let (Some(secret), serde_json::Value::Object(map)) = (&new.generated_secret, &mut v)
            {
                map.insert(
                    "secret".to_owned(),
                    serde_json::Value::String(secret.clone()),
                );
            }
            view::write_json(out, &v)?;
        }
        OutputFormat::Table => {
            writeln!(out, "{key} {}", fate_of(&report, &key))?;
            if let Some(secret) = &new.generated_secret {
                writeln!(out, "secret: {secret}")?;
                writeln!(
                    out,
                    "this secret is shown once and is not stored anywhere (the control plane \
                     keeps only its digest): give it to the device now"
                )?;
            }
            writeln!(out, "{}", outcome_line(&report))?;
        }
    }
    Ok(())
}

/// `device rm`.
pub(crate) fn rm(
    client: &mut ControlClient,
    id: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let key = ResourceKey {
        kind: ResourceKind::Device,
        name: id,
    };
    remove_one(client, out, format, key)
}

/// `device kick`: closes the device's connections everywhere.
pub(crate) fn kick(
    client: &mut ControlClient,
    id: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let connections = match client.call(&CliRequest::KickDevice { device: id.clone() })? {
        CliResponse::Kicked { connections } => connections,
        other => return Err(unexpected("a kick report", &other)),
    };
    match format {
        OutputFormat::Json => view::write_json(
            out,
            &serde_json::json!({ "device": id, "connections_closed": connections }),
        )?,
        OutputFormat::Table => writeln!(
            out,
            "closed {connections} connection{} of device {id:?}",
            if connections == 1 { "" } else { "s" }
        )?,
    }
    Ok(())
}
