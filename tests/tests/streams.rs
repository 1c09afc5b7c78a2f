//! Live streams with real tools: `ffmpeg` publishes over RTMP; `ffmpeg`,
//! `ffprobe`, `curl` and a Python `websockets` client play over HTTP-FLV,
//! WebSocket-FLV and RTMP, on both cores, and decode every frame; a
//! publisher that stops ends its viewers cleanly; a second publisher and
//! unknown streams are refused; a viewer that never reads is cut off
//! while a fast one keeps every frame, and the pools come back; stream
//! rules with publish keys on `device_secret` listeners.

use std::time::{Duration, Instant};

use shoal_tests::{
    curl_viewer, has_field, http_status, publish_stream, response_header, stream_config,
    stream_settings, ws_flv_client, ws_flv_summary, Config, Dataplane, Listener, Program, SlowEnd,
    SlowViewer, Stats, StreamAddr, Viewer, ViewerTool, WAIT,
};

/// Video frames per second of the published test stream.
const FPS: usize = 25;

/// How long a viewer may take to end after its stream did.
const END_GRACE: Duration = Duration::from_secs(5);

/// Bound on a whole stream's run, from its start to its last viewer.
const STREAM_RUN: Duration = Duration::from_secs(40);

/// Most viewers a test starts to get at least one on every core.
const MAX_SPREAD: usize = 12;

/// Waits for `stream` to go live (its `stream live` line).
fn wait_live(dp: &Dataplane, stream: &str) {
    dp.wait_for_line(": stream live ", WAIT, |l| has_field(l, "stream", stream));
}

/// Waits for stats in which `stream_viewers` sums to `total`; returns the
/// figure of every core.
fn viewers_per_core(dp: &Dataplane, total: u64) -> Vec<u64> {
    let stats = dp.wait_for_stats(&format!("{total} stream viewers"), WAIT, |s| {
        s.sum("stream_viewers") == total
    });
    stats
        .cores
        .iter()
        .map(|c| c.get("stream_viewers"))
        .collect()
}

/// Waits until no connection and no viewer is left.
fn wait_all_gone(dp: &Dataplane) -> Stats {
    dp.wait_for_stats("every connection and viewer gone", WAIT * 2, |s| {
        s.sum("conns") == 0 && s.sum("stream_viewers") == 0
    })
}

/// The video frames a viewer that joined within a second or two of a
/// `seconds`-long stream gets at least.
fn most_of(seconds: u32) -> usize {
    FPS * (seconds as usize).saturating_sub(3)
}

// ----- 1. Many viewers on both cores, HTTP-FLV and RTMP ----------------------

#[test]
fn viewers_on_both_cores_decode_every_frame_over_http_flv_and_rtmp() {
    const SECONDS: u32 = 6;
    let dp = Dataplane::start(stream_config());
    let addr = StreamAddr::of(&dp, "live/many");
    let publisher = publish_stream("publisher", &addr.rtmp(), SECONDS);
    wait_live(&dp, "live/many");

    // HTTP-FLV and RTMP, ffprobe and ffmpeg, in turn, until every core
    // serves some (SO_REUSEPORT spreads connections by their addresses).
    let mut viewers: Vec<Viewer> = Vec::new();
    let mut wanted = 4;
    loop {
        while viewers.len() < wanted {
            let i = viewers.len();
            let (proto, url) = if i % 2 == 0 {
                ("http", addr.http())
            } else {
                ("rtmp", addr.rtmp())
            };
            let tool = if (i / 2) % 2 == 0 {
                ViewerTool::Ffprobe
            } else {
                ViewerTool::Ffmpeg
            };
            let name = format!("viewer{i}-{proto}-{tool:?}");
            viewers.push(Viewer::start(&name, tool, &url));
        }
        let per_core = viewers_per_core(&dp, viewers.len() as u64);
        if per_core.iter().all(|n| *n > 0) {
            eprintln!("{} viewers per core: {per_core:?}", viewers.len());
            break;
        }
        assert!(
            viewers.len() < MAX_SPREAD,
            "{} viewers all on one core: {per_core:?}",
            viewers.len()
        );
        wanted += 1;
    }
    let http_viewers = viewers.len().div_ceil(2);
    let lines = dp.wait_for_logs(r#"kind="http-flv""#, http_viewers, WAIT);
    assert_eq!(lines.len(), http_viewers, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("viewer started") && has_field(l, "stream", "live/many")),
        "{lines:#?}"
    );

    publisher.wait(STREAM_RUN).assert_clean();
    for viewer in &viewers {
        viewer.finish_valid(STREAM_RUN, most_of(SECONDS));
    }
    dp.wait_for_log("stream ended", WAIT);
    let stats = wait_all_gone(&dp);
    for name in ["mesh_drops", "frame_errors", "stream_skipped"] {
        assert_eq!(stats.sum(name), 0, "{name}:\n{stats}");
    }
    assert_eq!(stats.sum("streams_published"), 1, "{stats}");
}

// ----- 2. WebSocket-FLV --------------------------------------------------------

#[test]
fn a_websocket_flv_viewer_gets_the_file_header_then_one_whole_tag_per_frame() {
    let dp = Dataplane::start(stream_config());
    let addr = StreamAddr::of(&dp, "live/ws");
    let publisher = publish_stream("publisher", &addr.rtmp(), 5);
    wait_live(&dp, "live/ws");

    let client = ws_flv_client("ws-flv", &addr.ws(), Some(150));
    let summary = ws_flv_summary(&client.wait(STREAM_RUN));
    eprintln!("{summary}");
    let header = &summary["header"];
    assert_eq!(header["version"], 1, "{summary}");
    assert_eq!(header["audio"], true, "{summary}");
    assert_eq!(header["video"], true, "{summary}");
    let tags = &summary["tags"];
    assert!(tags["script"].as_u64() >= Some(1), "onMetaData: {summary}");
    assert!(tags["video"].as_u64() > Some(10), "{summary}");
    assert!(tags["audio"].as_u64() > Some(10), "{summary}");
    assert_eq!(summary["video_codec_id"], 7, "H.264: {summary}");
    assert_eq!(summary["video_sequence_header"], true, "{summary}");
    assert_eq!(summary["audio_sequence_header"], true, "{summary}");
    assert_eq!(summary["first_video_keyframe"], true, "{summary}");
    assert_eq!(summary["closed_by"], "client", "{summary}");
    let line = dp.wait_for_line("viewer started", WAIT, |l| {
        has_field(l, "kind", "websocket-flv")
    });
    assert!(has_field(&line, "stream", "live/ws"), "{line}");

    // The viewer's close left the stream going.
    publisher.wait(STREAM_RUN).assert_clean();
    dp.wait_for_log("stream ended", WAIT);
    wait_all_gone(&dp);
}

// ----- 3. A publisher that stops ends its viewers cleanly -------------------

#[test]
fn when_the_publisher_stops_every_viewer_ends_cleanly_and_soon() {
    const SECONDS: u32 = 4;
    let dp = Dataplane::start(stream_config());
    let addr = StreamAddr::of(&dp, "live/end");
    let publisher = publish_stream("publisher", &addr.rtmp(), SECONDS);
    wait_live(&dp, "live/end");

    let http = Viewer::start("http-ffmpeg", ViewerTool::Ffmpeg, &addr.http());
    let rtmp = Viewer::start("rtmp-ffmpeg", ViewerTool::Ffmpeg, &addr.rtmp());
    let curl = curl_viewer("http-curl", &addr.http());
    let ws = ws_flv_client("ws-flv", &addr.ws(), None);
    viewers_per_core(&dp, 4);

    let published = publisher.wait(STREAM_RUN);
    published.assert_clean();
    let soon = |end: Instant, who: &str| {
        let after = end.saturating_duration_since(published.at);
        assert!(
            after <= END_GRACE,
            "{who} ended {after:?} after the publisher"
        );
    };
    for viewer in [&http, &rtmp] {
        let finished = viewer.finish_valid(END_GRACE * 2, most_of(SECONDS));
        soon(finished.at, &finished.name);
    }

    // curl exits 0 only on the terminating chunk of a chunked body.
    let fetched = curl.wait(END_GRACE * 2);
    fetched.assert_clean();
    soon(fetched.at, "curl");
    let head = &fetched.stdout;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for (name, value) in [
        ("Content-Type", "video/x-flv"),
        ("Transfer-Encoding", "chunked"),
        ("Access-Control-Allow-Origin", "*"),
    ] {
        assert_eq!(response_header(head, name), Some(value), "{head}");
    }

    let closed = ws.wait(END_GRACE * 2);
    soon(closed.at, "the WebSocket client");
    let summary = ws_flv_summary(&closed);
    assert_eq!(summary["closed_by"], "server", "{summary}");
    assert_eq!(summary["close_code"], 1000, "{summary}");
    assert_eq!(summary["first_video_keyframe"], true, "{summary}");

    let ended = dp.wait_for_log("stream ended", WAIT);
    assert!(has_field(&ended, "stream", "live/end"), "{ended}");
    wait_all_gone(&dp);
}

// ----- 4. Refusals: a second publisher, unknown streams ---------------------

#[test]
fn a_second_publisher_is_refused_and_unknown_streams_are_not_found() {
    const SECONDS: u32 = 6;
    let dp = Dataplane::start(stream_config());
    let addr = StreamAddr::of(&dp, "live/one");
    let first = publish_stream("first", &addr.rtmp(), SECONDS);
    wait_live(&dp, "live/one");
    let http = Viewer::start("http-ffmpeg", ViewerTool::Ffmpeg, &addr.http());
    let rtmp = Viewer::start("rtmp-ffprobe", ViewerTool::Ffprobe, &addr.rtmp());
    viewers_per_core(&dp, 2);

    let second = publish_stream("second", &addr.rtmp(), 2).wait(WAIT * 3);
    assert!(!second.status.success(), "{second:?}");
    assert!(
        second.stderr.contains("already has a publisher"),
        "{second:?}"
    );
    let refused = dp.wait_for_log("publish refused", WAIT);
    assert!(has_field(&refused, "stream", "live/one"), "{refused}");
    assert!(!first.has_exited(), "the first publisher left");

    // Streams nobody publishes.
    let unknown = StreamAddr::of(&dp, "live/nobody");
    assert_eq!(http_status(&unknown.http()), 404);
    let play = Program::spawn(
        "rtmp-unknown",
        "ffprobe",
        &["-v".into(), "error".into(), unknown.rtmp()],
    )
    .wait(WAIT * 2);
    assert!(!play.status.success(), "{play:?}");
    assert!(play.stderr.contains("has no publisher"), "{play:?}");

    // The first publisher and its viewers went on undisturbed.
    first.wait(STREAM_RUN).assert_clean();
    http.finish_valid(STREAM_RUN, most_of(SECONDS));
    rtmp.finish_valid(STREAM_RUN, most_of(SECONDS));
    assert_eq!(dp.logs_matching("publisher started").len(), 1);
    let stats = wait_all_gone(&dp);
    assert_eq!(stats.sum("streams_published"), 1, "{stats}");
}

// ----- 5. A slow viewer -------------------------------------------------------

/// Small viewer queues: 32 KiB (the test stream's keyframes have ~11 KiB),
/// one second of media, two seconds of lag.
fn small_queues() -> Config {
    stream_config().raw_toml(&stream_settings(&[
        ("viewer_queue_bytes", "32768"),
        ("max_tag_bytes", "32768"),
        ("viewer_queue_duration", r#""1s""#),
        ("max_viewer_lag", r#""2s""#),
    ]))
}

/// A [`SlowViewer`] of `addr`, once the data plane has started it.
fn slow_viewer(dp: &Dataplane, addr: &StreamAddr) -> SlowViewer {
    let slow = SlowViewer::request(addr.http_port, &addr.path());
    let peer = slow.local.to_string();
    dp.wait_for_line("viewer started", WAIT, |l| has_field(l, "peer", &peer));
    slow
}

/// Buffers in use per core and pool class.
fn in_use(stats: &Stats) -> Vec<Vec<u64>> {
    stats
        .cores
        .iter()
        .map(|c| c.pools.iter().map(|p| p.in_use).collect())
        .collect()
}

#[test]
fn a_viewer_that_never_reads_is_cut_off_while_a_fast_one_decodes_every_frame() {
    const SECONDS: u32 = 12;
    let dp = Dataplane::start(small_queues());
    let baseline = dp.stats();
    let addr = StreamAddr::of(&dp, "live/slow");
    let publisher = publish_stream("publisher", &addr.rtmp(), SECONDS);
    wait_live(&dp, "live/slow");
    let mut slow = slow_viewer(&dp, &addr);
    let fast = Viewer::start("fast", ViewerTool::Ffmpeg, &addr.http());

    // Well before the stream ends (else the viewer would end with it).
    let stats = dp.wait_for_stats("a slow viewer disconnected", WAIT * 2, |s| {
        s.sum("stream_slow_disconnects") >= 1
    });
    assert!(stats.sum("stream_skipped") > 0, "{stats}");
    assert!(!publisher.has_exited(), "the stream ended first");

    // The slow viewer's connection was cut: what the socket buffers held,
    // then its end, and no terminating chunk.
    let (got, end) = slow.read_to_end(WAIT);
    eprintln!("the slow viewer read {} bytes, then {end:?}", got.len());
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        &got[..got.len().min(64)]
    );
    assert!(
        !got.ends_with(b"\r\n0\r\n\r\n"),
        "ended as if the stream had"
    );
    assert!(matches!(end, SlowEnd::Eof | SlowEnd::Reset));

    publisher.wait(STREAM_RUN).assert_clean();
    fast.finish_valid(STREAM_RUN, most_of(SECONDS));

    // Every buffer is back in its pool.
    let after = wait_all_gone(&dp);
    eprintln!("before:\n{baseline}after:\n{after}");
    assert!(after.sum("stream_slow_disconnects") >= 1, "{after}");
    for name in ["mesh_drops", "frame_errors"] {
        assert_eq!(after.sum(name), 0, "{name}:\n{after}");
    }
    let high_water: u64 = after
        .cores
        .iter()
        .flat_map(|c| c.pools.iter().map(|p| p.high_water))
        .sum();
    assert!(high_water > 0, "the stream never used the pools:\n{after}");
    assert_eq!(
        in_use(&after),
        in_use(&baseline),
        "buffers in use:\n{after}"
    );
}

#[test]
fn one_slow_viewer_is_one_slow_disconnect() {
    let dp = Dataplane::start(small_queues());
    let addr = StreamAddr::of(&dp, "live/once");
    let publisher = publish_stream("publisher", &addr.rtmp(), 10);
    wait_live(&dp, "live/once");
    let mut slow = slow_viewer(&dp, &addr);
    dp.wait_for_stats("a slow viewer disconnected", WAIT * 2, |s| {
        s.sum("stream_slow_disconnects") >= 1
    });
    slow.read_to_end(WAIT);
    let after = dp.wait_for_stats("the slow viewer gone", WAIT, |s| {
        s.sum("stream_viewers") == 0
    });
    assert_eq!(after.sum("stream_slow_disconnects"), 1, "{after}");
    publisher.kill();
}

/// A viewer whose queue holds more than `viewer_queue_duration` of media
/// is behind, however few bytes that is; after `max_viewer_lag` of it, it
/// is cut off.
#[test]
fn a_viewer_over_its_queue_duration_is_cut_off_after_max_viewer_lag() {
    let config = stream_config().raw_toml(&stream_settings(&[
        ("viewer_queue_bytes", "262144"),
        ("max_tag_bytes", "131072"),
        ("viewer_queue_duration", r#""1s""#),
        ("max_viewer_lag", r#""2s""#),
    ]));
    let dp = Dataplane::start(config);
    let addr = StreamAddr::of(&dp, "live/lag");
    let publisher = publish_stream("publisher", &addr.rtmp(), 12);
    wait_live(&dp, "live/lag");
    let mut slow = slow_viewer(&dp, &addr);
    // About a second to fill the socket buffers, one of queue, two of lag.
    dp.wait_for_stats("a slow viewer disconnected", WAIT * 2, |s| {
        s.sum("stream_slow_disconnects") >= 1
    });
    slow.read_to_end(WAIT);
    publisher.kill();
}

// ----- 6. Stream rules on device_secret listeners ---------------------------

#[test]
fn stream_rules_want_the_publish_key_and_cover_what_is_served() {
    let config = Config::new()
        .listener(Listener::rtmp("rtmp", 0).auth("device_secret"))
        .listener(Listener::http("http", 1).auth("device_secret"))
        .raw_toml("[[stream]]\nname = \"live/*\"\npublish_key = \"k1\"\n");
    let dp = Dataplane::start(config);
    let live = StreamAddr::of(&dp, "live/x");

    for (query, stream, why) in [
        ("live/x?key=bad", "live/x", "wrong publish key"),
        ("live/x", "live/x", "needs a publish key"),
        ("other/x?key=k1", "other/x", "no stream rule covers other/x"),
    ] {
        let url = format!("rtmp://127.0.0.1:{}/{query}", live.rtmp_port);
        let refused = publish_stream(query, &url, 2).wait(WAIT * 3);
        assert!(!refused.status.success(), "{refused:?}");
        assert!(refused.stderr.contains(why), "{refused:?}");
        let line = dp.wait_for_line("publish refused", WAIT, |l| l.contains(why));
        assert!(has_field(&line, "stream", stream), "{line}");
    }
    let stats = dp.stats();
    assert_eq!(stats.sum("streams_published"), 0, "{stats}");

    const SECONDS: u32 = 4;
    let url = format!("{}?key=k1", live.rtmp());
    let publisher = publish_stream("keyed", &url, SECONDS);
    let started = dp.wait_for_log("publisher started", WAIT);
    assert!(has_field(&started, "stream", "live/x"), "{started}");
    // The rule lets viewers play live/x; no rule covers other/x.
    let viewer = Viewer::start("viewer", ViewerTool::Ffprobe, &live.http());
    let other = StreamAddr::of(&dp, "other/x");
    assert_eq!(http_status(&other.http()), 403);
    publisher.wait(STREAM_RUN).assert_clean();
    viewer.finish_valid(STREAM_RUN, most_of(SECONDS));
    let stats = wait_all_gone(&dp);
    assert_eq!(stats.sum("streams_published"), 1, "{stats}");
}
