//! `stream add` and `stream rm` (rules, through applies), `stream list`
//! (live streams, from the data planes' figures) and `stream kick` (ends
//! a publisher).

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Value};
use shoal_protocols::config::validate_stream_rule_name;
use shoal_protocols::control::{
    CliRequest, CliResponse, DataPlaneFigures, Resource, ResourceKey, ResourceKind, Stream,
};
use shoal_protocols::figures::StreamFigures;

use crate::args::OutputFormat;
use crate::client::{unexpected, ControlClient};
use crate::commands::{remove_one, stats, upsert_one};
use crate::error::{CliError, CliResult};
use crate::human;
use crate::table::Table;
use crate::view;

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

/// `stream kick`: ends the stream's publisher wherever it publishes.
pub(crate) fn kick(
    client: &mut ControlClient,
    name: String,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let publishers = match client.call(&CliRequest::KickStream {
        stream: name.clone(),
    })? {
        CliResponse::StreamKicked { publishers } => publishers,
        other => return Err(unexpected("a stream kick report", &other)),
    };
    match format {
        OutputFormat::Json => view::write_json(
            out,
            &json!({ "stream": name, "publishers_kicked": publishers }),
        )?,
        OutputFormat::Table if publishers == 0 => writeln!(out, "{name} has no publisher")?,
        OutputFormat::Table => writeln!(out, "kicked the publisher of {name}")?,
    }
    Ok(())
}

/// Checks a `stream kick` name: one stream, `app/name` (not `app/*`).
pub(crate) fn check_stream_name(name: &str) -> CliResult {
    validate_stream_rule_name(name).map_err(CliError::invalid)?;
    if name.ends_with("/*") {
        return Err(CliError::invalid(format!(
            "stream kick takes one stream (`app/name`), not {name:?}"
        )));
    }
    Ok(())
}

/// One live stream over every connected data plane and core.
#[derive(Debug, Default)]
struct LiveStream {
    name: String,
    /// The data plane and address of its publisher, from its origin core.
    publisher: Option<(String, String)>,
    publishing_secs: u64,
    video_codec: String,
    audio_codec: String,
    width: u32,
    height: u32,
    bitrate_kbps: u64,
    /// Viewers per (data plane, core), in that order.
    viewers: Vec<(String, u16, u64)>,
    skipped_tags: u64,
    slow_disconnects: u64,
}

impl LiveStream {
    fn add(&mut self, node: &str, f: &StreamFigures) {
        let origin = f.publisher.is_some();
        if let Some(addr) = &f.publisher {
            self.publisher = Some((node.to_owned(), addr.clone()));
            self.publishing_secs = f.publishing_secs;
        }
        // The origin's figures win; a mirror fills in what is still unknown.
        if origin || self.video_codec.is_empty() {
            self.video_codec.clone_from(&f.video_codec);
        }
        if origin || self.audio_codec.is_empty() {
            self.audio_codec.clone_from(&f.audio_codec);
        }
        if origin || self.width == 0 {
            (self.width, self.height) = (f.width, f.height);
        }
        if origin || self.bitrate_kbps == 0 {
            self.bitrate_kbps = f.bitrate_kbps;
        }
        self.viewers.push((node.to_owned(), f.core, f.viewers));
        self.skipped_tags += f.skipped_tags;
        self.slow_disconnects += f.slow_disconnects;
    }

    fn viewers_total(&self) -> u64 {
        self.viewers.iter().map(|(_, _, n)| n).sum()
    }

    /// `avc/aac`; `-` for a codec not known yet.
    fn codecs(&self) -> String {
        let or_dash = |c: &str| {
            if c.is_empty() {
                "-".to_owned()
            } else {
                c.to_owned()
            }
        };
        format!(
            "{}/{}",
            or_dash(&self.video_codec),
            or_dash(&self.audio_codec)
        )
    }

    /// `1280x720`; `-` when the publisher did not say.
    fn size(&self) -> String {
        if self.width == 0 || self.height == 0 {
            "-".to_owned()
        } else {
            format!("{}x{}", self.width, self.height)
        }
    }

    /// Viewers per core joined with `+` (`5+7`), in data plane and core
    /// order.
    fn per_core(&self) -> String {
        let parts: Vec<String> = self.viewers.iter().map(|(_, _, n)| n.to_string()).collect();
        parts.join("+")
    }

    fn row(&self) -> Vec<String> {
        let (publisher, uptime) = match &self.publisher {
            Some((_, addr)) => (
                addr.clone(),
                human::compact_duration_ms(self.publishing_secs.saturating_mul(1000)),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        vec![
            self.name.clone(),
            publisher,
            uptime,
            self.codecs(),
            self.size(),
            self.bitrate_kbps.to_string(),
            self.viewers_total().to_string(),
            self.per_core(),
            self.skipped_tags.to_string(),
            self.slow_disconnects.to_string(),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "publisher": self.publisher.as_ref().map(|(_, addr)| addr),
            "publisher_node": self.publisher.as_ref().map(|(node, _)| node),
            "publishing_secs": self.publishing_secs,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "width": self.width,
            "height": self.height,
            "bitrate_kbps": self.bitrate_kbps,
            "viewers": self.viewers_total(),
            "viewers_per_core": self.viewers.iter()
                .map(|(node, core, viewers)| json!({"node": node, "core": core, "viewers": viewers}))
                .collect::<Vec<_>>(),
            "skipped_tags": self.skipped_tags,
            "slow_disconnects": self.slow_disconnects,
        })
    }
}

/// The live streams of every connected data plane, by name; each core's
/// figures of a stream folded into one.
fn live_streams(planes: &[DataPlaneFigures]) -> Vec<LiveStream> {
    let mut by_name: BTreeMap<&str, LiveStream> = BTreeMap::new();
    let mut connected: Vec<&DataPlaneFigures> = planes.iter().filter(|p| p.connected).collect();
    connected.sort_by(|a, b| a.node.cmp(&b.node));
    for plane in connected {
        let mut cores: Vec<_> = plane.figures.cores.iter().collect();
        cores.sort_by_key(|c| c.core);
        for f in cores.iter().flat_map(|c| &c.streams) {
            let stream = by_name.entry(&f.name).or_insert_with(|| LiveStream {
                name: f.name.clone(),
                ..LiveStream::default()
            });
            stream.add(&plane.node, f);
        }
    }
    by_name.into_values().collect()
}

/// `stream list`: one row per live stream over every connected data plane.
pub(crate) fn list(
    client: &mut ControlClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let planes = stats::fetch(client)?;
    print_list(&planes, format, out)
}

/// Prints the live streams of `planes` as a table or JSON.
pub(crate) fn print_list(
    planes: &[DataPlaneFigures],
    format: OutputFormat,
    out: &mut dyn Write,
) -> CliResult {
    let streams = live_streams(planes);
    match format {
        OutputFormat::Json => view::write_json(
            out,
            &Value::Array(streams.iter().map(LiveStream::json).collect()),
        )?,
        OutputFormat::Table if streams.is_empty() => {
            if planes.iter().any(|p| p.connected) {
                writeln!(
                    out,
                    "no live streams (an encoder publishes one over RTMP: rtmp://HOST:1935/app/name)"
                )?;
            } else {
                writeln!(out, "no live streams: no data plane is connected")?;
            }
        }
        OutputFormat::Table => {
            let mut table = Table::new(&[
                "NAME",
                "PUBLISHER",
                "UPTIME",
                "CODECS",
                "SIZE",
                "KBIT/S",
                "VIEWERS",
                "PER_CORE",
                "SKIPPED",
                "SLOW_DISC",
            ]);
            for s in &streams {
                table.row(s.row());
            }
            table.write_to(out)?;
        }
    }
    Ok(())
}
