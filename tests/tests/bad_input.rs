//! Bad input: a bad frame closes only its own connection; a bad config
//! stops the start with a message that says where.

use std::net::TcpListener;
use std::time::Duration;

use shoal_tests::{has_field, run_dataplane, Dataplane, TcpDevice, CORES};

const WAIT: Duration = Duration::from_secs(5);

/// A length-field listener whose frames echo back to their sender, and a
/// newline-delimited one.
const ECHO_CONFIG: &str = r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
max_frame_bytes = 256
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[listener]]
name = "lines"
protocol = "tcp"
bind = "127.0.0.1:@port1@"
max_frame_bytes = 64
framing = { kind = "delimiter", delimiter = "\n" }
identity = { kind = "login_frame" }

[[route]]
name = "echo"
filter = "devices/+/up"
action = { kind = "republish", topic = "devices/{device}/down" }
"#;

fn echo_device(dp: &Dataplane, id: &str) -> TcpDevice {
    let mut d = TcpDevice::connect(dp.addr(0), id);
    dp.device_core(id, WAIT);
    d.send(b"ping");
    assert_eq!(d.recv_frame(WAIT), b"ping");
    d
}

/// `good` keeps working while `bad` is closed for a bad frame.
fn assert_still_echoes(good: &mut TcpDevice) {
    for i in 0..5 {
        let payload = format!("still here {i}");
        good.send(payload.as_bytes());
        assert_eq!(good.recv_frame(WAIT), payload.as_bytes());
    }
}

#[test]
fn an_oversized_frame_closes_only_that_connection() {
    let dp = Dataplane::start(ECHO_CONFIG);
    let mut good = echo_device(&dp, "good");
    let mut bad = echo_device(&dp, "bad");

    // A header declaring 4096 bytes on a listener whose limit is 256: the
    // data plane must refuse it from the header alone.
    bad.send_raw(&4096u16.to_be_bytes());
    bad.send_raw(&[0x55; 100]);
    bad.expect_closed(WAIT);
    let line = dp.wait_for_line("closing connection: bad frame:", WAIT, |l| {
        has_field(l, "device", "bad")
    });
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("max_frame_bytes"), "{line}");

    assert_still_echoes(&mut good);
    let stats = dp.wait_for_stats("the frame error", WAIT, |s| s.sum("frame_errors") >= 1);
    assert_eq!(stats.sum("frame_errors"), 1, "{stats}");
    assert_eq!(stats.sum("conns"), 1, "{stats}");
}

#[test]
fn an_invalid_login_id_closes_only_that_connection() {
    let dp = Dataplane::start(ECHO_CONFIG);
    let mut good = echo_device(&dp, "good");

    let mut bad = TcpDevice::connect_raw(dp.addr(0));
    let peer = bad.local_addr().to_string();
    bad.send(b"plant/7");
    bad.expect_closed(WAIT);
    let line = dp.wait_for_line("closing connection: bad frame:", WAIT, |l| {
        has_field(l, "peer", &peer)
    });
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("login frame"), "{line}");
    assert!(
        dp.logs_matching("device online")
            .iter()
            .all(|l| !l.contains("plant")),
        "the bad id must never come online"
    );

    assert_still_echoes(&mut good);
    let stats = dp.wait_for_stats("the frame error", WAIT, |s| s.sum("frame_errors") >= 1);
    assert_eq!(stats.sum("frame_errors"), 1, "{stats}");
    assert_eq!(stats.sum("conns"), 1, "{stats}");
}

#[test]
fn a_line_without_its_delimiter_closes_the_connection_at_the_limit() {
    let dp = Dataplane::start(ECHO_CONFIG);
    let mut good = echo_device(&dp, "good");

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
    liner.expect_closed(WAIT);
    let line = dp.wait_for_line("closing connection: bad frame:", WAIT, |l| {
        has_field(l, "device", "liner")
    });
    assert!(line.contains("listener=lines"), "{line}");

    assert_still_echoes(&mut good);
    let stats = dp.wait_for_stats("the frame error", WAIT, |s| s.sum("frame_errors") >= 1);
    assert_eq!(stats.sum("frame_errors"), 1, "{stats}");
}

#[test]
fn every_kind_of_bad_frame_is_counted() {
    let dp = Dataplane::start(ECHO_CONFIG);
    let mut good = echo_device(&dp, "good");
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
    assert_still_echoes(&mut good);
    let stats = dp.wait_for_stats("five frame errors", WAIT, |s| s.sum("frame_errors") >= 5);
    assert_eq!(stats.sum("frame_errors"), 5, "{stats}");
    assert_eq!(stats.sum("conns"), 1, "{stats}");
    assert_eq!(stats.cores.len(), CORES);
}

#[test]
fn a_bad_bind_address_stops_the_start_and_names_the_listener() {
    let config = r#"
[[listener]]
name = "tcp-meters"
protocol = "tcp"
bind = "127.0.0.1:99999"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }
"#;
    let out = run_dataplane(&["--cores", "2"], Some(config), WAIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
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
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("line 5"), "{}", out.stderr);
    assert!(out.stderr.contains("column"), "{}", out.stderr);
}

#[test]
fn an_unknown_field_is_refused() {
    let config = "[runtime]\ndrain_timeot = \"1s\"\n";
    let out = run_dataplane(&["--check-config"], Some(config), WAIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("drain_timeot"), "{}", out.stderr);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}

#[test]
fn check_config_accepts_the_default_config() {
    let out = run_dataplane(&["--check-config"], None, WAIT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("config ok"), "{out:?}");

    let printed = run_dataplane(&["--print-default-config"], None, WAIT);
    assert_eq!(printed.status.code(), Some(0), "{printed:?}");
    let out = run_dataplane(&["--check-config"], Some(&printed.stdout), WAIT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("config ok: 2 listeners, 0 routes"),
        "{out:?}"
    );
}

#[test]
fn a_port_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = format!(
        r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:{port}"
framing = {{ kind = "length_field", width = 2 }}
identity = {{ kind = "login_frame" }}
"#
    );
    let out = run_dataplane(&["--cores", "2"], Some(&config), Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("cannot bind"), "{}", out.stderr);
}
