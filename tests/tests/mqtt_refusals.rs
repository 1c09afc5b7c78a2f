//! What the MQTT broker refuses, with real clients: logins with a wrong
//! device secret, topics a device's product does not allow, packets over
//! the listener's `max_frame_bytes`, and bytes that are not MQTT. Each
//! refusal ends or answers only the client that earned it.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{
    free_ports, has_field, mosquitto_pub, mqtt_settings, publish, Config, Connect, Dataplane,
    Listener, MosquittoSub, MqttClient, MqttVersion, Planes, SubOptions, TcpDevice,
    EMPTY_DATAPLANE_CONFIG, INTEREST_SETTLE, WAIT,
};

use MqttVersion::{V311, V5};

/// MQTT 5.0 reason codes the tests expect.
const NOT_AUTHORIZED: u8 = 0x87;
const PACKET_TOO_LARGE: u8 = 0x95;
const QUOTA_EXCEEDED: u8 = 0x97;
/// SUBACK failure in MQTT 3.1.1.
const SUBACK_FAILURE_311: u8 = 0x80;

const SECRET: &str = "m1-secret-token";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until something accepts connections on `port` (a listener the
/// control plane just pushed).
fn wait_listening(port: u16) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Both planes with two MQTT listeners: `secure` (device secrets) and
/// `open`; product `meter` may publish under `telemetry/{device}/` and
/// subscribe under `commands/{device}/`; device `m1` is a meter.
fn secured_broker() -> (Planes, shoal_tests::Daemon, shoal_tests::Daemon, u16, u16) {
    let (planes, cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let ports = free_ports(2);
    let document = format!(
        r#"
[[listener]]
name = "secure"
protocol = "mqtt"
bind = "127.0.0.1:{secure}"
auth = "device_secret"

[[listener]]
name = "open"
protocol = "mqtt"
bind = "127.0.0.1:{open}"
auth = "none"

[[product]]
name = "meter"
publish = ["telemetry/{{device}}/#"]
subscribe = ["commands/{{device}}/#"]

[[device]]
id = "m1"
product = "meter"
secret = "{SECRET}"
"#,
        secure = ports[0],
        open = ports[1],
    );
    planes
        .ctl_with_input(&["apply", "-f", "-"], document.as_bytes())
        .assert_exit_code(0);
    wait_listening(ports[0]);
    wait_listening(ports[1]);
    (planes, cp, dp, ports[0], ports[1])
}

// ----- 6. Device logins and product ACLs -----------------------------------

#[test]
fn device_secrets_and_product_acls_guard_the_broker() {
    let (_planes, _cp, dp, secure, open) = secured_broker();
    let watcher = MosquittoSub::start(
        "watcher",
        open,
        &["telemetry/#", "devices/#"],
        &SubOptions::new(V5).qos(1),
    );
    thread::sleep(INTEREST_SETTLE);

    for version in MqttVersion::BOTH {
        let v = version.mosquitto();
        // The right secret: in.
        let ok = format!("ok-{v}");
        let topic = format!("telemetry/m1/{v}");
        let out = mosquitto_pub(
            secure,
            version,
            &["-u", "m1", "-P", SECRET, "-t", &topic, "-m", &ok, "-q", "1"],
            b"",
        );
        out.assert_exit_code(0);
        watcher.wait_payload(&ok, WAIT);
        // A wrong secret, an unknown device, no credentials: refused.
        for args in [
            &["-u", "m1", "-P", "not-the-secret"][..],
            &["-u", "ghost", "-P", "ghost-secret-1"][..],
            &[][..],
        ] {
            let mut all = args.to_vec();
            all.extend(["-t", "telemetry/m1/x", "-m", "refused", "-q", "1"]);
            let out = mosquitto_pub(secure, version, &all, b"");
            let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
            assert!(
                !out.status.success()
                    && (said.contains("bad user name or password") || said.contains("not authori")),
                "{v} {args:?} was not refused as it should be: {out:?}"
            );
        }
    }
    assert!(
        !dp.log().text().contains("not-the-secret"),
        "a secret reached the log"
    );

    // 5.0: what the product does not allow is answered with 0x87 and goes
    // nowhere; what it allows goes through.
    let mut m1 = MqttClient::paho("m1-v5", secure, V5);
    m1.connect(&Connect::new("m1-v5").login("m1", SECRET));
    assert_eq!(
        m1.publish("telemetry/m2/power", "not-mine", 1),
        NOT_AUTHORIZED
    );
    assert_eq!(
        m1.publish("devices/m1/up", "not-allowed", 1),
        NOT_AUTHORIZED
    );
    assert_eq!(m1.publish("telemetry/m1/power", "mine", 1), 0);
    assert_eq!(
        m1.subscribe(&[
            ("commands/m1/#", 1),
            ("commands/m2/#", 1),
            ("commands/#", 1),
            ("#", 1)
        ]),
        [1, NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    thread::sleep(INTEREST_SETTLE);
    publish(
        open,
        V311,
        &["-t", "commands/m1/reset", "-m", "reset", "-q", "1"],
    );
    publish(
        open,
        V311,
        &["-t", "commands/m2/reset", "-m", "not-for-m1", "-q", "1"],
    );
    let got = m1.next_message(WAIT);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_str()),
        ("commands/m1/reset", "reset")
    );
    m1.disconnect();

    // 3.1.1: a refused publish is acknowledged but dropped; a refused
    // subscription is 0x80.
    let mut m1 = MqttClient::paho("m1-v311", secure, V311);
    m1.connect(&Connect::new("m1-v311").login("m1", SECRET));
    assert_eq!(m1.publish("telemetry/m2/power", "not-mine-311", 1), 0);
    assert_eq!(m1.publish("telemetry/m1/power", "mine-311", 1), 0);
    assert_eq!(
        m1.subscribe(&[("commands/m1/#", 2), ("commands/m2/#", 2)]),
        [2, SUBACK_FAILURE_311]
    );
    m1.disconnect();

    // QoS 2 refused: PUBREC 0x87. A will on a topic it may not publish:
    // CONNACK 0x87.
    let mut raw = MqttClient::raw("m1-raw", secure, V5);
    raw.connect(&Connect::new("m1-raw").login("m1", SECRET));
    assert_eq!(
        raw.publish("telemetry/m2/q2", "not-mine-q2", 2),
        NOT_AUTHORIZED
    );
    assert_eq!(raw.publish("telemetry/m1/q2", "mine-q2", 2), 0);
    raw.disconnect();
    let mut willing = MqttClient::raw("m1-will", secure, V5);
    let ack = willing
        .try_connect(
            &Connect::new("m1-will")
                .login("m1", SECRET)
                .will("elsewhere", "x", 0),
        )
        .expect("a CONNACK");
    assert_eq!(ack.code, NOT_AUTHORIZED, "{ack:?}");

    // The watcher saw exactly what was allowed, in order.
    let got = watcher.wait_payload("mine-q2", WAIT);
    let payloads: Vec<&str> = got.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(
        payloads,
        ["ok-mqttv311", "ok-mqttv5", "mine", "mine-311", "mine-q2"]
    );
    assert!(
        !dp.logs_matching("publish refused: not allowed").is_empty(),
        "no log line for a refused publish"
    );
}

// ----- Subscriptions per session -------------------------------------------

#[test]
fn a_session_holds_at_most_max_subscriptions_filters() {
    let config = Config::new()
        .listener(Listener::mqtt("mqtt", 0))
        .raw_toml(&mqtt_settings(&[("max_subscriptions", "3")]));
    let dp = Dataplane::start(config);
    let port = dp.port(0);

    // 5.0: the filters past the third get Quota exceeded; subscribing to a
    // filter it already holds again is still allowed.
    let mut v5 = MqttClient::paho("quota-v5", port, V5);
    v5.connect(&Connect::new("quota-v5"));
    assert_eq!(
        v5.subscribe(&[("q/a", 1), ("q/b", 1), ("q/c", 0), ("q/d", 1)]),
        [1, 1, 0, QUOTA_EXCEEDED]
    );
    assert_eq!(v5.subscribe(&[("q/a", 0), ("q/e", 1)]), [0, QUOTA_EXCEEDED]);
    // The refused filter delivers nothing; the granted ones deliver.
    thread::sleep(INTEREST_SETTLE);
    publish(port, V311, &["-t", "q/d", "-m", "refused", "-q", "1"]);
    publish(port, V311, &["-t", "q/b", "-m", "granted", "-q", "1"]);
    let got = v5.next_message(WAIT);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_str()),
        ("q/b", "granted")
    );
    v5.disconnect();

    // 3.1.1 has no Quota exceeded: the failure code 0x80.
    let mut v311 = MqttClient::paho("quota-v311", port, V311);
    v311.connect(&Connect::new("quota-v311"));
    assert_eq!(
        v311.subscribe(&[("r/a", 1), ("r/b", 1), ("r/c", 1), ("r/d", 1)]),
        [1, 1, 1, SUBACK_FAILURE_311]
    );
    v311.disconnect();

    let stats = dp.wait_for_stats("3 refused subscriptions", WAIT, |s| {
        s.sum("mqtt_subscriptions_refused") >= 3
    });
    assert_eq!(stats.sum("mqtt_subscriptions_refused"), 3, "{stats}");
    assert!(
        !dp.logs_matching("subscription refused: the session holds max_subscriptions")
            .is_empty(),
        "no log line for a refused subscription"
    );
}

// ----- 7. Oversized packets -------------------------------------------------

#[test]
fn a_packet_over_max_frame_bytes_closes_only_its_connection() {
    let dp =
        Dataplane::start(Config::new().listener(Listener::mqtt("mqtt", 0).max_frame_bytes(1024)));
    let port = dp.port(0);
    let bystander = MosquittoSub::start("bystander", port, &["big/#"], &SubOptions::new(V5).qos(1));
    thread::sleep(INTEREST_SETTLE);

    // 5.0, a client that ignores the Maximum Packet Size of the CONNACK.
    let mut v5 = MqttClient::raw("raw-v5", port, V5);
    v5.connect(&Connect::new("big-v5"));
    assert_eq!(v5.publish("big/fits", "fits", 1), 0);
    v5.publish_size("big/v5", 4096, 1);
    match v5.wait_closed_by_server(WAIT) {
        Some(code) => assert_eq!(code, PACKET_TOO_LARGE, "DISCONNECT reason"),
        None => eprintln!("the 5.0 client saw its connection close without a DISCONNECT"),
    }
    // 3.1.1: the connection closes.
    let mut v311 = MqttClient::raw("raw-v311", port, V311);
    v311.connect(&Connect::new("big-v311"));
    v311.publish_size("big/v311", 4096, 1);
    assert_eq!(v311.wait_closed_by_server(WAIT), None);
    // mosquitto_pub 3.1.1 does not know the limit either.
    let big = "y".repeat(4096);
    let _ = mosquitto_pub(
        port,
        V311,
        &["-t", "big/mosquitto", "-m", &big, "-q", "1"],
        b"",
    );

    let lines = dp.wait_for_logs("closing mqtt connection", 3, WAIT);
    assert!(
        lines.iter().all(|l| l.contains("PacketTooLarge")),
        "{lines:#?}"
    );
    // The bystander still works, and saw none of the large ones.
    let under = "z".repeat(900);
    publish(port, V311, &["-t", "big/under", "-m", &under, "-q", "1"]);
    publish(
        port,
        V5,
        &["-t", "big/after", "-m", "still-here", "-q", "1"],
    );
    let got = bystander.wait_for("three messages", WAIT, |m| m.len() >= 3);
    let mut topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(topics, ["big/after", "big/fits", "big/under"]);
    let stats = dp.wait_for_stats("only the bystander left", WAIT, |s| {
        s.sum("conns") == 1 && s.sum("mqtt_protocol_errors") >= 3
    });
    assert_eq!(stats.sum("mqtt_protocol_errors"), 3, "{stats}");
}

// ----- 11. Bytes that are not MQTT -------------------------------------------

#[test]
fn bad_bytes_close_only_their_connection_and_are_logged() {
    let config = Config::new()
        .listener(Listener::mqtt("mqtt", 0))
        .raw_toml(&mqtt_settings(&[("connect_timeout", "\"1s\"")]));
    let dp = Dataplane::start(config);
    let port = dp.port(0);
    let good = MosquittoSub::start("good", port, &["fine/#"], &SubOptions::new(V311).qos(1));
    thread::sleep(INTEREST_SETTLE);

    let bad_inputs: [(&str, &[u8]); 4] = [
        ("garbage", b"\x00\x00garbage that is not mqtt"),
        // CONNECT naming protocol "MQTX".
        (
            "bad protocol name",
            b"\x10\x10\x00\x04MQTX\x04\x02\x00\x3c\x00\x04abcd",
        ),
        // A remaining length of five bytes.
        ("bad remaining length", b"\x10\xff\xff\xff\xff\x01"),
        // PINGREQ before CONNECT.
        ("not connect first", b"\xc0\x00"),
    ];
    for (what, bytes) in bad_inputs {
        let mut conn = TcpDevice::connect_raw(dp.addr(0));
        let peer = conn.local_addr().to_string();
        conn.send_raw(bytes);
        conn.expect_closed(WAIT);
        let line = dp.wait_for_line("closing mqtt connection", WAIT, |l| {
            has_field(l, "peer", &peer)
        });
        assert!(line.contains(" WARN "), "{what}: {line}");
        publish(port, V5, &["-t", "fine/after", "-m", what, "-q", "1"]);
        good.wait_payload(what, WAIT);
    }
    // A connection that never sends CONNECT is closed after
    // connect_timeout.
    let mut silent = TcpDevice::connect_raw(dp.addr(0));
    silent.expect_closed(WAIT);

    let errors = bad_inputs.len() as u64;
    let stats = dp.wait_for_stats("only the good client left", WAIT, |s| {
        s.sum("conns") == 1 && s.sum("mqtt_protocol_errors") >= errors
    });
    assert_eq!(stats.sum("mqtt_protocol_errors"), errors, "{stats}");
    publish(port, V311, &["-t", "fine/last", "-m", "last", "-q", "1"]);
    good.wait_payload("last", WAIT);
}
