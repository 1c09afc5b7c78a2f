//! UDP listeners with an id prefix and framing inside datagrams.

use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use shoal_tests::{
    has_field, length_frame, udp_recv, udp_socket, Config, Dataplane, Listener, Route, TcpDevice,
    INTEREST_SETTLE, WAIT,
};

const MAX_FRAME_BYTES: usize = 256;

/// `udp-meters`: 8-byte id prefix, then length-field frames; each meter's
/// frames are republished to TCP device `{device}-sub`.
fn meters_config(idle_timeout: &str) -> Config {
    Config::tcp()
        .listener(
            Listener::udp("udp-meters", 1)
                .max_frame_bytes(MAX_FRAME_BYTES as u32)
                .idle_timeout(idle_timeout)
                .framing(r#"{ kind = "length_field", width = 2 }"#)
                .identity(r#"{ kind = "payload_prefix", bytes = 8 }"#),
        )
        .route(
            Route::republish("meters", "devices/+/up", "devices/{device}-sub/down")
                .listener("udp-meters"),
        )
}

fn start(idle_timeout: &str) -> Dataplane {
    Dataplane::start(meters_config(idle_timeout))
}

/// A datagram: `id` right-padded with NULs to 8 bytes, then `body`.
fn datagram(id: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = id.as_bytes().to_vec();
    assert!(bytes.len() <= 8);
    bytes.resize(8, 0);
    bytes.extend_from_slice(body);
    bytes
}

/// TCP device `id`, online and subscribed on every core.
fn subscriber(dp: &Dataplane, id: &str) -> TcpDevice {
    let d = TcpDevice::login(dp, id);
    thread::sleep(INTEREST_SETTLE);
    d
}

#[test]
fn two_frames_in_one_datagram_reach_the_subscriber() {
    let dp = start("5m");
    let mut sub = subscriber(&dp, "meter7-sub");
    let meter = udp_socket();

    let mut body = length_frame(b"temperature=21.5");
    body.extend_from_slice(&length_frame(b"humidity=40"));
    meter
        .send_to(&datagram("meter7", &body), dp.addr(1))
        .expect("send");

    assert_eq!(sub.recv_frame(WAIT), b"temperature=21.5");
    assert_eq!(sub.recv_frame(WAIT), b"humidity=40");
    let line = dp.wait_for_line("udp device online", WAIT, |l| {
        has_field(l, "device", "meter7")
    });
    assert!(line.contains("listener=udp-meters"), "{line}");

    // The same session carries the next datagram.
    meter
        .send_to(&datagram("meter7", &length_frame(b"third")), dp.addr(1))
        .expect("send");
    assert_eq!(sub.recv_frame(WAIT), b"third");
    sub.expect_no_frame(Duration::from_millis(100));

    let stats = dp.wait_for_sum("msgs_in", 3);
    assert_eq!(stats.sum("frame_errors"), 0, "{stats}");
    assert_eq!(dp.logs_matching("udp device online").len(), 1);
}

#[test]
fn an_oversized_datagram_is_dropped_and_counted() {
    let dp = start("5m");
    let mut sub = subscriber(&dp, "big-sub");
    let meter = udp_socket();

    let mut body = length_frame(&[b'z'; 200]);
    body.extend_from_slice(&length_frame(&[b'z'; 200]));
    let oversized = datagram("big", &body);
    assert!(oversized.len() > MAX_FRAME_BYTES);
    meter.send_to(&oversized, dp.addr(1)).expect("send");
    let line = dp.wait_for_log("datagram dropped: larger than max_frame_bytes", WAIT);
    assert!(line.contains(" WARN "), "{line}");
    sub.expect_no_frame(Duration::from_millis(200));

    // A datagram of exactly the limit still passes.
    let payload = vec![b'k'; MAX_FRAME_BYTES - 8 - 2];
    let exact = datagram("big", &length_frame(&payload));
    assert_eq!(exact.len(), MAX_FRAME_BYTES);
    meter.send_to(&exact, dp.addr(1)).expect("send");
    assert_eq!(sub.recv_frame(WAIT), payload);

    let stats = dp.wait_for_stats("the dropped datagram", WAIT, |s| {
        s.sum("frame_errors") >= 1 && s.sum("msgs_in") >= 1
    });
    assert_eq!(stats.sum("frame_errors"), 1, "{stats}");
    assert_eq!(stats.sum("msgs_in"), 1, "{stats}");
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let dp = start("5m");
    let mut sub = subscriber(&dp, "m1-sub");
    let meter = udp_socket();

    // Shorter than the id prefix.
    meter.send_to(b"m1", dp.addr(1)).expect("send");
    // A frame that claims more bytes than the datagram holds.
    let mut truncated = 10u16.to_be_bytes().to_vec();
    truncated.extend_from_slice(b"abc");
    meter
        .send_to(&datagram("m1", &truncated), dp.addr(1))
        .expect("send");
    // An id that is not valid.
    meter
        .send_to(&datagram("m/1", &length_frame(b"x")), dp.addr(1))
        .expect("send");

    dp.wait_for_sum("frame_errors", 3);
    sub.expect_no_frame(Duration::from_millis(100));

    meter
        .send_to(&datagram("m1", &length_frame(b"fine")), dp.addr(1))
        .expect("send");
    assert_eq!(sub.recv_frame(WAIT), b"fine");
}

#[test]
fn an_idle_udp_session_ends() {
    let dp = start("500ms");
    let mut sub = subscriber(&dp, "nap-sub");
    let meter = udp_socket();
    meter
        .send_to(&datagram("nap", &length_frame(b"hello")), dp.addr(1))
        .expect("send");
    assert_eq!(sub.recv_frame(WAIT), b"hello");
    let line = dp.wait_for_line("udp device idle; session ended", WAIT, |l| {
        has_field(l, "device", "nap")
    });
    assert!(line.contains("listener=udp-meters"), "{line}");
    let stats = dp.wait_for_sum("idle_timeouts", 1);
    assert_eq!(
        stats.sum("conns"),
        1,
        "only the subscriber is left:\n{stats}"
    );

    // The device comes back with a new session.
    meter
        .send_to(&datagram("nap", &length_frame(b"again")), dp.addr(1))
        .expect("send");
    assert_eq!(sub.recv_frame(WAIT), b"again");
    dp.wait_for_logs("udp device online", 2, WAIT);
}

#[test]
fn a_device_that_changes_address_gets_each_downlink_once_at_its_latest_address() {
    let dp = Dataplane::start(meters_config("5m").route(Route::republish(
        "commands",
        "devices/ctl/up",
        "devices/roamer/down",
    )));
    let mut ctl = TcpDevice::login(&dp, "ctl");

    // The device's source address changes 16 times (as behind a NAT that
    // rebinds); the kernel spreads the addresses over both cores.
    let addresses: Vec<UdpSocket> = (0..16).map(|_| udp_socket()).collect();
    for (i, socket) in addresses.iter().enumerate() {
        let body = length_frame(format!("reading {i}").as_bytes());
        socket
            .send_to(&datagram("roamer", &body), dp.addr(1))
            .expect("send");
        // Far enough apart that "latest" is the same on every core.
        thread::sleep(Duration::from_millis(20));
    }
    dp.wait_for_stats("every reading", WAIT, |s| s.sum("msgs_in") >= 16);
    thread::sleep(INTEREST_SETTLE);

    let sessions = dp.logs_matching("udp device online");
    ctl.send(b"reboot");
    let mut received = Vec::new();
    for (i, socket) in addresses.iter().enumerate() {
        while let Some((bytes, _)) = udp_recv(socket, Duration::from_millis(100)) {
            received.push((i, bytes));
        }
    }
    assert_eq!(
        received,
        [(15, length_frame(b"reboot"))],
        "one downlink, to the latest address; sessions made: {sessions:#?}"
    );
    let stats = dp.stats();
    assert_eq!(
        stats.sum("conns"),
        2,
        "one tcp device and one udp session:\n{stats}"
    );
}
