//! `get KIND [NAME]`: resources as a table per kind, or JSON.

use std::io::Write;

use shoal_protocols::control::{
    CliRequest, CliResponse, Device, Listener, Product, Resource, ResourceKind, Route, RouteAction,
    Stream,
};

use crate::args::OutputFormat;
use crate::client::{unexpected, ControlClient};
use crate::error::{CliError, CliResult};
use crate::spec::{auth_summary, framing_summary, identity_summary, protocol_summary};
use crate::table::Table;
use crate::view;

/// The most devices the control plane lists in one answer.
pub(crate) const DEVICE_LIST_LIMIT: usize = 100_000;

/// Hex digits of a secret digest shown in tables.
const DIGEST_PREFIX_CHARS: usize = 8;

/// Parses a kind as the CLI spells it.
pub(crate) fn parse_kind(text: &str) -> CliResult<ResourceKind> {
    ResourceKind::parse(text).ok_or_else(|| {
        CliError::invalid(format!(
            "unknown kind {text:?}; use listeners, products, devices, routes or streams"
        ))
    })
}

/// Asks for resources of `kind` (or the one named `name`).
pub(crate) fn fetch(
    client: &mut ControlClient,
    kind: ResourceKind,
    name: Option<String>,
) -> CliResult<Vec<Resource>> {
    match client.call(&CliRequest::Get { kind, name })? {
        CliResponse::Resources(list) => Ok(list),
        other => Err(unexpected("a resource list", &other)),
    }
}

/// Fetches and prints.
pub(crate) fn run(
    client: &mut ControlClient,
    kind: &str,
    name: Option<String>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let kind = parse_kind(kind)?;
    let listing_all = name.is_none();
    let list = fetch(client, kind, name)?;
    if listing_all && kind == ResourceKind::Device && list.len() >= DEVICE_LIST_LIMIT {
        eprintln!(
            "shoalctl: the control plane lists at most {DEVICE_LIST_LIMIT} devices (the first by \
             id); `shoalctl get device ID` shows any one"
        );
    }
    match format {
        OutputFormat::Json => view::write_json(out, &view::resources(&list))?,
        OutputFormat::Table => table_of(kind, &list).write_to(out)?,
    }
    Ok(())
}

/// The table of one kind; resources of other kinds are left out.
pub(crate) fn table_of(kind: ResourceKind, list: &[Resource]) -> Table {
    let header: &[&str] = match kind {
        ResourceKind::Listener => &[
            "NAME",
            "PROTOCOL",
            "BIND",
            "FRAMING",
            "IDENTITY",
            "AUTH",
            "MAX_CONNS",
        ],
        ResourceKind::Route => &["NAME", "FILTER", "ORIGIN", "ACTION"],
        ResourceKind::Device => &["ID", "PRODUCT", "SECRET_DIGEST"],
        ResourceKind::Product => &["NAME", "DESCRIPTION", "PUBLISH", "SUBSCRIBE"],
        ResourceKind::Stream => &["NAME", "KEY", "PLAY"],
        _ => &["KIND", "NAME"],
    };
    let mut table = Table::new(header);
    for r in list.iter().filter(|r| r.kind() == kind) {
        table.row(match r {
            Resource::Listener(l) => listener_row(l),
            Resource::Route(route) => route_row(route),
            Resource::Device(d) => device_row(d),
            Resource::Product(p) => product_row(p),
            Resource::Stream(s) => stream_row(s),
            _ => vec![r.kind().to_string(), r.name().to_owned()],
        });
    }
    table
}

fn listener_row(l: &Listener) -> Vec<String> {
    vec![
        l.name.clone(),
        protocol_summary(l.protocol).to_owned(),
        l.bind.clone(),
        framing_summary(l.framing.as_ref()),
        identity_summary(&l.identity),
        auth_summary(l.auth).to_owned(),
        l.max_connections.to_string(),
    ]
}

fn route_row(r: &Route) -> Vec<String> {
    let mut origin = Vec::new();
    if let Some(l) = &r.listener {
        origin.push(format!("listener={l}"));
    }
    if let Some(d) = &r.device {
        origin.push(format!("device={d}"));
    }
    let action = match &r.action {
        RouteAction::Republish { topic } => format!("republish {topic}"),
        RouteAction::ForwardTcp {
            address,
            framing,
            queue_bytes,
        } => format!(
            "forward-tcp {address} framing={} queue={queue_bytes}",
            framing_summary(Some(framing))
        ),
        RouteAction::ForwardUdp { address } => format!("forward-udp {address}"),
        RouteAction::ForwardHttp(w) => format!(
            "forward-http {} batch={}/{}ms queue={}B/{} conns={} timeout={}ms retries={}",
            w.url,
            w.batch_max,
            w.batch_wait_ms,
            w.queue_bytes,
            w.queue_messages,
            w.connections,
            w.timeout_ms,
            w.max_retries
        ),
        RouteAction::Drop => "drop".to_owned(),
        _ => "other".to_owned(),
    };
    vec![r.name.clone(), r.filter.clone(), origin.join(","), action]
}

fn device_row(d: &Device) -> Vec<String> {
    let digest = d.secret.to_string();
    let prefix: String = digest.chars().take(DIGEST_PREFIX_CHARS).collect();
    vec![d.id.clone(), d.product.clone(), format!("{prefix}…")]
}

fn product_row(p: &Product) -> Vec<String> {
    let filters = |list: &[String], default: &str| {
        if list.is_empty() {
            format!("(default {default})")
        } else {
            list.join(",")
        }
    };
    vec![
        p.name.clone(),
        p.description.clone(),
        filters(&p.publish, "devices/{device}/up/#"),
        filters(&p.subscribe, "devices/{device}/down/#"),
    ]
}

fn stream_row(s: &Stream) -> Vec<String> {
    vec![
        s.name.clone(),
        if s.publish_key.is_some() {
            "set"
        } else {
            "none"
        }
        .to_owned(),
        if s.allow_play { "yes" } else { "no" }.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::{
        Framing, Identity, ListenerAuth, ListenerProtocol, SecretDigest,
    };

    fn render(t: &Table) -> String {
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn kinds_parse_singular_and_plural() {
        assert_eq!(parse_kind("listeners").unwrap(), ResourceKind::Listener);
        assert_eq!(parse_kind("device").unwrap(), ResourceKind::Device);
        assert_eq!(parse_kind("widgets").unwrap_err().failure.exit_code(), 2);
    }

    #[test]
    fn listener_rows_summarise_framing_and_identity() {
        let l = Resource::Listener(Listener {
            name: "tcp-default".into(),
            protocol: ListenerProtocol::Tcp,
            bind: "127.0.0.1:7000".into(),
            max_connections: 100_000,
            max_frame_bytes: 4096,
            idle_timeout_ms: 300_000,
            framing: Some(Framing::LengthField {
                offset: 0,
                width: 2,
                big_endian: true,
                adjustment: 0,
                strip_bytes: None,
            }),
            identity: Identity::LoginFrame,
            auth: ListenerAuth::None,
        });
        let text = render(&table_of(ResourceKind::Listener, &[l]));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[1],
            [
                "tcp-default",
                "tcp",
                "127.0.0.1:7000",
                "length:2",
                "login-frame",
                "none",
                "100000"
            ]
        );
    }

    #[test]
    fn device_rows_show_only_a_digest_prefix() {
        let secret = SecretDigest::of("m1", b"my-secret-token");
        let d = Resource::Device(Device {
            id: "m1".into(),
            product: "meter".into(),
            secret,
        });
        let text = render(&table_of(ResourceKind::Device, &[d]));
        let full = secret.to_string();
        assert!(text.contains(&full[..8]), "{text}");
        assert!(!text.contains(&full), "{text}");
        assert!(!text.contains("my-secret-token"), "{text}");
    }

    #[test]
    fn route_and_stream_rows() {
        let r = Resource::Route(Route {
            name: "r".into(),
            filter: "devices/+/up".into(),
            listener: Some("udp-default".into()),
            device: None,
            action: RouteAction::Republish {
                topic: "devices/lamp/down".into(),
            },
        });
        let text = render(&table_of(ResourceKind::Route, &[r]));
        assert!(text.contains("listener=udp-default"), "{text}");
        assert!(text.contains("republish devices/lamp/down"), "{text}");
        let hook = Resource::Route(Route {
            name: "hook".into(),
            filter: "devices/#".into(),
            listener: None,
            device: None,
            action: RouteAction::ForwardHttp(shoal_protocols::control::Webhook::from(
                &shoal_protocols::config::WebhookConfig::new("http://127.0.0.1:9000/in"),
            )),
        });
        let text = render(&table_of(ResourceKind::Route, &[hook]));
        assert!(
            text.contains(
                "forward-http http://127.0.0.1:9000/in batch=100/20ms queue=1048576B/10000 \
                 conns=2 timeout=5000ms retries=3"
            ),
            "{text}"
        );
        let s = Resource::Stream(Stream {
            name: "live/*".into(),
            publish_key: Some("k-secret".into()),
            allow_play: false,
        });
        let text = render(&table_of(ResourceKind::Stream, &[s]));
        assert!(!text.contains("k-secret"), "{text}");
        assert_eq!(
            text.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["live/*", "set", "no"]
        );
    }
}
