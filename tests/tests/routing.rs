//! Routes end to end: republish within and across cores, TCP ⇄ UDP
//! devices, forward upstreams, and `drop`.

use std::thread;
use std::time::Duration;

use shoal_tests::{
    connect_pairs, has_field, udp_recv, udp_socket, Config, Dataplane, DevicePair, FrameSink,
    Listener, Route, TcpDevice, CORES, INTEREST_SETTLE, WAIT,
};

#[test]
fn republish_reaches_a_device_on_the_other_core_and_on_the_same_core() {
    let dp = Dataplane::start(Config::tcp().route(Route::pair()));
    let names: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    let mut pairs = connect_pairs(&dp, &names);

    let cross = pairs
        .iter()
        .position(DevicePair::crosses_cores)
        .expect("16 pairs over 2 cores: at least one pair should straddle the cores");
    let same = pairs
        .iter()
        .position(|p| !p.crosses_cores())
        .expect("16 pairs over 2 cores: at least one pair should share a core");

    let before = dp.stats();
    assert_eq!(before.sum("conns"), 32, "{before}");

    for (i, what) in [(cross, "cross-core"), (same, "same-core")] {
        let payload = format!("{what} hello from s{i}");
        pairs[i].sender.send(payload.as_bytes());
        let got = pairs[i].receiver.recv_frame(WAIT);
        assert_eq!(got, payload.as_bytes(), "s{i}-rx got another payload");
    }
    // Nothing else was delivered anywhere: senders are not subscribers of
    // their own up topic, and other receivers' topics were not used.
    for pair in &mut pairs {
        pair.sender.expect_no_frame(Duration::from_millis(10));
        pair.receiver.expect_no_frame(Duration::from_millis(10));
    }

    let after = dp.wait_for_stats("the routed messages", WAIT, |s| {
        s.sum("route_republished") >= 2 && s.sum("msgs_out") >= 2
    });
    assert!(
        after.sum("mesh_sent") > 0,
        "the cross-core pair went over the mesh:\n{after}"
    );
    assert!(after.sum("mesh_received") > 0, "{after}");
    assert_eq!(after.sum("mesh_drops"), 0, "{after}");
    assert_eq!(after.sum("msgs_in"), 2, "{after}");
}

#[test]
fn udp_and_tcp_devices_reach_each_other_through_routes() {
    let client = udp_socket();
    let client_id = client.local_addr().expect("client addr").to_string();
    let dp = Dataplane::start(
        Config::tcp()
            .listener(Listener::udp("udp", 1))
            .route(Route::republish(
                "tcp-to-udp",
                "devices/tcpdev/up",
                &format!("devices/{client_id}/down"),
            ))
            .route(
                Route::republish(
                    "udp-to-tcp",
                    &format!("devices/{client_id}/up"),
                    "devices/tcpdev/down",
                )
                .listener("udp"),
            ),
    );
    let udp_listener = dp.addr(1);

    let mut tcpdev = TcpDevice::login(&dp, "tcpdev");
    thread::sleep(INTEREST_SETTLE);

    // The first datagram makes the session (and is itself routed).
    client
        .send_to(b"hello, I am udp", udp_listener)
        .expect("send");
    let line = dp.wait_for_line("udp device online", WAIT, |l| {
        has_field(l, "device", &client_id)
    });
    assert!(line.contains("listener=udp"), "{line}");
    assert_eq!(tcpdev.recv_frame(WAIT), b"hello, I am udp");
    thread::sleep(INTEREST_SETTLE);

    // TCP → UDP: one datagram, from the listener's address.
    tcpdev.send(b"downlink for udp");
    let (datagram, from) = udp_recv(&client, WAIT).expect("a downlink datagram");
    assert_eq!(datagram, b"downlink for udp");
    assert_eq!(
        from, udp_listener,
        "downlink leaves from the listener's socket"
    );

    // UDP → TCP again, on the existing session.
    client
        .send_to(b"uplink for tcp", udp_listener)
        .expect("send");
    assert_eq!(tcpdev.recv_frame(WAIT), b"uplink for tcp");
    assert!(udp_recv(&client, Duration::from_millis(100)).is_none());

    let stats = dp.wait_for_stats("the routed messages", WAIT, |s| {
        s.sum("route_republished") >= 3
    });
    assert_eq!(stats.sum("msgs_in"), 3, "{stats}");
    assert_eq!(
        stats.sum("conns"),
        2,
        "one tcp connection and one udp session:\n{stats}"
    );
}

#[test]
fn forward_routes_reach_tcp_and_udp_upstreams() {
    let tcp_upstream = FrameSink::start();
    let udp_upstream = udp_socket();
    let tcp_forward = format!(
        r#"{{ kind = "forward_tcp", address = "{}", framing = {} }}"#,
        tcp_upstream.addr(),
        r#"{ kind = "length_field", width = 2 }"#
    );
    let udp_forward = format!(
        r#"{{ kind = "forward_udp", address = "{}" }}"#,
        udp_upstream.local_addr().expect("addr")
    );
    let dp = Dataplane::start(
        Config::tcp()
            .route(Route::new("to-tcp", "devices/+/up", &tcp_forward).device("meter"))
            .route(Route::new("to-udp", "devices/meter/up", &udp_forward)),
    );
    // Every core opens its own upstream connection.
    dp.wait_for_logs("forward upstream connected", CORES, WAIT);

    let mut meter = TcpDevice::login(&dp, "meter");
    let mut other = TcpDevice::login(&dp, "other");
    let assert_forwarded_to_both = |payload: &[u8]| {
        let frame = tcp_upstream.recv(WAIT).expect("a forwarded frame");
        assert_eq!(frame, payload);
        let (datagram, _) = udp_recv(&udp_upstream, WAIT).expect("a forwarded datagram");
        assert_eq!(datagram, payload);
    };

    meter.send(b"reading 42");
    assert_forwarded_to_both(b"reading 42");

    // A device the routes do not name reaches neither upstream.
    other.send(b"not for upstreams");
    meter.send(b"reading 43");
    assert_forwarded_to_both(b"reading 43");
    assert!(tcp_upstream.recv(Duration::from_millis(100)).is_none());
    assert!(udp_recv(&udp_upstream, Duration::from_millis(10)).is_none());

    let stats = dp.wait_for_sum("forward_sent", 4);
    assert_eq!(stats.sum("forward_drops"), 0, "{stats}");
    assert!(tcp_upstream.connections() >= 1);
}

#[test]
fn a_drop_route_stops_delivery() {
    let dp = Dataplane::start(
        Config::tcp()
            .route(Route::dropping("mute-noisy", "devices/+/up").device("noisy"))
            .route(Route::pair()),
    );
    let [mut noisy, mut quiet]: [DevicePair; 2] = connect_pairs(&dp, &["noisy", "quiet"])
        .try_into()
        .expect("two pairs");

    noisy.sender.send(b"should be dropped");
    quiet.sender.send(b"should arrive");
    assert_eq!(quiet.receiver.recv_frame(WAIT), b"should arrive");
    noisy.receiver.expect_no_frame(Duration::from_millis(300));

    let stats = dp.wait_for_stats("the dropped and the delivered message", WAIT, |s| {
        s.sum("route_dropped") >= 1 && s.sum("route_republished") >= 1
    });
    assert_eq!(stats.sum("route_dropped"), 1, "{stats}");
    assert_eq!(stats.sum("route_republished"), 1, "{stats}");
    assert_eq!(stats.sum("msgs_in"), 2, "{stats}");
}

#[test]
fn a_device_that_logs_in_again_replaces_its_older_connection() {
    let dp = Dataplane::start(Config::tcp().route(Route::echo()));
    let mut current = TcpDevice::connect(dp.addr(0), "twin");
    let mut core = dp.device_core("twin", WAIT);
    let (mut same_core, mut cross_core) = (0, 0);
    for login in 1..16 {
        if login >= 4 && same_core > 0 && cross_core > 0 {
            break;
        }
        let mut newer = TcpDevice::connect(dp.addr(0), "twin");
        let line = dp.wait_for_logs("device online", login + 1, WAIT)[login].clone();
        let newer_core = shoal_tests::core_of(&line).expect("logged by a core");
        if newer_core == core {
            same_core += 1;
        } else {
            cross_core += 1;
        }
        // The older connection is closed, whichever core it is on.
        current.expect_closed(WAIT);
        dp.wait_for_logs("reason=TakenOver", login, WAIT);
        newer.send(format!("login {login}").as_bytes());
        // An echo of an earlier login's message may still be crossing
        // the mesh when this one subscribes; nothing else may arrive.
        loop {
            let frame = String::from_utf8(newer.recv_frame(WAIT)).expect("utf-8 echo");
            if frame == format!("login {login}") {
                break;
            }
            let earlier = frame
                .strip_prefix("login ")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n < login);
            assert!(earlier, "unexpected frame {frame:?}");
        }
        (current, core) = (newer, newer_core);
    }
    assert!(cross_core > 0, "no login landed on the other core");
    let stats = dp.wait_for_stats("one connection left", WAIT, |s| s.sum("conns") == 1);
    assert_eq!(stats.sum("conns"), 1, "{stats}");
}

#[test]
fn a_forward_upstream_that_is_down_keeps_a_bounded_queue_until_it_is_up() {
    let dp = Dataplane::start(Config::tcp().route(Route::new(
        "upstream",
        "devices/+/up",
        r#"{ kind = "forward_tcp", address = "127.0.0.1:@port1@", queue_bytes = 1024 }"#,
    )));
    dp.wait_for_log("cannot reach forward upstream", WAIT);
    let mut meter = TcpDevice::login(&dp, "meter");

    // 2 + 100 bytes a frame: ten fill the 1024-byte queue, ten are dropped.
    let payload = |i: usize| {
        let mut p = format!("queued {i:02} ").into_bytes();
        p.resize(100, b'.');
        p
    };
    for i in 0..20 {
        meter.send(&payload(i));
    }
    let stats = dp.wait_for_stats("the queue full", WAIT, |s| {
        s.sum("forward_sent") + s.sum("forward_drops") >= 20
    });
    assert_eq!(stats.sum("forward_sent"), 10, "{stats}");
    assert_eq!(stats.sum("forward_drops"), 10, "{stats}");

    // The upstream comes up: the data plane reconnects and sends the queue.
    let upstream = FrameSink::start_on(dp.addr(1));
    for i in 0..10 {
        let frame = upstream
            .recv(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("queued frame {i} never arrived"));
        assert_eq!(frame, payload(i));
    }
    meter.send(b"live");
    assert_eq!(upstream.recv(WAIT).expect("a live frame"), b"live");
    assert!(upstream.recv(Duration::from_millis(100)).is_none());
}

#[test]
fn a_route_loop_is_cut_by_max_route_hops() {
    let dp = Dataplane::start(
        Config::tcp()
            .max_route_hops(4)
            .route(Route::republish("entry", "devices/+/up", "loop/{device}"))
            .route(Route::republish("loop", "loop/+", "loop/{2}")),
    );
    let mut d = TcpDevice::login(&dp, "spinner");
    d.send(b"round and round");
    let line = dp.wait_for_log("route did not republish", WAIT);
    assert!(line.contains("max_route_hops"), "{line}");
    // One entry and three loop republishes; the fourth loop is refused.
    let stats = dp.wait_for_sum("route_dropped", 1);
    assert_eq!(stats.sum("route_republished"), 4, "{stats}");

    d.send(b"again");
    let stats = dp.wait_for_sum("route_dropped", 2);
    assert_eq!(stats.sum("route_republished"), 8, "{stats}");
}
