//! Runs the real `shoal-bench flv-fanout` briefly against a real
//! `shoal-dataplane` (an RTMP and an HTTP listener on free loopback ports),
//! with HTTP-FLV and with RTMP viewers, and checks from the JSON report that
//! every viewer played the whole measured window. Not a speed test: a few
//! viewers of a 500 kbit/s stream for a second.
//!
//! The data plane binary is taken from the same target directory as this
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    assert_zero, count, free_tcp_port, free_tcp_ports, listener_toml, loopback, run_failing,
    run_json, Dataplane,
};

/// No bench run outlives this.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A data plane with anonymous RTMP and HTTP listeners, and their
/// addresses.
struct Server {
    dp: Dataplane,
    rtmp: String,
    http: String,
}

impl Server {
    fn start() -> Self {
        let [rtmp_port, http_port] = free_tcp_ports();
        let http_settings =
            "max_connections = 1000\nmax_frame_bytes = 65000\nidle_timeout = \"5m\"";
        let dp = Dataplane::start(
            "flv-smoke",
            &[
                listener_toml("rtmp-smoke", "rtmp", rtmp_port, "max_connections = 1000"),
                listener_toml("http-smoke", "http", http_port, http_settings),
            ],
        );
        Self {
            dp,
            rtmp: loopback(rtmp_port),
            http: loopback(http_port),
        }
    }
}

/// A short fan-out run with 4 viewers (2 processes) of stream `name`.
fn fanout(server: &Server, proto: &str, name: &str) -> Value {
    let report = run_json(
        &format!(
            "flv-fanout --rtmp-target {} --http-target {} --proto {proto} --stream {name} \
             --viewers 4 --procs 2 --threads 1 --bitrate 500k --gop 1s --preroll 1200ms \
             --warmup 300ms --duration 1s --drain 500ms --source-addrs 127.0.0.1-127.0.0.3 \
             --server-pid {} --json",
            server.rtmp,
            server.http,
            server.dp.pid()
        ),
        RUN_LIMIT,
    );
    assert_eq!(report["scenario"], "flv-fanout");
    assert_eq!(report["load"]["proto"], proto);
    let connect = &report["connect"];
    assert_eq!(connect["established"], 4, "{report}");
    assert_eq!(connect["started"], 4, "{report}");
    assert!(count(&report, "/delivered/tags") > 0, "{report}");
    assert!(count(&report, "/delivered/bytes") > 0, "{report}");
    // Tags stamped in the window arrived and were timed (on a loaded
    // machine a few may still be on their way when the drain ends).
    let expected = count(&report, "/delivered/expected_probed_tags");
    let probed = count(&report, "/delivered/probed_tags");
    assert!(probed > 0 && probed <= expected, "{report}");
    assert_eq!(report["latency_us"]["samples"].as_u64(), Some(probed));
    assert_zero(
        &report,
        &[
            "/connect/failures/count",
            "/skipped_tags",
            "/out_of_order_tags",
            "/malformed_tags",
            "/first_video_not_keyframe",
            "/no_video",
            "/disconnected_by_server",
        ],
    );
    assert!(report["publisher"]["error"].is_null(), "{report}");
    assert!(report["server"]["cpu_s"].as_f64().is_some(), "{report}");
    assert!(count(&report, "/server/rss_end_kib") > 0, "{report}");
    report
}

#[test]
fn flv_fanout_against_the_data_plane() {
    let server = Server::start();
    fanout(&server, "http-flv", "smoke-http");
    fanout(&server, "rtmp", "smoke-rtmp");

    // Viewers on a port nothing listens on: counted, and the run fails.
    let nowhere = loopback(free_tcp_port());
    let stderr = run_failing(
        &format!(
            "flv-fanout --rtmp-target {} --http-target {nowhere} --stream smoke-refused \
             --viewers 3 --preroll 100ms --server-pid {}",
            server.rtmp,
            server.dp.pid()
        ),
        RUN_LIMIT,
    );
    assert!(stderr.contains("no viewer could play"), "{stderr}");
    assert!(
        stderr.contains("ConnectionRefused") || stderr.contains("refused"),
        "{stderr}"
    );
}
