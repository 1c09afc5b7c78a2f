//! WebSocket devices at `/v1/devices/{id}/ws`, with the Python
//! `websockets` client (`tests/scripts/ws_device_client.py`): text,
//! binary and fragmented messages reach the bus; downlink comes back as
//! frames; `device_secret` listeners check the credentials before the
//! upgrade. A raw socket breaks RFC 6455 in the ways a device can, and
//! gets the close code the RFC gives while other devices carry on.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::{
    has_field, mosquitto_pub, publish, run_program, script_path, Config, Dataplane, Listener,
    MqttVersion, Planes, Route, RunOutput, TcpDevice, EMPTY_DATAPLANE_CONFIG, INTEREST_SETTLE,
    PYTHON, WAIT,
};

/// Bound on one client run.
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// HTTP (messages up to 1024 B), MQTT and raw TCP listeners; every
/// device's uplink is copied to the TCP device `watcher`.
fn ws_config() -> Config {
    Config::new()
        .listener(Listener::http("http", 0).max_frame_bytes(1024))
        .listener(Listener::mqtt("mqtt", 1))
        .listener(Listener::tcp("tcp", 2))
        .route(Route::republish(
            "to-watcher",
            "devices/+/up",
            "devices/watcher/down",
        ))
}

/// Runs the Python client to its end: its JSON events.
fn client(url: &str, args: &[&str]) -> Vec<Value> {
    let script = script_path("ws_device_client.py");
    let mut all = vec![script.to_str().unwrap(), url, "--timeout", "10"];
    all.extend_from_slice(args);
    let out = run_program(PYTHON, &all, b"", CLIENT_LIMIT);
    events(&out)
}

fn events(out: &RunOutput) -> Vec<Value> {
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}; {out:?}"))
        })
        .collect()
}

/// The client in a thread (it waits for downlink the test sends).
fn client_in_background(url: String, args: Vec<String>) -> thread::JoinHandle<Vec<Value>> {
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        client(&url, &args)
    })
}

fn url(addr: SocketAddr, device: &str) -> String {
    format!("ws://{addr}/v1/devices/{device}/ws")
}

#[test]
fn devices_send_and_receive_frames() {
    let dp = Dataplane::start(ws_config());
    let mut watcher = TcpDevice::connect(dp.addr(2), "watcher");
    thread::sleep(INTEREST_SETTLE);

    // Uplink: text, binary, and a text message in three frames.
    let got = client(
        &url(dp.addr(0), "w1"),
        &[
            "--send",
            "text:hello",
            "--send",
            "hex:00ff10",
            "--send",
            "frag:par,t o,f one",
        ],
    );
    assert_eq!(
        got.first().map(|e| &e["event"]),
        Some(&"open".into()),
        "{got:?}"
    );
    assert_eq!(watcher.recv_frame(WAIT), b"hello");
    assert_eq!(watcher.recv_frame(WAIT), [0x00, 0xff, 0x10]);
    assert_eq!(watcher.recv_frame(WAIT), b"part of one");
    let closed = got.last().unwrap();
    assert_eq!(closed["event"], "closed", "{got:?}");
    assert_eq!(
        closed["code"], 1000,
        "the close handshake is answered: {got:?}"
    );

    // Downlink: several devices (on both cores), each gets its own
    // messages, in order, text as text and bytes as binary.
    let devices = ["w2", "w3", "w4"];
    let clients: Vec<_> = devices
        .iter()
        .map(|d| client_in_background(url(dp.addr(0), d), vec!["--expect".into(), "3".into()]))
        .collect();
    for d in devices {
        dp.wait_for_line("websocket device online", WAIT, |l| {
            has_field(l, "device", d)
        });
    }
    thread::sleep(INTEREST_SETTLE);
    let mqtt = dp.port(1);
    for d in devices {
        publish(
            mqtt,
            MqttVersion::V311,
            &[
                "-t",
                &format!("devices/{d}/down"),
                "-m",
                &format!("{d} first"),
            ],
        );
        publish(
            mqtt,
            MqttVersion::V311,
            &["-t", &format!("devices/{d}/down/valve"), "-m", "open"],
        );
        mosquitto_pub(
            mqtt,
            MqttVersion::V311,
            &["-t", &format!("devices/{d}/down"), "-s"],
            &[0x01, 0xfe, 0x80],
        )
        .assert_exit_code(0);
    }
    for (d, handle) in devices.iter().zip(clients) {
        let got = handle.join().unwrap();
        let messages: Vec<&Value> = got.iter().filter(|e| e["event"] == "message").collect();
        assert_eq!(messages.len(), 3, "{d}: {got:?}");
        assert_eq!(messages[0]["text"], format!("{d} first"), "{d}: {got:?}");
        assert_eq!(messages[1]["text"], "open", "{d}: {got:?}");
        assert_eq!(messages[2]["hex"], "01fe80", "{d}: {got:?}");
    }

    // What the figures say (other cores post theirs once a second).
    let metrics_url = format!("http://{}/metrics", dp.addr(0));
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = run_program(
            "curl",
            &["-sS", "--max-time", "10", &metrics_url],
            b"",
            CLIENT_LIMIT,
        );
        let totals = [
            "shoal_ws_device_messages_in_total",
            "shoal_ws_device_messages_out_total",
            "shoal_ws_devices",
        ]
        .map(|family| metric_total(&metrics.stdout, family));
        if totals == [3.0, 9.0, 0.0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in, out, connected: {totals:?}\n{}",
            metrics.stdout
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The sum of a family's samples over the cores.
fn metric_total(text: &str, family: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(family))
        .filter(|rest| rest.starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a case of the raw client sends.
type Sends = Box<dyn Fn(&mut RawSocket)>;

/// A raw client: the upgrade by hand, then frames as the test writes them.
struct RawSocket {
    stream: TcpStream,
}

impl RawSocket {
    fn open(addr: SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).unwrap(),
                1,
                "closed during the upgrade"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        Self { stream }
    }

    /// Sends one frame, masked unless `masked` is false.
    fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may close before it has read a large frame.
        let _ = self.stream.write_all(&frame);
    }

    /// The next frame from the server: (first byte, payload).
    fn recv(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.stream.read_exact(&mut n).unwrap();
                u16::from_be_bytes(n) as usize
            }
            127 => {
                let mut n = [0u8; 8];
                self.stream.read_exact(&mut n).unwrap();
                u64::from_be_bytes(n) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        (head[0], payload)
    }

    /// Expects a close frame with `code`, then the end of the stream.
    fn expect_close(&mut self, code: u16) {
        let (first, payload) = self.recv();
        assert_eq!(first, 0x88, "a close frame, got {first:#x} {payload:?}");
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            code,
            "reason: {}",
            String::from_utf8_lossy(&payload[2..])
        );
        let mut rest = [0u8; 16];
        let deadline = Instant::now() + WAIT;
        loop {
            match self.stream.read(&mut rest) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(Instant::now() < deadline, "the connection stays open"),
            }
        }
    }
}

#[test]
fn protocol_errors_close_with_the_rfc_codes_and_others_carry_on() {
    let dp = Dataplane::start(ws_config());
    let mut watcher = TcpDevice::connect(dp.addr(2), "watcher");
    thread::sleep(INTEREST_SETTLE);
    let addr = dp.addr(0);

    // A steady device, kept open across the others' failures.
    let mut steady = RawSocket::open(addr, "/v1/devices/steady/ws");
    steady.send(0x89, b"are you there", true);
    assert_eq!(
        steady.recv(),
        (0x8a, b"are you there".to_vec()),
        "ping answered with pong"
    );

    let cases: [(&str, Sends, u16); 5] = [
        (
            "unmasked",
            Box::new(|s| s.send(0x81, b"plain", false)),
            1002,
        ),
        (
            "not utf-8",
            Box::new(|s| s.send(0x81, &[0x68, 0xc3, 0x28], true)),
            1007,
        ),
        (
            "too big",
            Box::new(|s| s.send(0x82, &[7u8; 2000], true)),
            1009,
        ),
        (
            "fragments too big",
            Box::new(|s| {
                s.send(0x02, &[1u8; 800], true);
                s.send(0x80, &[2u8; 800], true);
            }),
            1009,
        ),
        (
            "reserved opcode",
            Box::new(|s| s.send(0x83, b"?", true)),
            1002,
        ),
    ];
    for (i, (what, send, code)) in cases.iter().enumerate() {
        let mut bad = RawSocket::open(addr, &format!("/v1/devices/bad{i}/ws"));
        send(&mut bad);
        bad.expect_close(*code);
        steady.send(0x81, format!("still here after {what}").as_bytes(), true);
        assert_eq!(
            watcher.recv_frame(WAIT),
            format!("still here after {what}").as_bytes(),
            "{what}"
        );
    }
    dp.wait_for_logs("closing websocket device", cases.len(), WAIT);

    // The steady device closes cleanly: its code is echoed.
    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    steady.send(0x88, &close, true);
    steady.expect_close(4000);

    // Not an upgrade, or not GET: plain HTTP answers.
    let out = run_program(
        "curl",
        &[
            "-sS",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}/v1/devices/x/ws"),
        ],
        b"",
        CLIENT_LIMIT,
    );
    assert!(out.stdout.ends_with("\n400"), "{out:?}");
    let out = run_program(
        "curl",
        &[
            "-sS",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}/v1/devices/x/ws"),
        ],
        b"",
        CLIENT_LIMIT,
    );
    assert!(out.stdout.ends_with("\n405"), "{out:?}");
}

#[test]
fn device_secret_listeners_check_credentials_before_the_upgrade() {
    let (planes, _cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let (http, tcp) = planes.secure_listener_with_watcher("http", "s1", "s1-secret-token");
    let mut watcher = TcpDevice::connect(tcp, "watcher");
    thread::sleep(INTEREST_SETTLE);

    for bad in [
        vec![],
        vec!["--header", "Authorization: Bearer wrong-secret"],
        vec!["--header", "Authorization: Basic czE6d3Jvbmc="],
    ] {
        let got = client(&url(http, "s1"), &bad);
        assert_eq!(got.len(), 1, "{bad:?}: {got:?}");
        assert_eq!(got[0]["event"], "refused", "{bad:?}: {got:?}");
        assert_eq!(got[0]["status"], 401, "{bad:?}: {got:?}");
    }
    let wrong_query = format!("{}?secret=nope", url(http, "s1"));
    assert_eq!(client(&wrong_query, &[])[0]["status"], 401);

    let got = client(
        &url(http, "s1"),
        &[
            "--header",
            "Authorization: Bearer s1-secret-token",
            "--send",
            "text:by header",
        ],
    );
    assert_eq!(got[0]["event"], "open", "{got:?}");
    assert_eq!(watcher.recv_frame(WAIT), b"by header");
    let by_query = format!("{}?secret=s1-secret-token", url(http, "s1"));
    let got = client(&by_query, &["--send", "text:by query"]);
    assert_eq!(got[0]["event"], "open", "{got:?}");
    assert_eq!(watcher.recv_frame(WAIT), b"by query");
    assert!(
        !dp.log().text().contains("s1-secret-token"),
        "the secret reached the log"
    );
}
