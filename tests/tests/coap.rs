//! CoAP devices with libcoap's `coap-client-notls`: posts (whole and
//! block-wise) reach the bus, bodies over the limit get 4.13, observers of
//! `/devices/{id}/down` receive downlink published over MQTT (Block2 for a
//! large one), `/.well-known/core` lists the resources, `device_secret`
//! listeners check the `secret=` query, malformed datagrams get the RFC's
//! answer while other clients are served, and a duplicate CON is answered
//! again without being published twice.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use shoal_protocols::coap::{decode, Code, MessageBuilder, MessageType, Token};
use shoal_tests::{
    publish, run_program, udp_recv, udp_socket, Config, Dataplane, Listener, MqttVersion, Planes,
    Route, RunOutput, TcpDevice, EMPTY_DATAPLANE_CONFIG, INTEREST_SETTLE, WAIT,
};

/// The client's own bound on a run (`-B`), and the test's.
const CLIENT_SECS: &str = "5";
const CLIENT_LIMIT: Duration = Duration::from_secs(10);
/// The listener's body limit in these tests.
const MAX_BODY: usize = 4096;

/// `coap-client-notls -B 5 ARGS URI`, `stdin` for `-f -`; shows the
/// messages exchanged (`-v 6`) so that codes can be checked.
fn coap_client(args: &[&str], uri: &str, stdin: &[u8]) -> RunOutput {
    let mut all = vec!["-B", CLIENT_SECS, "-v", "6"];
    all.extend_from_slice(args);
    all.push(uri);
    let out = run_program("coap-client-notls", &all, stdin, CLIENT_LIMIT);
    out.assert_exit_code(0);
    out
}

/// A coap listener (4 KiB bodies), a TCP listener for the watcher, an
/// MQTT listener; every CoAP uplink is copied to the TCP device `watcher`.
fn coap_config() -> Config {
    Config::new()
        .listener(Listener::coap("coap", 0).max_frame_bytes(MAX_BODY as u32))
        .listener(Listener::tcp("tcp", 1))
        .listener(Listener::mqtt("mqtt", 2))
        .route(
            Route::republish("to-watcher", "devices/+/up/#", "devices/watcher/down")
                .listener("coap"),
        )
}

fn watcher(dp: &Dataplane) -> TcpDevice {
    let w = TcpDevice::connect(dp.addr(1), "watcher");
    dp.device_core("watcher", WAIT);
    thread::sleep(INTEREST_SETTLE);
    w
}

fn uri(addr: SocketAddr, path: &str) -> String {
    format!("coap://{addr}{path}")
}

/// Printable bytes that are not all the same.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn posts_whole_and_blockwise_reach_the_bus_and_bodies_are_bounded() {
    let dp = Dataplane::start(coap_config());
    let mut watcher = watcher(&dp);
    let coap = dp.addr(0);

    let out = coap_client(
        &["-m", "post", "-e", "hello coap"],
        &uri(coap, "/devices/d1/up"),
        b"",
    );
    assert!(out.stdout.contains("c:2.04"), "{out:?}");
    assert_eq!(watcher.recv_frame(WAIT), b"hello coap");

    // A subtopic, and a NON request (answered with a NON).
    let out = coap_client(
        &["-N", "-m", "post", "-e", "21.5"],
        &uri(coap, "/devices/d1/up/temp/room"),
        b"",
    );
    assert!(out.stdout.contains("t:NON c:2.04"), "{out:?}");
    assert_eq!(watcher.recv_frame(WAIT), b"21.5");

    // Block-wise: 64-byte blocks, answered 2.31 each, 2.04 with the last
    // block's Block1 at the end.
    let payload = body(3000);
    let out = coap_client(
        &["-b", "64", "-m", "post", "-f", "-"],
        &uri(coap, "/devices/d2/up"),
        &payload,
    );
    assert!(out.stdout.contains("c:2.04 "), "{out:?}");
    assert!(out.stdout.contains("Block1:46/_/64"), "{out:?}");
    assert_eq!(watcher.recv_frame(WAIT), payload);

    // Over the limit: 4.13 with the limit in Size1, nothing published.
    let out = coap_client(
        &["-b", "64", "-m", "post", "-f", "-"],
        &uri(coap, "/devices/d2/up"),
        &body(MAX_BODY + 1000),
    );
    assert!(out.stdout.contains("c:4.13"), "{out:?}");
    assert!(out.stdout.contains("Size1:4096"), "{out:?}");
    watcher.expect_no_frame(Duration::from_millis(200));

    // Wrong method, unknown path, bad subtopic.
    let out = coap_client(&["-m", "put", "-e", "x"], &uri(coap, "/devices/d1/up"), b"");
    assert!(out.stdout.contains("c:4.05"), "{out:?}");
    let out = coap_client(&[], &uri(coap, "/nothing/here"), b"");
    assert!(out.stdout.contains("c:4.04"), "{out:?}");

    let out = coap_client(&[], &uri(coap, "/.well-known/core"), b"");
    assert!(
        out.stdout
            .contains("</devices/{id}/up>;rt=\"shoal.device.up\""),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("</devices/{id}/down>;rt=\"shoal.device.down\";obs"),
        "{out:?}"
    );
    let out = coap_client(&[], &uri(coap, "/.well-known/core?obs"), b"");
    assert!(
        out.stdout.contains("</devices/{id}/down>") && !out.stdout.contains("/up>"),
        "{out:?}"
    );

    // Three posts published; the refused ones were counted as errors.
    let stats = dp.wait_for_sum("msgs_in", 3);
    assert_eq!(stats.sum("frame_errors"), 0, "{stats}");
}

#[test]
fn observers_receive_downlink_and_large_payloads_blockwise() {
    let dp = Dataplane::start(coap_config());
    let coap = dp.addr(0);
    let mqtt = dp.port(2);

    let observe_uri = uri(coap, "/devices/o1/down");
    let observer = thread::spawn(move || {
        run_program(
            "coap-client-notls",
            &["-B", "8", "-s", "4", "-w", &observe_uri],
            b"",
            CLIENT_LIMIT,
        )
    });
    dp.wait_for_log("coap device online", WAIT);
    thread::sleep(INTEREST_SETTLE);

    let large = String::from_utf8(body(2500)).unwrap();
    for (topic, message) in [
        ("devices/o1/down", "first"),
        ("devices/o1/down/valve", "second"),
        ("devices/o1/down", large.as_str()),
        ("devices/o1/down", "after the large one"),
    ] {
        publish(mqtt, MqttVersion::V311, &["-t", topic, "-m", message]);
    }
    let out = observer.join().unwrap();
    out.assert_exit_code(0);
    let text = out.stdout.replace('\n', "");
    let first = text.find("first").expect(&out.stdout);
    let second = text.find("second").expect(&out.stdout);
    let whole = text.find(&large).expect("the large payload, whole");
    let after = text.find("after the large one").expect(&out.stdout);
    assert!(first < second && second < whole && whole < after, "{out:?}");

    let stats = dp.stats();
    assert!(stats.sum("msgs_out") >= 4, "{stats}");
}

#[test]
fn device_secret_listeners_check_the_secret_query() {
    let (planes, _cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let (coap, tcp) = planes.secure_listener_with_watcher("coap", "c1", "c1-secret-token");
    let mut watcher = TcpDevice::connect(tcp, "watcher");
    thread::sleep(INTEREST_SETTLE);

    // Several runs: each has its own source port, so both the core that
    // owns the device and the other one check it.
    for n in 0..4 {
        let message = format!("reading {n}");
        let out = coap_client(
            &["-m", "post", "-e", &message],
            &uri(coap, "/devices/c1/up?secret=c1-secret-token"),
            b"",
        );
        assert!(out.stdout.contains("c:2.04"), "{out:?}");
        assert_eq!(watcher.recv_frame(WAIT), message.as_bytes());
    }
    for path in [
        "/devices/c1/up?secret=wrong-secret",
        "/devices/c1/up",
        "/devices/ghost/up?secret=c1-secret-token",
    ] {
        let out = coap_client(&["-m", "post", "-e", "nope"], &uri(coap, path), b"");
        assert!(out.stdout.contains("c:4.01"), "{path}: {out:?}");
    }
    watcher.expect_no_frame(Duration::from_millis(200));
    let log = dp.log().text();
    assert!(
        !log.contains("c1-secret-token") && !log.contains("wrong-secret"),
        "a secret reached the log"
    );
    assert!(log.contains("coap device refused"), "{log}");
}

/// A CON request built with the codec.
fn request(code: Code, message_id: u16, token: u8, path: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = MessageBuilder::new(
        MessageType::Confirmable,
        code,
        message_id,
        Token::new(&[token]).unwrap(),
    );
    message.uri_path(path).unwrap();
    message.payload(payload);
    let mut bytes = Vec::new();
    message.encode(&mut bytes);
    bytes
}

/// The next datagram on `socket`.
fn answer(socket: &UdpSocket) -> Vec<u8> {
    udp_recv(socket, WAIT).expect("an answer").0
}

#[test]
fn malformed_datagrams_get_the_rfc_answer_and_duplicates_are_not_published_twice() {
    let dp = Dataplane::start(coap_config());
    let mut watcher = watcher(&dp);
    let coap = dp.addr(0);
    let device = udp_socket();

    // Token length 9 in a CON: a format error, rejected with an RST.
    let mut bad_token = vec![0x49, 0x01, 0x12, 0x34];
    bad_token.extend_from_slice(&[0; 9]);
    device.send_to(&bad_token, coap).unwrap();
    assert_eq!(answer(&device), [0x70, 0x00, 0x12, 0x34]);
    // An unknown critical option (2049): 4.02 piggybacked on the ACK.
    let bad_option = [0x40, 0x01, 0x22, 0x22, 0xE1, 0x06, 0xF4, b'x'];
    device.send_to(&bad_option, coap).unwrap();
    assert_eq!(answer(&device), [0x60, 0x82, 0x22, 0x22]);
    // A ping: RST. Too short: nothing.
    device.send_to(&[0x40, 0x00, 0x33, 0x33], coap).unwrap();
    assert_eq!(answer(&device), [0x70, 0x00, 0x33, 0x33]);
    device.send_to(&[0x40], coap).unwrap();
    assert!(udp_recv(&device, Duration::from_millis(200)).is_none());

    // The same CON twice: the same answer twice, one message on the bus.
    let post = request(Code::POST, 0x4444, 0xAB, "/devices/dup/up", b"once");
    device.send_to(&post, coap).unwrap();
    let first = answer(&device);
    device.send_to(&post, coap).unwrap();
    assert_eq!(answer(&device), first);
    let ack = decode(&first).unwrap();
    assert_eq!(
        (ack.mtype, ack.code, ack.message_id, ack.token.as_bytes()),
        (
            MessageType::Acknowledgement,
            Code::CHANGED,
            0x4444,
            &[0xAB][..]
        )
    );
    assert_eq!(watcher.recv_frame(WAIT), b"once");
    watcher.expect_no_frame(Duration::from_millis(300));

    // A plain GET from the same socket (so the same core) reads the latest
    // downlink payload of the device's session on that core.
    let get = request(Code::GET, 0x5555, 0xCD, "/devices/dup/down", b"");
    device.send_to(&get, coap).unwrap();
    let empty = answer(&device);
    assert_eq!(decode(&empty).unwrap().code, Code::CONTENT);
    assert!(decode(&empty).unwrap().payload.is_empty());
    thread::sleep(INTEREST_SETTLE);
    publish(
        dp.port(2),
        MqttVersion::V311,
        &["-t", "devices/dup/down", "-m", "latest command"],
    );
    thread::sleep(Duration::from_millis(200));
    let get = request(Code::GET, 0x5556, 0xCE, "/devices/dup/down", b"");
    device.send_to(&get, coap).unwrap();
    let latest = answer(&device);
    assert_eq!(decode(&latest).unwrap().payload, b"latest command");

    // The listener carries on serving another client.
    let out = coap_client(
        &["-m", "post", "-e", "still here"],
        &uri(coap, "/devices/other/up"),
        b"",
    );
    assert!(out.stdout.contains("c:2.04"), "{out:?}");
    assert_eq!(watcher.recv_frame(WAIT), b"still here");
    // Bad token, bad option, too short; the duplicate, the downlink and
    // the last post published once each.
    let stats = dp.wait_for_sum("frame_errors", 3);
    assert_eq!(stats.sum("msgs_in"), 3, "{stats}");
}
