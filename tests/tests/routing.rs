//! Routes end to end: republish within and across cores, TCP ⇄ UDP
//! devices, forward upstreams, and `drop`.

use std::time::Duration;

use shoal_tests::{
    connect_devices, udp_recv, udp_socket, Dataplane, FrameSink, TcpDevice, INTEREST_SETTLE,
};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn republish_reaches_a_device_on_the_other_core_and_on_the_same_core() {
    let dp = Dataplane::start(
        r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "pair"
filter = "devices/+/up"
action = { kind = "republish", topic = "devices/{device}-rx/down" }
"#,
    );
    let ids: Vec<String> = (0..16)
        .flat_map(|i| [format!("s{i}"), format!("s{i}-rx")])
        .collect();
    let mut devices = connect_devices(&dp, dp.addr(0), &ids);
    std::thread::sleep(INTEREST_SETTLE);

    let pairs: Vec<(usize, bool)> = (0..16)
        .map(|i| (i, devices[2 * i].1 != devices[2 * i + 1].1))
        .collect();
    let cross = pairs
        .iter()
        .find(|(_, crosses)| *crosses)
        .map(|(i, _)| *i)
        .expect("16 pairs over 2 cores: at least one pair should straddle the cores");
    let same = pairs
        .iter()
        .find(|(_, crosses)| !*crosses)
        .map(|(i, _)| *i)
        .expect("16 pairs over 2 cores: at least one pair should share a core");

    let before = dp.stats();
    assert_eq!(before.sum("conns"), 32, "{before}");

    for (i, what) in [(cross, "cross-core"), (same, "same-core")] {
        let payload = format!("{what} hello from s{i}");
        devices[2 * i].0.send(payload.as_bytes());
        let got = devices[2 * i + 1].0.recv_frame(WAIT);
        assert_eq!(got, payload.as_bytes(), "s{i}-rx got another payload");
    }
    // Nothing else was delivered anywhere: senders are not subscribers of
    // their own up topic, and other receivers' topics were not used.
    for (d, _) in &mut devices {
        d.expect_no_frame(Duration::from_millis(10));
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
    let config = r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[listener]]
name = "udp"
protocol = "udp"
bind = "127.0.0.1:@port1@"
identity = { kind = "peer_address" }

[[route]]
name = "tcp-to-udp"
filter = "devices/tcpdev/up"
action = { kind = "republish", topic = "devices/CLIENT/down" }

[[route]]
name = "udp-to-tcp"
filter = "devices/CLIENT/up"
listener = "udp"
action = { kind = "republish", topic = "devices/tcpdev/down" }
"#
    .replace("CLIENT", &client_id);
    let dp = Dataplane::start(&config);
    let udp_listener = dp.addr(1);

    let (mut tcpdev, _) = connect_devices(&dp, dp.addr(0), &["tcpdev".to_owned()])
        .pop()
        .expect("one device");
    std::thread::sleep(INTEREST_SETTLE);

    // The first datagram makes the session (and is itself routed).
    client
        .send_to(b"hello, I am udp", udp_listener)
        .expect("send");
    let line = dp.wait_for_line("udp device online", WAIT, |l| {
        shoal_tests::has_field(l, "device", &client_id)
    });
    assert!(line.contains("listener=udp"), "{line}");
    assert_eq!(tcpdev.recv_frame(WAIT), b"hello, I am udp");
    std::thread::sleep(INTEREST_SETTLE);

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
    let config = r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "to-tcp"
filter = "devices/+/up"
device = "meter"
action = { kind = "forward_tcp", address = "TCP_UPSTREAM", framing = { kind = "length_field", width = 2 } }

[[route]]
name = "to-udp"
filter = "devices/meter/up"
action = { kind = "forward_udp", address = "UDP_UPSTREAM" }
"#
    .replace("TCP_UPSTREAM", &tcp_upstream.addr().to_string())
    .replace(
        "UDP_UPSTREAM",
        &udp_upstream.local_addr().expect("addr").to_string(),
    );
    let dp = Dataplane::start(&config);
    // Every core opens its own upstream connection.
    dp.wait_for_logs("forward upstream connected", shoal_tests::CORES, WAIT);

    let mut meter = TcpDevice::connect(dp.addr(0), "meter");
    dp.device_core("meter", WAIT);
    let mut other = TcpDevice::connect(dp.addr(0), "other");
    dp.device_core("other", WAIT);

    meter.send(b"reading 42");
    assert_eq!(
        tcp_upstream.recv(WAIT).expect("a forwarded frame"),
        b"reading 42"
    );
    let (datagram, _) = udp_recv(&udp_upstream, WAIT).expect("a forwarded datagram");
    assert_eq!(datagram, b"reading 42");

    // A device the routes do not name reaches neither upstream.
    other.send(b"not for upstreams");
    meter.send(b"reading 43");
    assert_eq!(
        tcp_upstream.recv(WAIT).expect("a forwarded frame"),
        b"reading 43"
    );
    let (datagram, _) = udp_recv(&udp_upstream, WAIT).expect("a forwarded datagram");
    assert_eq!(datagram, b"reading 43");
    assert!(tcp_upstream.recv(Duration::from_millis(100)).is_none());
    assert!(udp_recv(&udp_upstream, Duration::from_millis(10)).is_none());

    let stats = dp.wait_for_stats("the forwards", WAIT, |s| s.sum("forward_sent") >= 4);
    assert_eq!(stats.sum("forward_sent"), 4, "{stats}");
    assert_eq!(stats.sum("forward_drops"), 0, "{stats}");
    assert!(tcp_upstream.connections() >= 1);
}

#[test]
fn a_drop_route_stops_delivery() {
    let dp = Dataplane::start(
        r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "mute-noisy"
filter = "devices/+/up"
device = "noisy"
action = { kind = "drop" }

[[route]]
name = "pair"
filter = "devices/+/up"
action = { kind = "republish", topic = "devices/{device}-rx/down" }
"#,
    );
    let ids = ["noisy", "noisy-rx", "quiet", "quiet-rx"].map(str::to_owned);
    let mut devices = connect_devices(&dp, dp.addr(0), &ids);
    std::thread::sleep(INTEREST_SETTLE);

    devices[0].0.send(b"should be dropped");
    devices[2].0.send(b"should arrive");
    assert_eq!(devices[3].0.recv_frame(WAIT), b"should arrive");
    devices[1].0.expect_no_frame(Duration::from_millis(300));

    let stats = dp.wait_for_stats("the dropped and the delivered message", WAIT, |s| {
        s.sum("route_dropped") >= 1 && s.sum("route_republished") >= 1
    });
    assert_eq!(stats.sum("route_dropped"), 1, "{stats}");
    assert_eq!(stats.sum("route_republished"), 1, "{stats}");
    assert_eq!(stats.sum("msgs_in"), 2, "{stats}");
}

#[test]
fn a_device_that_logs_in_again_replaces_its_older_connection() {
    let dp = Dataplane::start(
        r#"
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
"#,
    );
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
    let dp = Dataplane::start(
        r#"
[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "upstream"
filter = "devices/+/up"
action = { kind = "forward_tcp", address = "127.0.0.1:@port1@", queue_bytes = 1024 }
"#,
    );
    dp.wait_for_log("cannot reach forward upstream", WAIT);
    let mut meter = TcpDevice::connect(dp.addr(0), "meter");
    dp.device_core("meter", WAIT);

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
        r#"
[runtime]
max_route_hops = 4

[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[route]]
name = "entry"
filter = "devices/+/up"
action = { kind = "republish", topic = "loop/{device}" }

[[route]]
name = "loop"
filter = "loop/+"
action = { kind = "republish", topic = "loop/{2}" }
"#,
    );
    let mut d = TcpDevice::connect(dp.addr(0), "spinner");
    dp.device_core("spinner", WAIT);
    d.send(b"round and round");
    let line = dp.wait_for_log("route did not republish", WAIT);
    assert!(line.contains("max_route_hops"), "{line}");
    // One entry and three loop republishes; the fourth loop is refused.
    let stats = dp.wait_for_stats("the loop cut", WAIT, |s| s.sum("route_dropped") >= 1);
    assert_eq!(stats.sum("route_republished"), 4, "{stats}");
    assert_eq!(stats.sum("route_dropped"), 1, "{stats}");

    d.send(b"again");
    let stats = dp.wait_for_stats("the second loop cut", WAIT, |s| s.sum("route_dropped") >= 2);
    assert_eq!(stats.sum("route_republished"), 8, "{stats}");
}
