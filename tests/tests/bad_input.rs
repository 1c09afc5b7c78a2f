//! Bad input: a bad frame closes only its own connection; a bad config
//! stops the start with a message that says where.

use std::net::TcpListener;
use std::time::Duration;

use shoal_tests::{
    has_field, run_dataplane, Config, Dataplane, Listener, Route, Stats, TcpDevice, CORES, WAIT,
};

/// A length-field listener and a newline-delimited one, both echoing every
/// frame back to its sender.
fn echo_config() -> Config {
    Config::new()
        .listener(Listener::tcp("tcp", 0).max_frame_bytes(256))
        .listener(
            Listener::tcp("lines", 1)
                .max_frame_bytes(64)
                .framing(r#"{ kind = "delimiter", delimiter = "\n" }"#),
        )
        .route(Route::echo())
}

/// Device `id` on the length-field listener, its echo checked.
fn echo_device(dp: &Dataplane, id: &str) -> TcpDevice {
    let mut d = TcpDevice::login(dp, id);
    d.assert_echo(b"ping");
    d
}

/// A data plane on [`echo_config`] with device `good` online.
fn start_with_good_device() -> (Dataplane, TcpDevice) {
    let dp = Dataplane::start(echo_config());
    let good = echo_device(&dp, "good");
    (dp, good)
}

/// Waits for `device` to be closed and for the warning that says it was
/// for a bad frame, found by its log field `key` being `value`; returns
/// the warning.
fn expect_closed_for_bad_frame(
    dp: &Dataplane,
    device: &mut TcpDevice,
    key: &str,
    value: &str,
) -> String {
    device.expect_closed(WAIT);
    let line = dp.wait_for_line("closing connection: bad frame:", WAIT, |l| {
        has_field(l, key, value)
    });
    assert!(line.contains(" WARN "), "{line}");
    line
}

/// `good` keeps working while the others are closed for bad frames: it is
/// the only connection left, and the stats count exactly `errors` bad
/// frames.
fn assert_only_bad_connections_closed(dp: &Dataplane, good: &mut TcpDevice, errors: u64) -> Stats {
    for i in 0..5 {
        good.assert_echo(format!("still here {i}").as_bytes());
    }
    let stats = dp.wait_for_sum("frame_errors", errors);
    assert_eq!(stats.sum("conns"), 1, "{stats}");
    stats
}

#[test]
fn an_oversized_frame_closes_only_that_connection() {
    let (dp, mut good) = start_with_good_device();
    let mut bad = echo_device(&dp, "bad");

    // A header declaring 4096 bytes on a listener whose limit is 256: the
    // data plane must refuse it from the header alone.
    bad.send_raw(&4096u16.to_be_bytes());
    bad.send_raw(&[0x55; 100]);
    let line = expect_closed_for_bad_frame(&dp, &mut bad, "device", "bad");
    assert!(line.contains("max_frame_bytes"), "{line}");

    assert_only_bad_connections_closed(&dp, &mut good, 1);
}

#[test]
fn an_invalid_login_id_closes_only_that_connection() {
    let (dp, mut good) = start_with_good_device();

    let mut bad = TcpDevice::connect_raw(dp.addr(0));
    let peer = bad.local_addr().to_string();
    bad.send(b"plant/7");
    let line = expect_closed_for_bad_frame(&dp, &mut bad, "peer", &peer);
    assert!(line.contains("login frame"), "{line}");
    assert!(
        dp.logs_matching("device online")
            .iter()
            .all(|l| !l.contains("plant")),
        "the bad id must never come online"
    );

    assert_only_bad_connections_closed(&dp, &mut good, 1);
}

#[test]
fn a_line_without_its_delimiter_closes_the_connection_at_the_limit() {
    let (dp, mut good) = start_with_good_device();

    let mut liner = TcpDevice::connect_raw(dp.addr(1));
    liner.send_raw(b"liner\n");
    dp.device_core("liner", WAIT);
    // Lines within the limit pass (and echo on the same framing).
    liner.send_raw(b"short line\n");
    let mut echoed = Vec::new();
    while !echoed.ends_with(b"\n") {
        echoed.extend(liner.recv_bytes(WAIT));
    }
    assert_eq!(echoed, b"short line\n");

    liner.send_raw(&[b'x'; 200]);
    let line = expect_closed_for_bad_frame(&dp, &mut liner, "device", "liner");
    assert!(line.contains("listener=lines"), "{line}");

    assert_only_bad_connections_closed(&dp, &mut good, 1);
}

#[test]
fn every_kind_of_bad_frame_is_counted() {
    let (dp, mut good) = start_with_good_device();
    for i in 0..3 {
        let mut oversized = echo_device(&dp, &format!("big{i}"));
        oversized.send_raw(&[0xff, 0xff]);
        oversized.expect_closed(WAIT);
    }
    let mut bad_id = TcpDevice::connect_raw(dp.addr(0));
    bad_id.send(b"a+b");
    bad_id.expect_closed(WAIT);
    let mut liner = TcpDevice::connect_raw(dp.addr(1));
    liner.send_raw(&[b'y'; 200]);
    liner.expect_closed(WAIT);

    dp.wait_for_logs("closing connection: bad frame:", 5, WAIT);
    let stats = assert_only_bad_connections_closed(&dp, &mut good, 5);
    assert_eq!(stats.cores.len(), CORES);
}

#[test]
fn a_bad_bind_address_stops_the_start_and_names_the_listener() {
    let config = Config::new().listener(Listener::tcp("tcp-meters", 0).bind("127.0.0.1:99999"));
    let out = run_dataplane(&["--cores", "2"], Some(&config.to_string()), WAIT);
    out.assert_exit_code(1);
    assert!(out.stderr.contains("listener[0]"), "{}", out.stderr);
    assert!(out.stderr.contains("\"tcp-meters\""), "{}", out.stderr);
    assert!(out.stderr.contains("127.0.0.1:99999"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("shoal-dataplane ready"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_toml_syntax_error_names_the_line() {
    let config =
        "[runtime]\ndrain_timeout = \"1s\"\n\n[[listener]]\nname = \"tcp\nprotocol = \"tcp\"\n";
    let out = run_dataplane(&["--cores", "2"], Some(config), WAIT);
    out.assert_exit_code(1);
    assert!(out.stderr.contains("line 5"), "{}", out.stderr);
    assert!(out.stderr.contains("column"), "{}", out.stderr);
}

#[test]
fn an_unknown_field_is_refused() {
    let config = "[runtime]\ndrain_timeot = \"1s\"\n";
    let out = run_dataplane(&["--check-config"], Some(config), WAIT);
    out.assert_exit_code(1);
    assert!(out.stderr.contains("drain_timeot"), "{}", out.stderr);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}

#[test]
fn check_config_accepts_the_default_config() {
    let out = run_dataplane(&["--check-config"], None, WAIT);
    out.assert_exit_code(0);
    assert!(out.stdout.contains("config ok"), "{out:?}");

    let printed = run_dataplane(&["--print-default-config"], None, WAIT);
    printed.assert_exit_code(0);
    let out = run_dataplane(&["--check-config"], Some(&printed.stdout), WAIT);
    out.assert_exit_code(0);
    assert!(
        out.stdout.contains("config ok: 6 listeners, 0 routes"),
        "{out:?}"
    );
}

#[test]
fn a_port_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let bind = format!("127.0.0.1:{port}");
    let config = Config::new().listener(Listener::tcp("tcp", 0).bind(&bind));
    let out = run_dataplane(
        &["--cores", "2"],
        Some(&config.to_string()),
        Duration::from_secs(10),
    );
    out.assert_exit_code(1);
    assert!(out.stderr.contains(&bind), "{}", out.stderr);
    assert!(out.stderr.contains("cannot bind"), "{}", out.stderr);
}
