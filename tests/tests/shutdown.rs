//! SIGTERM: stop accepting, drain (half-close, wait for the peers) up to
//! the drain timeout, exit 0.

use std::io::{self, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{has_field, Closed, Dataplane, TcpDevice, STOPPED_LINE};

const WAIT: Duration = Duration::from_secs(5);

fn config(drain_timeout: &str) -> String {
    r#"
[runtime]
drain_timeout = "@DRAIN@"

[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "echo"
filter = "devices/+/up"
action = { kind = "republish", topic = "devices/{device}/down" }
"#
    .replace("@DRAIN@", drain_timeout)
}

#[test]
fn sigterm_half_closes_every_connection_and_exits_once_peers_close() {
    // A long drain timeout: the exit must come from the peers closing.
    let mut dp = Dataplane::start(&config("30s"));
    let mut devices: Vec<TcpDevice> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let mut d = TcpDevice::connect(dp.addr(0), id);
            dp.device_core(id, WAIT);
            d.send(b"before");
            assert_eq!(d.recv_frame(WAIT), b"before");
            d
        })
        .collect();

    dp.sigterm();
    for d in &mut devices {
        // A FIN after everything queued: an orderly end of stream.
        d.expect_eof(WAIT);
    }
    dp.wait_for_logs("draining open ones", shoal_tests::CORES, WAIT);

    // The listeners are closed: new connections are refused.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect_timeout(&dp.addr(0), Duration::from_secs(1)) {
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
            Ok(mut late) => {
                // Queued before the listeners closed; it must not be served.
                let _ = late.write_all(&shoal_tests::length_frame(b"late"));
            }
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        thread::sleep(Duration::from_millis(50));
    }

    // The peers still may write: the data plane only closed its side.
    let closing = Instant::now();
    drop(devices);
    let status = dp.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        closing.elapsed() < Duration::from_secs(5),
        "the drain waited for its deadline instead of the peers"
    );
    let last = dp
        .log()
        .lines()
        .last()
        .map(|l| l.text.clone())
        .unwrap_or_default();
    assert!(last.contains(STOPPED_LINE), "last line: {last}");
    assert!(dp.logs_matching("drain deadline passed").is_empty());
    assert!(dp
        .logs_matching("device online")
        .iter()
        .all(|l| !has_field(l, "device", "late")));
}

#[test]
fn a_peer_that_never_closes_is_cut_at_the_drain_deadline() {
    let mut dp = Dataplane::start(&config("1s"));
    let mut stubborn = TcpDevice::connect(dp.addr(0), "stubborn");
    dp.device_core("stubborn", WAIT);

    let signalled = Instant::now();
    dp.sigterm();
    stubborn.expect_eof(WAIT);
    // It keeps its side open; the data plane must give up on it.
    let status = dp.wait_exit(WAIT);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < WAIT, "took {took:?}");
    let line = dp.wait_for_log("drain deadline passed", Duration::from_millis(100));
    assert!(line.contains(" WARN "), "{line}");
    let last = dp
        .log()
        .lines()
        .last()
        .map(|l| l.text.clone())
        .unwrap_or_default();
    assert!(last.contains(STOPPED_LINE), "last line: {last}");
    // The connection is gone for good now.
    assert!(matches!(
        stubborn.expect_closed(Duration::from_secs(1)),
        Closed::Eof | Closed::Reset
    ));
}

#[test]
fn sigint_stops_an_idle_data_plane() {
    let mut dp = Dataplane::start(&config("10s"));
    dp.signal(libc::SIGINT);
    let status = dp.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{status}");
    dp.wait_for_log(STOPPED_LINE, Duration::from_millis(100));
}

#[test]
fn downlink_queued_before_sigterm_is_delivered_before_the_half_close() {
    let mut dp = Dataplane::start(
        r#"
[runtime]
drain_timeout = "10s"
outbound_queue_bytes = 16777216
write_stall_timeout = "10s"

[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "push"
filter = "devices/pusher/up"
action = { kind = "republish", topic = "devices/reader/down" }
"#,
    );
    let mut reader = TcpDevice::connect(dp.addr(0), "reader");
    dp.device_core("reader", WAIT);
    let mut pusher = TcpDevice::connect(dp.addr(0), "pusher");
    dp.device_core("pusher", WAIT);
    thread::sleep(shoal_tests::INTEREST_SETTLE);

    // 6 MB for `reader`, which does not read yet: more than the sockets
    // hold, so the rest waits in the data plane's outbound queue.
    const FRAMES: usize = 6000;
    let payload = |i: usize| {
        let mut p = format!("downlink {i:04} ").into_bytes();
        p.resize(1000, b'-');
        p
    };
    let mut stream = Vec::new();
    for i in 0..FRAMES {
        stream.extend_from_slice(&shoal_tests::length_frame(&payload(i)));
    }
    pusher.send_raw(&stream);
    let taken = dp.wait_for_stats("every downlink taken", WAIT, |s| {
        s.sum("msgs_in") >= FRAMES as u64 && s.sum("msgs_out") >= FRAMES as u64
    });
    let total_bytes = (FRAMES * (2 + 1000)) as u64;
    assert!(
        taken.sum("bytes_out") < total_bytes,
        "the downlink should still be queued in the data plane:\n{taken}"
    );

    dp.sigterm();
    pusher.expect_eof(WAIT);
    drop(pusher);
    let deadline = Instant::now() + Duration::from_secs(8);
    for i in 0..FRAMES {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = reader
            .try_recv_frame(left)
            .unwrap_or_else(|| panic!("only {i} of {FRAMES} frames arrived in time"));
        assert!(
            frame == payload(i),
            "frame {i} differs: {} bytes, starting {:?}",
            frame.len(),
            String::from_utf8_lossy(&frame[..frame.len().min(24)])
        );
    }
    reader.expect_eof(WAIT);
    drop(reader);
    let status = dp.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(dp.logs_matching("drain deadline passed").is_empty());
}
