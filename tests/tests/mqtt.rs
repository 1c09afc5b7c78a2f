//! The MQTT broker with real clients (mosquitto 2 and paho-mqtt 1.6, MQTT
//! 3.1.1 and 5.0): delivery at every QoS across cores, retained messages,
//! wills, persistent sessions that move between cores, shared
//! subscriptions, session take-over, MQTT over WebSocket, one bus with raw
//! TCP devices, and the pools after a load. Refusals (logins, ACLs,
//! oversized packets, bad bytes) are in `mqtt_refusals.rs`.

use std::ffi::OsStr;
use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{
    by_sender, core_with_one, mqtt_config, mqtt_settings, publish, publish_lines, run_program,
    script_path, wait_per_core, Backend, Config, Connect, Dataplane, Listener, MosquittoSub,
    MqttClient, MqttVersion, SubMessage, SubOptions, TcpDevice, Transport, INTEREST_SETTLE, PYTHON,
    WAIT,
};

use MqttVersion::{V311, V5};

/// Most subscribers a test starts to get at least one on every core.
const MAX_SPREAD: usize = 16;

/// Starts subscribers of `topics` (versions alternating, QoS `qos`) until
/// there are at least `min` and every core has at least one of them
/// (SO_REUSEPORT spreads connections by their addresses); waits for their
/// SUBACKs and for their interest to reach every core. `others`: the
/// connections open before, waited for first.
fn subscribers_on_every_core(
    dp: &Dataplane,
    name: &str,
    topics: &[&str],
    qos: u8,
    min: usize,
    others: u64,
) -> Vec<MosquittoSub> {
    let before = wait_per_core(dp, "conns", others);
    let mut subs: Vec<MosquittoSub> = Vec::new();
    let mut wanted = min;
    loop {
        while subs.len() < wanted {
            let i = subs.len();
            let version = if i % 2 == 0 { V311 } else { V5 };
            subs.push(MosquittoSub::start(
                &format!("{name}{i}"),
                dp.port(0),
                topics,
                &SubOptions::new(version).qos(qos),
            ));
        }
        let total = others + subs.len() as u64;
        let now = wait_per_core(dp, "conns", total);
        let new: Vec<u64> = now.iter().zip(&before).map(|(n, b)| n - b).collect();
        if new.iter().all(|n| *n > 0) {
            eprintln!("{} subscribers per core: {new:?}", subs.len());
            thread::sleep(INTEREST_SETTLE);
            return subs;
        }
        assert!(
            subs.len() < MAX_SPREAD,
            "{} subscribers all landed on one core: {new:?}",
            subs.len()
        );
        wanted += 1;
    }
}

fn payloads(messages: &[SubMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.payload.as_str()).collect()
}

// ----- 1. QoS 0, 1 and 2 across cores --------------------------------------

#[test]
fn every_qos_reaches_every_subscriber_on_every_core_in_order() {
    const PER_PUBLISHER: u32 = 100;
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);
    let subs = subscribers_on_every_core(&dp, "sub", &["load/#"], 2, 6, 0);

    // Six publishers at once: QoS 0, 1 and 2, each in both versions.
    let publishers: Vec<(String, MqttVersion, u8)> = [V311, V5]
        .into_iter()
        .flat_map(|v| [0u8, 1, 2].map(|qos| (v, qos)))
        .map(|(v, qos)| (format!("q{qos}{}", v.mosquitto()), v, qos))
        .collect();
    let threads: Vec<_> = publishers
        .iter()
        .cloned()
        .map(|(name, version, qos)| {
            thread::spawn(move || {
                let lines: Vec<String> =
                    (0..PER_PUBLISHER).map(|i| format!("{name}-{i}")).collect();
                publish_lines(port, version, &format!("load/{name}"), qos, &lines);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a publisher thread");
    }

    let all = publishers.len() * PER_PUBLISHER as usize;
    let expected: Vec<u32> = (0..PER_PUBLISHER).collect();
    for sub in &subs {
        // Nothing overloads the broker here, so QoS 0 arrives too.
        let got = sub.wait_messages(all, Duration::from_secs(20));
        let by = by_sender(payloads(&got));
        for (name, _, qos) in &publishers {
            let seqs = by.get(name).cloned().unwrap_or_default();
            assert_eq!(
                seqs, expected,
                "{}: {name} (QoS {qos}) arrived as {seqs:?}",
                sub.name
            );
        }
        for m in &got {
            let (name, _, qos) = publishers
                .iter()
                .find(|(n, _, _)| m.payload.starts_with(&format!("{n}-")))
                .unwrap_or_else(|| panic!("{}: unknown message {m:?}", sub.name));
            assert_eq!(m.topic, format!("load/{name}"), "{m:?}");
            assert_eq!(
                m.qos, *qos,
                "{}: delivered at the publish QoS: {m:?}",
                sub.name
            );
            assert!(!m.retain, "{m:?}");
        }
        assert_eq!(got.len(), all, "{}: duplicates", sub.name);
    }
    let stats = dp.stats();
    assert_eq!(stats.sum("mesh_drops"), 0, "{stats}");
    assert_eq!(stats.sum("mqtt_queue_drops"), 0, "{stats}");
}

/// A publish that follows a SUBACK in time reaches the subscription,
/// whichever core the publisher is on. (The other tests let a new
/// subscription settle for `INTEREST_SETTLE`, as the suite does for raw
/// devices; an MQTT client has only the SUBACK to go by.)
#[test]
fn a_publish_right_after_the_suback_reaches_the_subscriber_from_either_core() {
    let dp = Dataplane::start(mqtt_config());
    let script = script_path("publish_after_suback.py");
    let port = dp.port(0).to_string();
    let args = [script.as_os_str(), OsStr::new("--port"), OsStr::new(&port)];
    let out = run_program(PYTHON, &args, b"", Duration::from_secs(60));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
}

// ----- 2. Retained messages -------------------------------------------------

/// A retained publish is acknowledged only when every core has stored it,
/// so a subscriber on either core that subscribes right after the PUBACK
/// gets it.
#[test]
fn a_retained_message_is_on_every_core_when_its_puback_arrives() {
    let dp = Dataplane::start(mqtt_config());
    let script = script_path("publish_after_suback.py");
    let port = dp.port(0).to_string();
    let args = [
        script.as_os_str(),
        OsStr::new("--port"),
        OsStr::new(&port),
        OsStr::new("--retained"),
        OsStr::new("--rounds"),
        OsStr::new("200"),
    ];
    let out = run_program(PYTHON, &args, b"", Duration::from_secs(60));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn retained_messages_reach_new_subscribers_on_every_core_until_cleared() {
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);
    let live = MosquittoSub::start("live", port, &["ret/#"], &SubOptions::new(V311));
    thread::sleep(INTEREST_SETTLE);

    publish(port, V5, &["-t", "ret/a", "-m", "kept", "-q", "1", "-r"]);
    // An established subscription gets it with the retain flag clear.
    let got = live.wait_messages(1, WAIT);
    assert_eq!(payloads(&got), ["kept"]);
    assert!(!got[0].retain, "live delivery keeps RETAIN 0: {:?}", got[0]);
    // Every core keeps the whole set.
    let kept = wait_per_core(&dp, "mqtt_retained", 2);
    assert_eq!(kept, [1, 1], "retained messages per core");

    // New subscribers on both cores get it at once, flagged retained.
    let subs = subscribers_on_every_core(&dp, "new", &["ret/a"], 2, 4, 1);
    for sub in &subs {
        let first = sub.wait_messages(1, WAIT)[0].clone();
        assert_eq!(first.payload, "kept", "{}", sub.name);
        assert!(first.retain, "{}: {first:?}", sub.name);
        assert_eq!(
            first.qos, 1,
            "{}: min(publish, subscription): {first:?}",
            sub.name
        );
    }
    drop(subs);

    // An empty retained payload clears it everywhere (and is delivered
    // to the live subscriber as an ordinary message).
    publish(port, V311, &["-t", "ret/a", "-n", "-q", "1", "-r"]);
    let got = live.wait_messages(2, WAIT);
    assert_eq!(payloads(&got), ["kept", ""]);
    let kept = wait_per_core(&dp, "mqtt_retained", 0);
    assert_eq!(kept, [0, 0], "retained messages per core");
    let subs = subscribers_on_every_core(&dp, "after", &["ret/a"], 2, 4, 1);
    publish(port, V311, &["-t", "ret/a", "-m", "marker", "-q", "1"]);
    for sub in &subs {
        let first = sub.wait_messages(1, WAIT)[0].clone();
        assert_eq!(
            first.payload, "marker",
            "{}: the cleared message came",
            sub.name
        );
        assert!(!first.retain, "{first:?}");
    }
}

// ----- 3. Wills -----------------------------------------------------------

#[test]
fn a_will_follows_an_abrupt_end_and_not_a_clean_disconnect() {
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);
    let watcher = MosquittoSub::start("watcher", port, &["will/#"], &SubOptions::new(V5));

    // kill -9: the will goes out.
    let mut abrupt = MosquittoSub::start(
        "abrupt",
        port,
        &["idle/a"],
        &SubOptions::new(V311).args(&[
            "--will-topic",
            "will/a",
            "--will-payload",
            "gone-a",
            "--will-qos",
            "1",
        ]),
    );
    wait_per_core(&dp, "conns", 2);
    abrupt.kill9();
    let got = watcher.wait_messages(1, WAIT);
    assert_eq!(payloads(&got), ["gone-a"]);
    assert_eq!(got[0].topic, "will/a");

    // A clean DISCONNECT (mosquitto_sub -C 1 leaves after one message):
    // no will.
    let mut clean = MosquittoSub::start(
        "clean",
        port,
        &["trigger/b"],
        &SubOptions::new(V5).args(&[
            "-C",
            "1",
            "--will-topic",
            "will/b",
            "--will-payload",
            "gone-b",
        ]),
    );
    thread::sleep(INTEREST_SETTLE);
    publish(port, V5, &["-t", "trigger/b", "-m", "leave", "-q", "1"]);
    let status = clean.wait_exit(WAIT);
    assert!(status.success(), "mosquitto_sub -C 1: {status}");
    wait_per_core(&dp, "conns", 1);
    publish(port, V5, &["-t", "will/b", "-m", "marker-b", "-q", "1"]);
    let got = watcher.wait_messages(2, WAIT);
    assert_eq!(
        payloads(&got),
        ["gone-a", "marker-b"],
        "no will after DISCONNECT"
    );
}

#[test]
fn a_delayed_will_waits_and_a_quick_reconnect_suppresses_it() {
    const DELAY_SECS: u32 = 2;
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);
    let watcher = MosquittoSub::start("watcher", port, &["will/#"], &SubOptions::new(V311));
    let session = |id: &str, payload: &str| {
        Connect::new(id)
            .expiry(60)
            .will(&format!("will/{id}"), payload, DELAY_SECS)
    };

    // One client dies and stays away: its will comes after the delay.
    let mut gone = MqttClient::paho("gone", port, V5);
    gone.connect(&session("gone", "gone-for-good"));
    // The other dies and is back within the delay: no will.
    let mut back = MqttClient::paho("back", port, V5);
    back.connect(&session("back", "should-not-come"));
    wait_per_core(&dp, "conns", 3);
    gone.kill9();
    back.kill9();
    let killed = Instant::now();
    let mut again = MqttClient::paho("back-again", port, V5);
    let ack = again.connect(&Connect::new("back").resume().expiry(60));
    assert!(ack.session_present, "{ack:?}");

    let got = watcher.wait_messages(1, Duration::from_secs(u64::from(DELAY_SECS) + 5));
    assert_eq!(payloads(&got), ["gone-for-good"]);
    // Past the delay (and the broker's half-second sweep) of the other.
    let past = killed + Duration::from_secs(u64::from(DELAY_SECS)) + Duration::from_millis(800);
    thread::sleep(past.saturating_duration_since(Instant::now()));
    publish(port, V311, &["-t", "will/back", "-m", "marker", "-q", "1"]);
    let got = watcher.wait_messages(2, WAIT);
    assert_eq!(payloads(&got), ["gone-for-good", "marker"]);
    again.disconnect();
}

// ----- 4. Persistent sessions ---------------------------------------------

/// Subscribes with a persistent session, then rounds of: disconnect,
/// QoS 1 messages published meanwhile, reconnect; until the session has
/// moved between cores at least once.
fn persistent_session_resumes_with_its_queue(version: MqttVersion) {
    const QUEUED: u32 = 20;
    const MAX_ROUNDS: u32 = 10;
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);
    let id = format!("persist-{}", version.mosquitto());
    let topic = format!("persist/{}", version.mosquitto());
    let connect = Connect::new(&id).resume().expiry(300);
    let mut client = MqttClient::paho("persistent", port, version);
    let first = client.connect(&connect);
    assert!(!first.session_present, "{first:?}");
    assert_eq!(client.subscribe(&[(&topic, 1)]), [1]);
    thread::sleep(INTEREST_SETTLE);

    let mut moves = 0;
    let mut round = 0;
    while round < 3 || (moves == 0 && round < MAX_ROUNDS) {
        client.disconnect();
        let offline_on = core_with_one(&dp, "mqtt_offline");
        let lines: Vec<String> = (0..QUEUED).map(|i| format!("r{round}-{i}")).collect();
        publish_lines(port, V311, &topic, 1, &lines);

        let ack = client.connect(&connect);
        assert!(ack.session_present, "round {round}: {ack:?}");
        let got = client.messages(QUEUED as usize, WAIT);
        let seqs: Vec<&str> = got.iter().map(|m| m.payload.as_str()).collect();
        assert_eq!(seqs, lines, "round {round}");
        assert!(
            got.iter().all(|m| m.qos == 1 && m.topic == topic),
            "{got:?}"
        );
        let online_on = core_with_one(&dp, "mqtt_sessions");
        assert_eq!(wait_per_core(&dp, "mqtt_offline", 0), [0, 0]);
        if online_on != offline_on {
            moves += 1;
        }
        eprintln!("round {round}: offline on core {offline_on}, resumed on core {online_on}");
        round += 1;
    }
    assert!(
        moves > 0,
        "in {round} reconnects the session never moved to the other core"
    );
    // Nothing more was queued: nothing more comes.
    assert_eq!(client.try_next_message(Duration::from_millis(200)), None);
}

#[test]
fn a_persistent_session_311_resumes_on_either_core_with_its_queue() {
    persistent_session_resumes_with_its_queue(V311);
}

#[test]
fn a_persistent_session_5_resumes_on_either_core_with_its_queue() {
    persistent_session_resumes_with_its_queue(V5);
}

// ----- 5. Shared subscriptions ----------------------------------------------

#[test]
fn a_shared_subscription_gives_each_message_to_one_member() {
    const MESSAGES: usize = 100;
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);
    let plain = MosquittoSub::start("plain", port, &["shared/t"], &SubOptions::new(V5).qos(1));
    let members = subscribers_on_every_core(&dp, "member", &["$share/g/shared/t"], 1, 4, 1);
    let out_before = dp.stats().sum("msgs_out");

    let halves: Vec<_> = [V311, V5]
        .into_iter()
        .enumerate()
        .map(|(p, version)| {
            thread::spawn(move || {
                let lines: Vec<String> = (0..MESSAGES / 2).map(|i| format!("p{p}-{i}")).collect();
                publish_lines(port, version, "shared/t", 1, &lines);
            })
        })
        .collect();
    for t in halves {
        t.join().expect("a publisher thread");
    }

    // The plain subscriber gets all of them; the group, each once.
    plain.wait_messages(MESSAGES, WAIT);
    let total = || members.iter().map(|m| m.messages().len()).sum::<usize>();
    let deadline = Instant::now() + WAIT;
    while total() < MESSAGES && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let delivered = 2 * MESSAGES as u64;
    let stats = dp.wait_for_stats("every delivery counted", WAIT, |s| {
        s.sum("msgs_out") >= out_before + delivered
    });
    assert_eq!(stats.sum("msgs_out"), out_before + delivered, "{stats}");
    let mut all: Vec<String> = Vec::new();
    for m in &members {
        let got = m.messages();
        eprintln!("{} got {} messages", m.name, got.len());
        assert!(!got.is_empty(), "{} got no message of its group", m.name);
        all.extend(got.into_iter().map(|g| g.payload));
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, MESSAGES, "deliveries to the group");
    assert_eq!(all.len(), MESSAGES, "distinct messages to the group");
}

// ----- 8. Session take-over -------------------------------------------------

#[test]
fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    const MAX_ATTEMPTS: usize = 10;
    let dp = Dataplane::start(mqtt_config());
    let port = dp.port(0);

    // 5.0: the older connection hears DISCONNECT 0x8E (Session taken over),
    // whichever core either of them is on.
    let mut older = MqttClient::paho("older", port, V5);
    older.connect(&Connect::new("taken"));
    let mut older_core = core_with_one(&dp, "mqtt_sessions");
    let mut crossed = 0;
    let mut attempt = 0;
    while attempt < 2 || (crossed == 0 && attempt < MAX_ATTEMPTS) {
        let mut newer = MqttClient::paho(&format!("newer{attempt}"), port, V5);
        newer.connect(&Connect::new("taken"));
        let code = older.wait_closed_by_server(WAIT);
        assert_eq!(
            code,
            Some(0x8E),
            "attempt {attempt}: the older connection's DISCONNECT"
        );
        let newer_core = core_with_one(&dp, "mqtt_sessions");
        if newer_core != older_core {
            crossed += 1;
        }
        eprintln!(
            "attempt {attempt}: the session on core {older_core} taken over on core {newer_core}"
        );
        // The newer one works.
        assert_eq!(newer.subscribe(&[("taken/check", 1)]), [1]);
        assert_eq!(
            newer.publish("taken/check", &format!("hello-{attempt}"), 1),
            0
        );
        assert_eq!(newer.next_message(WAIT).payload, format!("hello-{attempt}"));
        older = newer;
        older_core = newer_core;
        attempt += 1;
    }
    assert!(crossed > 0, "in {attempt} take-overs none crossed cores");
    dp.wait_for_log("its older connection is taken over", WAIT);

    // 3.1.1: the older connection is closed.
    let mut first = MqttClient::paho("first", port, V311);
    first.connect(&Connect::new("taken-311"));
    let mut second = MqttClient::paho("second", port, V311);
    second.connect(&Connect::new("taken-311"));
    assert_eq!(first.wait_closed_by_server(WAIT), None);
    assert_eq!(second.subscribe(&[("taken/311", 2)]), [2]);
    assert_eq!(second.publish("taken/311", "works", 2), 0);
    assert_eq!(second.next_message(WAIT).payload, "works");
}

// ----- 9. MQTT over WebSocket -------------------------------------------------

#[test]
fn mqtt_over_websocket_meets_mqtt_over_tcp() {
    let config = mqtt_config().listener(Listener::http("http", 1));
    let dp = Dataplane::start(config);
    let (tcp, http) = (dp.port(0), dp.port(1));
    let watcher = MosquittoSub::start("watcher", tcp, &["ws/out/#"], &SubOptions::new(V311));

    let clients = [Backend::Raw, Backend::Paho]
        .into_iter()
        .flat_map(|b| MqttVersion::BOTH.map(|v| (b, v)));
    for (n, (backend, version)) in clients.enumerate() {
        let name = format!("{backend:?}-{}", version.mosquitto());
        let mut ws = MqttClient::start(&name, backend, Transport::WebSocket, http, version);
        ws.connect(&Connect::new(&format!("ws-{n}")));
        let inbox = format!("ws/in/{n}");
        assert_eq!(ws.subscribe(&[(&inbox, 1)]), [1], "{name}");
        thread::sleep(INTEREST_SETTLE);
        // From TCP to the WebSocket client...
        publish(tcp, V5, &["-t", &inbox, "-m", "from-tcp", "-q", "1"]);
        let got = ws.next_message(WAIT);
        assert_eq!(
            (got.topic.as_str(), got.payload.as_str(), got.qos),
            (inbox.as_str(), "from-tcp", 1),
            "{name}"
        );
        // ...and back.
        let payload = format!("from-{name}");
        assert_eq!(ws.publish(&format!("ws/out/{n}"), &payload, 2), 0, "{name}");
        watcher.wait_payload(&payload, WAIT);
        ws.disconnect();
    }

    // Other paths, and /mqtt without the `mqtt` subprotocol, are refused.
    for (request, status) in [
        ("GET /other HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        (
            "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "400",
        ),
    ] {
        let mut conn = TcpDevice::connect_raw(dp.addr(1));
        conn.send_raw(request.as_bytes());
        let answer = String::from_utf8_lossy(&conn.recv_bytes(WAIT)).into_owned();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?} → {answer}"
        );
    }
}

// ----- 10. One bus for MQTT clients and raw devices ----------------------------

#[test]
fn raw_tcp_devices_and_mqtt_clients_share_one_bus() {
    let config = Config::tcp().listener(Listener::mqtt("mqtt", 1));
    let dp = Dataplane::start(config);
    let mqtt = dp.port(1);
    let ids = ["dev0", "dev1", "dev2", "dev3"];
    let mut devices: Vec<TcpDevice> = ids.iter().map(|id| TcpDevice::login(&dp, id)).collect();
    let uplink = MosquittoSub::start(
        "uplink",
        mqtt,
        &["devices/+/up"],
        &SubOptions::new(V5).qos(1),
    );
    thread::sleep(INTEREST_SETTLE);

    for (i, (id, device)) in ids.iter().zip(&mut devices).enumerate() {
        let up = format!("up-from-{id}");
        device.send(up.as_bytes());
        let got = uplink.wait_messages(i + 1, WAIT);
        assert_eq!(got[i].topic, format!("devices/{id}/up"));
        assert_eq!(got[i].payload, up);
        let version = MqttVersion::BOTH[i % 2];
        let down = format!("down-to-{id}");
        publish(
            mqtt,
            version,
            &["-t", &format!("devices/{id}/down"), "-m", &down, "-q", "1"],
        );
        assert_eq!(device.recv_frame(WAIT), down.as_bytes());
    }
}

// ----- 12. Pools after an MQTT load --------------------------------------------

#[test]
fn buffers_return_to_their_pools_after_an_mqtt_load() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 2500;
    const SUBSCRIBERS: usize = 4;
    // Publishers outpace the subscribers: every session may queue the whole
    // load, so nothing is dropped by the overflow policy.
    let config = mqtt_config().raw_toml(&mqtt_settings(&[("max_queued_messages", "10000")]));
    let dp = Dataplane::start(config);
    let port = dp.port(0);
    let baseline = dp.stats();
    assert_eq!(baseline.sum("conns"), 0, "{baseline}");

    let subs: Vec<MosquittoSub> = (0..SUBSCRIBERS)
        .map(|i| {
            let options = SubOptions::new(MqttVersion::BOTH[i % 2]).qos(1).quiet();
            MosquittoSub::start(&format!("load{i}"), port, &["load/#"], &options)
        })
        .collect();
    thread::sleep(INTEREST_SETTLE);
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            thread::spawn(move || {
                let lines: Vec<String> = (0..PER_PUBLISHER).map(|i| format!("p{p}-{i}")).collect();
                publish_lines(
                    port,
                    MqttVersion::BOTH[p % 2],
                    &format!("load/{p}"),
                    1,
                    &lines,
                );
            })
        })
        .collect();
    for t in publishers {
        t.join().expect("a publisher thread");
    }
    let total = PUBLISHERS * PER_PUBLISHER;
    for sub in &subs {
        let got = sub.wait_messages(total, Duration::from_secs(60));
        let by = by_sender(payloads(&got));
        for (sender, seqs) in &by {
            assert_eq!(seqs.len(), PER_PUBLISHER, "{}: from {sender}", sub.name);
        }
        assert_eq!(got.len(), total, "{}", sub.name);
    }
    eprintln!(
        "{total} QoS 1 messages to {SUBSCRIBERS} subscribers in {:?}",
        started.elapsed()
    );
    drop(subs);

    let after = dp.wait_for_stats(
        "every MQTT connection and session gone",
        Duration::from_secs(10),
        |s| s.sum("conns") == 0 && s.sum("mqtt_sessions") == 0,
    );
    for name in [
        "mesh_drops",
        "outbound_drops",
        "mqtt_queue_drops",
        "frame_errors",
    ] {
        assert_eq!(after.sum(name), 0, "{name}:\n{after}");
    }
    let in_use = |s: &shoal_tests::Stats| -> Vec<Vec<u64>> {
        s.cores
            .iter()
            .map(|c| c.pools.iter().map(|p| p.in_use).collect())
            .collect()
    };
    eprintln!("before the load:\n{baseline}after it:\n{after}");
    let high_water: u64 = after.cores.iter().map(|c| c.pool(512).high_water).sum();
    assert!(high_water > 0, "the load never used the pools:\n{after}");
    assert_eq!(
        in_use(&after),
        in_use(&baseline),
        "buffers in use per core and class:\n{after}"
    );
}
