//! The real command functions against a fake control plane.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use shoal_protocols::control::{
    ApiError, ApplyReport, Change, CliRequest, CliResponse, DataPlaneFigures, DataPlaneStatus,
    DiffEntry, DiffOp, ErrorCode, HelloReply, PlaneFigures, Product, Resource, ResourceKey,
    ResourceKind, StatusReport,
};
use shoal_protocols::figures::{CoreFigures, PoolClassFigures, StreamFigures};

use crate::args::OutputFormat;
use crate::client::ControlClient;
use crate::commands::{apply, device, get, import, stats, status, stream};
use crate::error::{CliError, Failure};
use crate::fake_plane::{is_cli, welcome, FakePlane};
use crate::socket::{ResolvedSocket, SocketSource, NOT_RUNNING_HINT};
use crate::testdir::TestDir;

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("UTF-8 output")
}

fn key(kind: ResourceKind, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        name: name.into(),
    }
}

/// An apply report that echoes the request's changes as a diff.
fn report_for(changes: &[Change], dry_run: bool, version: u64) -> ApplyReport {
    ApplyReport {
        version,
        dry_run,
        diff: changes
            .iter()
            .map(|c| DiffEntry {
                op: match c {
                    Change::Remove(_) => DiffOp::Remove,
                    _ => DiffOp::Add,
                },
                key: c.key(),
                detail: String::new(),
            })
            .collect(),
        acked_by: vec!["dp-node".into()],
        pending: false,
    }
}

fn status_report() -> StatusReport {
    let core = |core: u16, connections: u64| CoreFigures {
        core,
        connections,
        messages_in: 10 * connections,
        messages_out: 5,
        pools: vec![PoolClassFigures {
            buffer_bytes: 512,
            capacity: 16384,
            in_use: 3,
            ..PoolClassFigures::default()
        }],
        ..CoreFigures::default()
    };
    StatusReport {
        node: "cp-node".into(),
        software_version: "0.1.0".into(),
        uptime_ms: 312_000,
        desired_version: 5,
        counts: ResourceKind::ALL.iter().map(|k| (*k, 2)).collect(),
        data_planes: vec![DataPlaneStatus {
            node: "dp-node".into(),
            software_version: "0.1.0".into(),
            connected: true,
            cores: 2,
            applied_version: 5,
            last_error: None,
            figures: PlaneFigures {
                applied_version: 5,
                uptime_ms: 300_000,
                rss_bytes: 12 << 20,
                registry_devices: 2,
                cores: vec![core(0, 1), core(1, 4)],
            },
            figures_age_ms: 400,
        }],
    }
}

fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[test]
fn status_prints_the_planes_and_the_cores() {
    let plane = FakePlane::start(welcome(), |_| CliResponse::Status(status_report()));
    let mut client = plane.connect();
    assert!(is_cli(&plane.hello()));
    assert_eq!(client.server.node, "cp-node");

    let mut out = Vec::new();
    status::run(&mut client, OutputFormat::Table, &mut out).unwrap();
    let shown = text(out);
    let table = rows(&shown);
    assert!(
        table.contains(&vec![
            "cp-node", "0.1.0", "5m12s", "5", "2", "2", "2", "2", "2"
        ]),
        "{shown}"
    );
    assert!(
        table
            .iter()
            .any(|r| r.first() == Some(&"dp-node") && r.get(1) == Some(&"connected")),
        "{shown}"
    );
    assert!(
        table.contains(&vec!["dp-node", "1", "4", "40", "5", "3/16384"]),
        "{shown}"
    );

    let mut out = Vec::new();
    status::run(&mut client, OutputFormat::Json, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["control_plane"]["desired_version"], 5);
    assert_eq!(v["control_plane"]["counts"]["device"], 2);
    assert_eq!(v["data_planes"][0]["core_figures"][1]["connections"], 4);
    drop(client);
    assert_eq!(plane.join(), [CliRequest::Status, CliRequest::Status]);
}

const DOC: &str = r#"
[[listener]]
name = "meters"
protocol = "tcp"
bind = "127.0.0.1:7100"
identity = { kind = "login_frame" }
framing = { kind = "delimiter", delimiter = "\n" }

[[product]]
name = "meter"
"#;

#[test]
fn apply_dry_run_sends_upserts_and_prints_the_diff() {
    let plane = FakePlane::start(welcome(), |r| match r {
        CliRequest::Apply { changes, dry_run } => {
            CliResponse::Applied(report_for(changes, *dry_run, 3))
        }
        _ => CliResponse::Resources(Vec::new()),
    });
    let mut client = plane.connect();
    let resources = apply::parse_document(DOC).unwrap();
    let mut out = Vec::new();
    apply::run(
        &mut client,
        resources,
        true,
        false,
        OutputFormat::Table,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        text(out),
        "+ listener \"meters\"\n+ product \"meter\"\n\
         dry run: 2 changes, nothing applied (desired state version 3)\n"
    );
    drop(client);
    let requests = plane.join();
    let [CliRequest::Apply { changes, dry_run }] = &requests[..] else {
        panic!("one apply: {requests:?}");
    };
    assert!(dry_run);
    assert_eq!(
        changes.iter().map(Change::key).collect::<Vec<_>>(),
        [
            key(ResourceKind::Listener, "meters"),
            key(ResourceKind::Product, "meter")
        ]
    );
}

#[test]
fn apply_with_prune_removes_what_the_file_does_not_name() {
    let stored = |kind| match kind {
        ResourceKind::Product => vec![
            Resource::Product(Product {
                name: "meter".into(),
                description: String::new(),
                publish: vec![],
                subscribe: vec![],
            }),
            Resource::Product(Product {
                name: "old".into(),
                description: String::new(),
                publish: vec![],
                subscribe: vec![],
            }),
        ],
        _ => Vec::new(),
    };
    let plane = FakePlane::start(welcome(), move |r| match r {
        CliRequest::Get { kind, .. } => CliResponse::Resources(stored(*kind)),
        CliRequest::Apply { changes, dry_run } => {
            CliResponse::Applied(report_for(changes, *dry_run, 8))
        }
        _ => CliResponse::Resources(Vec::new()),
    });
    let mut client = plane.connect();
    let resources = apply::parse_document(DOC).unwrap();
    let mut out = Vec::new();
    apply::run(
        &mut client,
        resources,
        false,
        true,
        OutputFormat::Table,
        &mut out,
    )
    .unwrap();
    let shown = text(out);
    assert!(shown.contains("- product \"old\"\n"), "{shown}");
    assert!(
        shown.ends_with("applied version 8 (acked by dp-node)\n"),
        "{shown}"
    );
    drop(client);
    let requests = plane.join();
    // Products are fetched before listeners (dependents first).
    assert_eq!(
        requests[..2],
        [
            CliRequest::Get {
                kind: ResourceKind::Product,
                name: None
            },
            CliRequest::Get {
                kind: ResourceKind::Listener,
                name: None
            },
        ]
    );
    let Some(CliRequest::Apply { changes, .. }) = requests.last() else {
        panic!("an apply last: {requests:?}");
    };
    assert_eq!(
        changes.last(),
        Some(&Change::Remove(key(ResourceKind::Product, "old")))
    );
}

#[test]
fn a_nacked_apply_fails_with_exit_1_and_the_data_planes_message() {
    let plane = FakePlane::start(welcome(), |_| {
        CliResponse::Error(ApiError {
            code: ErrorCode::Nacked,
            message: "dp-node: core 0: listener \"meters\": address in use; nothing was changed"
                .into(),
        })
    });
    let mut client = plane.connect();
    let resources = apply::parse_document(DOC).unwrap();
    let mut out = Vec::new();
    let e = apply::run(
        &mut client,
        resources,
        false,
        false,
        OutputFormat::Table,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e.failure.exit_code(), 1);
    assert!(
        e.message.contains("address in use; nothing was changed"),
        "{e}"
    );
    assert!(out.is_empty());
}

#[test]
fn an_invalid_change_is_exit_2() {
    let plane = FakePlane::start(welcome(), |_| {
        CliResponse::Error(ApiError {
            code: ErrorCode::Invalid,
            message: "device \"m1\": product \"meter\" does not exist".into(),
        })
    });
    let mut client = plane.connect();
    let new = device::prepare("m1".into(), "meter".into(), Some("secret-123".into())).unwrap();
    let e = device::add(&mut client, new, OutputFormat::Table, &mut Vec::new()).unwrap_err();
    assert_eq!(e.failure, Failure::InvalidInput);
    assert_eq!(e.failure.exit_code(), 2);
}

#[test]
fn get_of_a_missing_resource_is_exit_3() {
    let plane = FakePlane::start(welcome(), |_| {
        CliResponse::Error(ApiError {
            code: ErrorCode::NotFound,
            message: "route \"nope\" does not exist".into(),
        })
    });
    let mut client = plane.connect();
    let e = get::run(
        &mut client,
        "route",
        Some("nope".into()),
        OutputFormat::Table,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e.failure.exit_code(), 3);
    assert_eq!(e.message, "route \"nope\" does not exist");
    drop(client);
    assert_eq!(
        plane.join(),
        [CliRequest::Get {
            kind: ResourceKind::Route,
            name: Some("nope".into())
        }]
    );
}

#[test]
fn device_add_prints_a_generated_secret_once() {
    let plane = FakePlane::start(welcome(), |r| match r {
        CliRequest::Apply { changes, .. } => CliResponse::Applied(report_for(changes, false, 2)),
        _ => CliResponse::Resources(Vec::new()),
    });
    let mut client = plane.connect();
    let new = device::prepare("m1".into(), "meter".into(), None).unwrap();
    let secret = new.generated_secret.clone().expect("a generated secret");
    let mut out = Vec::new();
    device::add(&mut client, new, OutputFormat::Json, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["secret"], secret.as_str());
    assert_eq!(v["diff"][0]["name"], "m1");
    drop(client);
    let requests = plane.join();
    let [CliRequest::Apply { changes, .. }] = &requests[..] else {
        panic!("one apply");
    };
    let [Change::Upsert(Resource::Device(d))] = &changes[..] else {
        panic!("one device upsert");
    };
    assert!(d.secret.matches("m1", secret.as_bytes()));
}

#[test]
fn a_protocol_version_mismatch_names_both_versions() {
    let plane = FakePlane::start(
        HelloReply::Welcome {
            protocol_version: 99,
            node: "cp".into(),
            software_version: "9".into(),
        },
        |_| CliResponse::Resources(Vec::new()),
    );
    let e = ControlClient::connect(&plane.socket).unwrap_err();
    assert_eq!(e.failure.exit_code(), 1);
    assert!(e.message.contains("version 1"), "{e}");
    assert!(e.message.contains("version 99"), "{e}");
}

#[test]
fn a_refused_hello_shows_the_reason() {
    let plane = FakePlane::start(
        HelloReply::Refused {
            protocol_version: 1,
            reason: "uid 1000 is not allowed (--allow-uid 1000)".into(),
        },
        |_| CliResponse::Resources(Vec::new()),
    );
    let e = ControlClient::connect(&plane.socket).unwrap_err();
    assert!(
        e.message.contains("refused this connection: uid 1000"),
        "{e}"
    );
}

#[test]
fn a_control_plane_that_does_not_answer_times_out() {
    let plane = FakePlane::start(welcome(), |_| {
        std::thread::sleep(Duration::from_millis(600));
        CliResponse::Status(status_report())
    });
    let stream = UnixStream::connect(&plane.socket.path).unwrap();
    let mut client = ControlClient::handshake(stream, Duration::from_millis(150)).unwrap();
    let e = status::run(&mut client, OutputFormat::Table, &mut Vec::new()).unwrap_err();
    assert_eq!(e.failure.exit_code(), 1);
    assert!(e.message.contains("did not answer within"), "{e}");
}

#[test]
fn an_absent_socket_says_so_and_hints() {
    let dir = TestDir::new("absent");
    let socket = ResolvedSocket {
        path: dir.path().join("control.sock"),
        source: SocketSource::Flag,
    };
    let e = ControlClient::connect(&socket).unwrap_err();
    assert_eq!(e.failure.exit_code(), 1);
    assert!(
        e.message.starts_with("cannot reach the control plane at "),
        "{e}"
    );
    assert!(e.message.contains("does not exist"), "{e}");
    assert!(e.message.ends_with(NOT_RUNNING_HINT), "{e}");
}

/// A CSV of `n` devices of product `meter`.
fn fleet_csv(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut csv = String::from("id,product,secret\n# the fleet\n");
    for i in 0..n {
        csv.push_str(&format!("meter-{i},meter,secret-{i:06}\n"));
    }
    let path = dir.join("fleet.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn meter_product() -> Resource {
    Resource::Product(Product {
        name: "meter".into(),
        description: String::new(),
        publish: vec![],
        subscribe: vec![],
    })
}

#[test]
fn import_sends_batches_and_sums_them_up() {
    let dir = TestDir::new("import");
    let file = fleet_csv(dir.path(), 25);
    let plane = FakePlane::start(welcome(), |r| match r {
        CliRequest::Get { .. } => CliResponse::Resources(vec![meter_product()]),
        CliRequest::Apply { changes, .. } => CliResponse::Applied(report_for(changes, false, 4)),
        _ => CliResponse::Resources(Vec::new()),
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    import::run(&mut client, &file, 10, OutputFormat::Table, &mut out).unwrap();
    let shown = text(out);
    assert!(shown.starts_with("imported 25 devices from "), "{shown}");
    assert!(
        shown.contains("25 added, 0 changed, 0 unchanged"),
        "{shown}"
    );
    assert!(
        shown.ends_with("applied version 4 (acked by dp-node)\n"),
        "{shown}"
    );
    drop(client);
    let requests = plane.join();
    let sizes: Vec<usize> = requests
        .iter()
        .filter_map(|r| match r {
            CliRequest::Apply { changes, dry_run } => {
                assert!(!dry_run);
                Some(changes.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [10, 10, 5]);
}

#[test]
fn a_failing_batch_stops_the_import_and_says_what_stays() {
    let dir = TestDir::new("import-fail");
    let file = fleet_csv(dir.path(), 25);
    let mut applies = 0;
    let plane = FakePlane::start(welcome(), move |r| match r {
        CliRequest::Get { .. } => CliResponse::Resources(vec![meter_product()]),
        CliRequest::Apply { changes, .. } => {
            applies += 1;
            if applies == 2 {
                CliResponse::Error(ApiError {
                    code: ErrorCode::Timeout,
                    message: "dp-node did not answer in 30s; nothing was changed".into(),
                })
            } else {
                CliResponse::Applied(report_for(changes, false, 4))
            }
        }
        _ => CliResponse::Resources(Vec::new()),
    });
    let mut client = plane.connect();
    let e: CliError =
        import::run(&mut client, &file, 10, OutputFormat::Table, &mut Vec::new()).unwrap_err();
    assert_eq!(e.failure.exit_code(), 1);
    // Lines: header 1, comment 2, devices from line 3; batch 2 is 13-22.
    assert!(
        e.message
            .starts_with("batch 2 (lines 13-22) was refused: dp-node did not answer"),
        "{e}"
    );
    assert!(
        e.message
            .contains("10 devices from the earlier batches were imported and stay imported"),
        "{e}"
    );
    drop(client);
    let applies = plane
        .join()
        .iter()
        .filter(|r| matches!(r, CliRequest::Apply { .. }))
        .count();
    assert_eq!(applies, 2);
}

#[test]
fn a_bad_line_refuses_the_file_before_anything_is_sent() {
    let dir = TestDir::new("import-bad");
    let file = dir.path().join("fleet.csv");
    std::fs::write(&file, "a,meter,secret-001\nb,pump,secret-002\n").unwrap();
    let plane = FakePlane::start(welcome(), |_| CliResponse::Resources(vec![meter_product()]));
    let mut client = plane.connect();
    let e = import::run(&mut client, &file, 10, OutputFormat::Table, &mut Vec::new()).unwrap_err();
    assert_eq!(e.failure.exit_code(), 2);
    assert_eq!(
        e.message,
        format!(
            "{}:2: product \"pump\" does not exist (add it with: shoalctl product add pump)",
            file.display()
        )
    );
    drop(client);
    assert!(plane
        .join()
        .iter()
        .all(|r| !matches!(r, CliRequest::Apply { .. })));
}

#[test]
fn stats_prints_one_table_per_data_plane() {
    let figures = DataPlaneFigures {
        node: "dp-node".into(),
        connected: true,
        figures: status_report().data_planes[0].figures.clone(),
        figures_age_ms: 300,
    };
    let plane = FakePlane::start(welcome(), move |_| {
        CliResponse::Figures(vec![figures.clone()])
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    let stop = AtomicBool::new(false);
    stats::run(&mut client, None, &stop, OutputFormat::Table, &mut out).unwrap();
    let shown = text(out);
    assert!(
        shown.starts_with("data plane dp-node (connected, version 5"),
        "{shown}"
    );
    let table = rows(&shown);
    assert_eq!(table[1][..4], ["CORE", "CONNS", "MSGS_IN", "MSGS_OUT"]);
    assert_eq!(table[3][..4], ["1", "4", "40", "5"]);
}

/// One data plane with two cores: `live/cam` published to core 0 with
/// viewers on both, `live/quiet` mirrored on core 1 only (its publisher
/// just left).
fn stream_figures(connected: bool) -> DataPlaneFigures {
    let origin = StreamFigures {
        name: "live/cam".into(),
        core: 0,
        publisher: Some("10.0.0.9:50412".into()),
        publishing_secs: 312,
        video_codec: "avc".into(),
        audio_codec: "aac".into(),
        width: 1280,
        height: 720,
        bitrate_kbps: 2500,
        viewers: 5,
        skipped_tags: 3,
        slow_disconnects: 1,
        ..StreamFigures::default()
    };
    let mirror = StreamFigures {
        core: 1,
        publisher: None,
        publishing_secs: 0,
        viewers: 7,
        skipped_tags: 2,
        slow_disconnects: 0,
        ..origin.clone()
    };
    let quiet = StreamFigures {
        name: "live/quiet".into(),
        core: 1,
        ..StreamFigures::default()
    };
    DataPlaneFigures {
        node: "dp-node".into(),
        connected,
        figures: PlaneFigures {
            cores: vec![
                CoreFigures {
                    core: 1,
                    streams: vec![mirror, quiet],
                    ..CoreFigures::default()
                },
                CoreFigures {
                    core: 0,
                    streams: vec![origin],
                    ..CoreFigures::default()
                },
            ],
            ..PlaneFigures::default()
        },
        figures_age_ms: 200,
    }
}

#[test]
fn stream_list_folds_every_core_into_one_row() {
    let figures = stream_figures(true);
    let plane = FakePlane::start(welcome(), move |_| {
        CliResponse::Figures(vec![figures.clone()])
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    stream::list(&mut client, OutputFormat::Table, &mut out).unwrap();
    let shown = text(out);
    let table = rows(&shown);
    assert_eq!(
        table[0],
        [
            "NAME",
            "PUBLISHER",
            "UPTIME",
            "CODECS",
            "SIZE",
            "KBIT/S",
            "VIEWERS",
            "PER_CORE",
            "SKIPPED",
            "SLOW_DISC"
        ],
        "{shown}"
    );
    assert_eq!(
        table[1],
        [
            "live/cam",
            "10.0.0.9:50412",
            "5m12s",
            "avc/aac",
            "1280x720",
            "2500",
            "12",
            "5+7",
            "5",
            "1"
        ],
        "{shown}"
    );
    assert_eq!(
        table[2],
        ["live/quiet", "-", "-", "-/-", "-", "0", "0", "0", "0", "0"],
        "{shown}"
    );
    drop(client);
    assert_eq!(plane.join(), [CliRequest::Figures]);
}

#[test]
fn stream_list_as_json() {
    let figures = stream_figures(true);
    let plane = FakePlane::start(welcome(), move |_| {
        CliResponse::Figures(vec![figures.clone()])
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    stream::list(&mut client, OutputFormat::Json, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["name"], "live/cam");
    assert_eq!(v[0]["publisher"], "10.0.0.9:50412");
    assert_eq!(v[0]["publisher_node"], "dp-node");
    assert_eq!(v[0]["viewers"], 12);
    assert_eq!(
        v[0]["viewers_per_core"],
        serde_json::json!([
            {"node": "dp-node", "core": 0, "viewers": 5},
            {"node": "dp-node", "core": 1, "viewers": 7}
        ])
    );
    assert_eq!(v[1]["name"], "live/quiet");
    assert_eq!(v[1]["publisher"], serde_json::Value::Null);
}

#[test]
fn an_empty_stream_list_says_so() {
    let plane = FakePlane::start(welcome(), |_| {
        CliResponse::Figures(vec![DataPlaneFigures {
            node: "dp-node".into(),
            connected: true,
            figures: PlaneFigures::default(),
            figures_age_ms: 0,
        }])
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    stream::list(&mut client, OutputFormat::Table, &mut out).unwrap();
    assert!(text(out).starts_with("no live streams ("));
    // Streams of a data plane that is gone are not live any more.
    let mut out = Vec::new();
    stream::print_list(&[stream_figures(false)], OutputFormat::Table, &mut out).unwrap();
    assert_eq!(text(out), "no live streams: no data plane is connected\n");
    let mut out = Vec::new();
    stream::print_list(&[], OutputFormat::Json, &mut out).unwrap();
    assert_eq!(text(out), "[]\n");
}

#[test]
fn stream_kick_says_whether_a_publisher_ended() {
    let plane = FakePlane::start(welcome(), |r| match r {
        CliRequest::KickStream { stream } if stream == "live/cam" => {
            CliResponse::StreamKicked { publishers: 1 }
        }
        _ => CliResponse::StreamKicked { publishers: 0 },
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    stream::kick(
        &mut client,
        "live/cam".into(),
        OutputFormat::Table,
        &mut out,
    )
    .unwrap();
    stream::kick(&mut client, "live/x".into(), OutputFormat::Table, &mut out).unwrap();
    stream::kick(&mut client, "live/x".into(), OutputFormat::Json, &mut out).unwrap();
    let shown = text(out);
    assert!(
        shown.starts_with("kicked the publisher of live/cam\nlive/x has no publisher\n{"),
        "{shown}"
    );
    assert!(shown.contains("\"publishers_kicked\": 0"), "{shown}");
    drop(client);
    assert_eq!(
        plane.join(),
        [
            CliRequest::KickStream {
                stream: "live/cam".into()
            },
            CliRequest::KickStream {
                stream: "live/x".into()
            },
            CliRequest::KickStream {
                stream: "live/x".into()
            }
        ]
    );
}

#[test]
fn stream_kick_takes_one_stream_name() {
    assert!(stream::check_stream_name("live/cam").is_ok());
    for bad in ["live", "live/*", "/cam", "live/a/b"] {
        let e = stream::check_stream_name(bad).unwrap_err();
        assert_eq!(e.failure, Failure::InvalidInput, "{bad}");
    }
}

/// A million devices through the real import path against the fake
/// control plane. Slow in a debug build; to see the rate:
/// `cargo test --release -p shoal-cli -- --ignored --nocapture import_a_million`.
#[test]
#[ignore = "a million devices; run by hand with --release"]
fn import_a_million_devices() {
    use std::io::Write as _;
    let dir = TestDir::new("import-million");
    let path = dir.path().join("fleet.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(file, "id,product,secret").unwrap();
    for i in 0..1_000_000u32 {
        writeln!(file, "device-{i:07},meter,secret-{i:010}").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let plane = FakePlane::start(welcome(), |r| match r {
        CliRequest::Get { .. } => CliResponse::Resources(vec![meter_product()]),
        CliRequest::Apply { changes, .. } => CliResponse::Applied(report_for(changes, false, 2)),
        _ => CliResponse::Resources(Vec::new()),
    });
    let mut client = plane.connect();
    let mut out = Vec::new();
    import::run(&mut client, &path, 10_000, OutputFormat::Table, &mut out).unwrap();
    let shown = text(out);
    println!("{shown}");
    assert!(shown.starts_with("imported 1000000 devices"), "{shown}");
}
