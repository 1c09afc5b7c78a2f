//! Listener limits: `max_connections` and `idle_timeout`, and what a
//! device that does not read costs.

use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{
    burst_config, has_field, length_frame, Closed, Config, Dataplane, DownlinkBurst, Listener,
    Route, TcpDevice, INTEREST_SETTLE, WAIT,
};

/// One length-field listener with these limits, whose frames echo back to
/// their sender.
fn echo_config(max_connections: u32, idle_timeout: &str) -> Config {
    Config::new()
        .listener(
            Listener::tcp("tcp", 0)
                .max_connections(max_connections)
                .idle_timeout(idle_timeout),
        )
        .route(Route::echo())
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let dp = Dataplane::start(echo_config(3, "5m"));
    let mut first: Vec<TcpDevice> = ["d1", "d2", "d3"]
        .iter()
        .map(|id| TcpDevice::login(&dp, id))
        .collect();

    // The kernel completes the handshake; the data plane then closes it.
    let mut fourth = TcpDevice::connect_raw(dp.addr(0));
    let _ = fourth.try_send_raw(&length_frame(b"d4"));
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
        d.assert_echo(format!("still served {i}").as_bytes());
    }
    let stats = dp.wait_for_sum("refused", 1);
    assert_eq!(stats.sum("conns"), 3, "{stats}");

    // A closed connection frees its place.
    drop(first.remove(0));
    dp.wait_for_stats("the closed connection gone", WAIT, |s| s.sum("conns") == 2);
    let mut fifth = TcpDevice::login(&dp, "d5");
    fifth.assert_echo(b"room again");
    for d in &mut first {
        d.assert_echo(b"and the others too");
    }
}

#[test]
fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let dp = Dataplane::start(echo_config(100, "500ms"));
    let connecting = Instant::now();
    let mut sleepy = TcpDevice::connect(dp.addr(0), "sleepy");
    let mut busy = TcpDevice::connect(dp.addr(0), "busy");
    dp.device_core("sleepy", WAIT);
    dp.device_core("busy", WAIT);

    let chatter = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(2);
        let mut sent = 0;
        while Instant::now() < until {
            busy.assert_echo(format!("tick {sent}").as_bytes());
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
    busy.assert_echo(b"still open after 2 s");
    assert!(dp.logs_matching("closing idle connection").len() == 1);

    let stats = dp.wait_for_sum("idle_timeouts", 1);
    assert_eq!(stats.sum("conns"), 1, "{stats}");
}

#[test]
fn a_device_that_stops_reading_is_closed_when_its_writes_stall() {
    let dp = Dataplane::start(
        Config::tcp()
            .outbound_queue_bytes(65536)
            .write_stall_timeout("500ms")
            .route(Route::republish(
                "flood",
                "devices/pusher/up",
                "devices/deaf/down",
            ))
            .route(Route::republish(
                "echo",
                "devices/witness/up",
                "devices/witness/down",
            )),
    );
    let mut deaf = TcpDevice::login(&dp, "deaf");
    let mut pusher = TcpDevice::login(&dp, "pusher");
    let mut witness = TcpDevice::login(&dp, "witness");
    thread::sleep(INTEREST_SETTLE);

    // Push until the socket buffers and the 64 KiB queue are full and the
    // write stalls; `deaf` never reads.
    let frame = vec![b'#'; 1000];
    let batch: Vec<u8> = (0..100).flat_map(|_| length_frame(&frame)).collect();
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
    witness.assert_echo(b"unaffected");
    pusher.send(b"still connected");
    let stats = dp.wait_for_sum("slow_closes", 1);
    assert!(
        stats.sum("outbound_drops") > 0,
        "a full queue drops:\n{stats}"
    );
    assert_eq!(stats.sum("conns"), 2, "{stats}");
}

#[test]
fn a_slow_reader_gets_every_downlink_intact_and_in_order() {
    let dp = Dataplane::start(burst_config());
    let mut pusher = TcpDevice::login(&dp, "pusher");

    // Each round a fresh `reader` connection gets a burst of downlink while
    // it does not read: more than the sockets hold, so the rest waits in
    // the outbound queue, and new downlink keeps arriving while the socket
    // fills up. Then it reads them all.
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        // A new login of `reader` takes over (and closes) the previous one.
        let mut reader = TcpDevice::connect(dp.addr(0), "reader");
        dp.wait_for_logs("device online", round + 2, WAIT);
        thread::sleep(INTEREST_SETTLE);
        let burst = DownlinkBurst::new(&format!("round {round}"));
        burst.push(&dp, &mut pusher);
        burst.expect_delivered(&mut reader, WAIT);
    }
    let stats = dp.stats();
    assert_eq!(stats.sum("outbound_drops"), 0, "{stats}");
    assert_eq!(stats.sum("mesh_drops"), 0, "{stats}");
}
