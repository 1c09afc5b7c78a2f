//! Listener limits: `max_connections` and `idle_timeout`.

use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{has_field, Closed, Dataplane, TcpDevice};

const WAIT: Duration = Duration::from_secs(5);

/// One length-field listener (`@MAX@` connections, `@IDLE@` idle timeout)
/// whose frames echo back to their sender.
fn echo_config(max_connections: u32, idle_timeout: &str) -> String {
    r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
max_connections = @MAX@
idle_timeout = "@IDLE@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "echo"
filter = "devices/+/up"
action = { kind = "republish", topic = "devices/{device}/down" }
"#
    .replace("@MAX@", &max_connections.to_string())
    .replace("@IDLE@", idle_timeout)
}

fn assert_echoes(d: &mut TcpDevice, payload: &str) {
    d.send(payload.as_bytes());
    assert_eq!(d.recv_frame(WAIT), payload.as_bytes(), "device {}", d.id);
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let dp = Dataplane::start(&echo_config(3, "5m"));
    let mut first: Vec<TcpDevice> = ["d1", "d2", "d3"]
        .iter()
        .map(|id| {
            let d = TcpDevice::connect(dp.addr(0), id);
            dp.device_core(id, WAIT);
            d
        })
        .collect();

    // The kernel completes the handshake; the data plane then closes it.
    let mut fourth = TcpDevice::connect_raw(dp.addr(0));
    let _ = fourth.try_send_raw(&shoal_tests::length_frame(b"d4"));
    let how = fourth.expect_closed(WAIT);
    assert!(matches!(how, Closed::Eof | Closed::Reset));
    let line = dp.wait_for_log("connection refused: listener is at max_connections", WAIT);
    assert!(line.contains(" WARN "), "{line}");
    assert!(has_field(&line, "max_connections", "3"), "{line}");
    assert!(dp
        .logs_matching("device online")
        .iter()
        .all(|l| !has_field(l, "device", "d4")));

    for (i, d) in first.iter_mut().enumerate() {
        assert_echoes(d, &format!("still served {i}"));
    }
    let stats = dp.wait_for_stats("the refusal", WAIT, |s| s.sum("refused") >= 1);
    assert_eq!(stats.sum("refused"), 1, "{stats}");
    assert_eq!(stats.sum("conns"), 3, "{stats}");

    // A closed connection frees its place.
    drop(first.remove(0));
    dp.wait_for_stats("the closed connection gone", WAIT, |s| s.sum("conns") == 2);
    let mut fifth = TcpDevice::connect(dp.addr(0), "d5");
    dp.device_core("d5", WAIT);
    assert_echoes(&mut fifth, "room again");
    for d in &mut first {
        assert_echoes(d, "and the others too");
    }
}

#[test]
fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let dp = Dataplane::start(&echo_config(100, "500ms"));
    let connecting = Instant::now();
    let mut sleepy = TcpDevice::connect(dp.addr(0), "sleepy");
    let mut busy = TcpDevice::connect(dp.addr(0), "busy");
    dp.device_core("sleepy", WAIT);
    dp.device_core("busy", WAIT);

    let chatter = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(2);
        let mut sent = 0;
        while Instant::now() < until {
            assert_echoes(&mut busy, &format!("tick {sent}"));
            sent += 1;
            thread::sleep(Duration::from_millis(150));
        }
        (busy, sent)
    });

    sleepy.expect_closed(Duration::from_secs(3));
    let closed_after = connecting.elapsed();
    let line = dp.wait_for_line("closing idle connection", WAIT, |l| {
        has_field(l, "device", "sleepy")
    });
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        closed_after >= Duration::from_millis(500),
        "closed after {closed_after:?}, before its idle timeout"
    );

    let (mut busy, sent) = chatter.join().expect("the busy device kept talking");
    assert!(sent >= 5, "only {sent} frames in 2 s");
    assert_echoes(&mut busy, "still open after 2 s");
    assert!(dp.logs_matching("closing idle connection").len() == 1);

    let stats = dp.wait_for_stats("the idle close", WAIT, |s| s.sum("idle_timeouts") >= 1);
    assert_eq!(stats.sum("idle_timeouts"), 1, "{stats}");
    assert_eq!(stats.sum("conns"), 1, "{stats}");
}

#[test]
fn a_device_that_stops_reading_is_closed_when_its_writes_stall() {
    let dp = Dataplane::start(
        r#"
[runtime]
outbound_queue_bytes = 65536
write_stall_timeout = "500ms"

[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "flood"
filter = "devices/pusher/up"
action = { kind = "republish", topic = "devices/deaf/down" }

[[route]]
name = "echo"
filter = "devices/witness/up"
action = { kind = "republish", topic = "devices/witness/down" }
"#,
    );
    let mut deaf = TcpDevice::connect(dp.addr(0), "deaf");
    dp.device_core("deaf", WAIT);
    let mut pusher = TcpDevice::connect(dp.addr(0), "pusher");
    dp.device_core("pusher", WAIT);
    let mut witness = TcpDevice::connect(dp.addr(0), "witness");
    dp.device_core("witness", WAIT);
    thread::sleep(shoal_tests::INTEREST_SETTLE);

    // Push until the socket buffers and the 64 KiB queue are full and the
    // write stalls; `deaf` never reads.
    let frame = vec![b'#'; 1000];
    let batch: Vec<u8> = (0..100)
        .flat_map(|_| shoal_tests::length_frame(&frame))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pushed = 0;
    while dp.logs_matching("writes stalled").is_empty() {
        assert!(Instant::now() < deadline, "no stall after {pushed} frames");
        pusher.send_raw(&batch);
        pushed += 100;
        thread::sleep(Duration::from_millis(20));
    }
    let line = dp.wait_for_line("writes stalled", WAIT, |l| has_field(l, "device", "deaf"));
    assert!(line.contains(" WARN "), "{line}");
    deaf.expect_closed(WAIT);

    // Everyone else is unaffected.
    assert_echoes(&mut witness, "unaffected");
    pusher.send(b"still connected");
    let stats = dp.wait_for_stats("the slow close", WAIT, |s| s.sum("slow_closes") >= 1);
    assert_eq!(stats.sum("slow_closes"), 1, "{stats}");
    assert!(
        stats.sum("outbound_drops") > 0,
        "a full queue drops:\n{stats}"
    );
    assert_eq!(stats.sum("conns"), 2, "{stats}");
}

#[test]
fn a_slow_reader_gets_every_downlink_intact_and_in_order() {
    let dp = Dataplane::start(
        r#"
[runtime]
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
    let mut pusher = TcpDevice::connect(dp.addr(0), "pusher");
    dp.device_core("pusher", WAIT);

    // Each round a fresh `reader` connection gets 6 MB of numbered frames
    // while it does not read: more than the sockets hold, so the rest
    // waits in the outbound queue, and new downlink keeps arriving while
    // the socket fills up. Then it reads them all.
    const ROUNDS: usize = 6;
    const FRAMES: usize = 6000;
    let payload = |round: usize, i: usize| {
        let mut p = format!("downlink {round}/{i:05} ").into_bytes();
        p.resize(1000, b'-');
        p
    };
    for round in 0..ROUNDS {
        // A new login of `reader` takes over (and closes) the previous one.
        let mut reader = TcpDevice::connect(dp.addr(0), "reader");
        dp.wait_for_logs("device online", round + 2, WAIT);
        thread::sleep(shoal_tests::INTEREST_SETTLE);
        let before = dp.stats();
        let bytes: Vec<u8> = (0..FRAMES)
            .flat_map(|i| shoal_tests::length_frame(&payload(round, i)))
            .collect();
        pusher.send_raw(&bytes);
        let taken = before.sum("msgs_out") + FRAMES as u64;
        let queued =
            dp.wait_for_stats("every downlink taken", WAIT, |s| s.sum("msgs_out") >= taken);
        assert!(
            queued.sum("bytes_out") - before.sum("bytes_out") < (FRAMES * 1002) as u64,
            "some downlink should wait in the outbound queue:\n{queued}"
        );
        let deadline = Instant::now() + WAIT;
        for i in 0..FRAMES {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = reader.try_recv_frame(left).unwrap_or_else(|| {
                panic!("round {round}: only {i} of {FRAMES} frames arrived in time")
            });
            assert!(
                frame == payload(round, i),
                "round {round}: frame {i} differs: {} bytes, starting {:?}",
                frame.len(),
                String::from_utf8_lossy(&frame[..frame.len().min(24)])
            );
        }
    }
    let stats = dp.stats();
    assert_eq!(stats.sum("outbound_drops"), 0, "{stats}");
    assert_eq!(stats.sum("mesh_drops"), 0, "{stats}");
}
