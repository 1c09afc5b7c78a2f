//! The JSON that `-o json` prints: flat views of the protocol types with
//! stable field names (resources in the same shape as the TOML document
//! of `shoalctl apply`).
//!
//! - resource lists (`get`): an array of objects. Listeners and routes as
//!   a `[[listener]]`/`[[route]]` table (`idle_timeout = "5m"`, `framing`
//!   and `action` tagged by `kind`); products `{name, description,
//!   publish, subscribe}`; devices `{id, product, secret_digest}` (32 hex
//!   digits; secrets are never known); streams `{name, publish_key_set,
//!   allow_play}` (the key itself is not printed).
//! - apply reports (`apply`, `* add`, `* rm`, `device import` per batch):
//!   `{version, dry_run, pending, acked_by: [node], diff: [{op:
//!   "add"|"change"|"remove", kind, name, detail}]}`.
//! - `status`: `{control_plane: {node, release, uptime_ms,
//!   desired_version, counts: {listener: n, ...}}, data_planes: [{node,
//!   release, connected, cores, applied_version, last_error, uptime_ms,
//!   rss_bytes, registry_devices, figures_age_ms, core_figures: [...]}]}`.
//! - `device add`: the apply report, plus `secret` when shoalctl made
//!   the secret. `device kick`: `{device, connections_closed}`.
//!   `device import`: `{file, devices, added, changed, unchanged,
//!   elapsed_ms, devices_per_s, version, pending, acked_by}`.
//! - `stats`: `[{node, connected, figures_age_ms, applied_version,
//!   uptime_ms, rss_bytes, registry_devices, cores: [CoreFigures]}]`,
//!   each core with `messages_in_per_s` and `messages_out_per_s` added
//!   under `--watch` once two samples exist.
//! - `stream list`: `[{name, publisher (address or null), publisher_node,
//!   publishing_secs, video_codec, audio_codec, width, height,
//!   bitrate_kbps, viewers, viewers_per_core: [{node, core, viewers}],
//!   skipped_tags, slow_disconnects}]`, by name, over the connected data
//!   planes. `stream kick`: `{stream, publishers_kicked}`.

use std::io::{self, Write};

use serde_json::{json, Map, Value};
use shoal_protocols::config::{ListenerConfig, RouteConfig};
use shoal_protocols::control::{
    ApplyReport, DataPlaneStatus, DiffEntry, DiffOp, Resource, StatusReport,
};
use shoal_protocols::figures::CoreFigures;

/// Writes `value` pretty-printed, then a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// A serde value, or `null` if it cannot be one (it always can for the
/// plain types used here).
fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The word for a diff operation.
pub(crate) fn op_name(op: DiffOp) -> &'static str {
    match op {
        DiffOp::Add => "add",
        DiffOp::Change => "change",
        DiffOp::Remove => "remove",
        _ => "other",
    }
}

/// One diff entry.
fn diff_entry(d: &DiffEntry) -> Value {
    json!({
        "op": op_name(d.op),
        "kind": d.key.kind.as_str(),
        "name": d.key.name,
        "detail": d.detail,
    })
}

/// An apply report.
pub(crate) fn apply_report(r: &ApplyReport) -> Value {
    json!({
        "version": r.version,
        "dry_run": r.dry_run,
        "pending": r.pending,
        "acked_by": r.acked_by,
        "diff": r.diff.iter().map(diff_entry).collect::<Vec<_>>(),
    })
}

/// One resource, in the document's shape.
pub(crate) fn resource(r: &Resource) -> Value {
    match r {
        Resource::Listener(l) => to_value(&ListenerConfig::from(l)),
        Resource::Route(route) => to_value(&RouteConfig::from(route)),
        Resource::Product(p) => json!({
            "name": p.name,
            "description": p.description,
            "publish": p.publish,
            "subscribe": p.subscribe,
        }),
        Resource::Device(d) => json!({
            "id": d.id,
            "product": d.product,
            "secret_digest": d.secret.to_string(),
        }),
        Resource::Stream(s) => json!({
            "name": s.name,
            "publish_key_set": s.publish_key.is_some(),
            "allow_play": s.allow_play,
        }),
        _ => json!({ "kind": r.kind().as_str(), "name": r.name() }),
    }
}

/// A list of resources.
pub(crate) fn resources(list: &[Resource]) -> Value {
    Value::Array(list.iter().map(resource).collect())
}

/// A status report.
pub(crate) fn status(s: &StatusReport) -> Value {
    let counts: Map<String, Value> = s
        .counts
        .iter()
        .map(|(kind, n)| (kind.as_str().to_owned(), json!(n)))
        .collect();
    json!({
        "control_plane": {
            "node": s.node,
            "release": s.software_version,
            "uptime_ms": s.uptime_ms,
            "desired_version": s.desired_version,
            "counts": counts,
        },
        "data_planes": s.data_planes.iter().map(data_plane).collect::<Vec<_>>(),
    })
}

fn data_plane(p: &DataPlaneStatus) -> Value {
    json!({
        "node": p.node,
        "release": p.software_version,
        "connected": p.connected,
        "cores": p.cores,
        "applied_version": p.applied_version,
        "last_error": p.last_error,
        "uptime_ms": p.figures.uptime_ms,
        "rss_bytes": p.figures.rss_bytes,
        "registry_devices": p.figures.registry_devices,
        "figures_age_ms": p.figures_age_ms,
        "core_figures": p.figures.cores.iter().map(to_value).collect::<Vec<_>>(),
    })
}

/// One core's figures, with rates when known.
pub(crate) fn core_figures(c: &CoreFigures, rates: Option<(f64, f64)>) -> Value {
    let mut v = to_value(c);
    if let (Some((rate_in, rate_out)), Value::Object(map)) = (rates, &mut v) {
        map.insert("messages_in_per_s".to_owned(), json!(rate_in));
        map.insert("messages_out_per_s".to_owned(), json!(rate_out));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::{
        Device, Framing, Identity, Listener, ListenerAuth, ListenerProtocol, ResourceKey,
        ResourceKind, SecretDigest, Stream,
    };

    #[test]
    fn listeners_look_like_the_document() {
        let l = Resource::Listener(Listener {
            name: "m".into(),
            protocol: ListenerProtocol::Tcp,
            bind: "127.0.0.1:7100".into(),
            max_connections: 10,
            max_frame_bytes: 100,
            idle_timeout_ms: 300_000,
            framing: Some(Framing::FixedLength { frame_bytes: 8 }),
            identity: Identity::LoginFrame,
            auth: ListenerAuth::DeviceSecret,
        });
        let v = resource(&l);
        assert_eq!(v["name"], "m");
        assert_eq!(v["protocol"], "tcp");
        assert_eq!(v["idle_timeout"], "5m");
        assert_eq!(v["framing"]["kind"], "fixed_length");
        assert_eq!(v["identity"]["kind"], "login_frame");
        assert_eq!(v["auth"], "device_secret");
    }

    #[test]
    fn devices_show_a_digest_and_streams_hide_their_key() {
        let d = Resource::Device(Device {
            id: "d".into(),
            product: "p".into(),
            secret: SecretDigest::of("d", b"secret-123"),
        });
        let v = resource(&d);
        assert_eq!(v["secret_digest"].as_str().unwrap().len(), 32);
        let s = Resource::Stream(Stream {
            name: "live/*".into(),
            publish_key: Some("studio-key".into()),
            allow_play: true,
        });
        let text = resource(&s).to_string();
        assert!(!text.contains("studio-key"), "{text}");
        assert!(text.contains("\"publish_key_set\":true"), "{text}");
    }

    #[test]
    fn apply_reports_are_flat() {
        let r = ApplyReport {
            version: 4,
            dry_run: false,
            diff: vec![DiffEntry {
                op: DiffOp::Change,
                key: ResourceKey {
                    kind: ResourceKind::Route,
                    name: "r".into(),
                },
                detail: "filter".into(),
            }],
            acked_by: vec!["host".into()],
            pending: false,
        };
        let v = apply_report(&r);
        assert_eq!(
            v,
            json!({"version": 4, "dry_run": false, "pending": false, "acked_by": ["host"],
                   "diff": [{"op": "change", "kind": "route", "name": "r", "detail": "filter"}]})
        );
    }
}
