//! HTTP devices with curl: messages posted to the device API reach the
//! bus; downlink messages wait in the device's mailbox and come back to a
//! long poll, whichever core the poll lands on; bad requests get JSON
//! errors with the right status while other connections carry on;
//! `/metrics` parses as Prometheus text and counts what happened;
//! `device_secret` listeners check Bearer and Basic credentials.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{
    publish, run_program, Config, Dataplane, Listener, MqttVersion, Planes, Route, RunOutput,
    TcpDevice, EMPTY_DATAPLANE_CONFIG, INTEREST_SETTLE, WAIT,
};

/// Bound on one curl run.
const CURL_LIMIT: Duration = Duration::from_secs(20);

fn curl(args: &[&str]) -> RunOutput {
    let mut all = vec!["-sS", "--max-time", "15"];
    all.extend_from_slice(args);
    run_program("curl", &all, b"", CURL_LIMIT)
}

/// `curl ARGS -w '\n%{http_code}'`: (status, body).
fn curl_status(args: &[&str]) -> (u16, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-w", "\n%{http_code}"]);
    let out = curl(&all);
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no status from curl: {out:?}"));
    (code.trim().parse().unwrap(), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// HTTP (max body 1024 B), MQTT and raw TCP listeners; a route copies every
/// device's uplink to the TCP device `watcher`.
fn http_config() -> Config {
    Config::new()
        .listener(Listener::http("http", 0).max_frame_bytes(1024))
        .listener(Listener::mqtt("mqtt", 1))
        .listener(Listener::tcp("tcp", 2))
        .route(Route::republish(
            "to-watcher",
            "devices/+/up/#",
            "devices/watcher/down",
        ))
        .raw_toml(
            "[runtime.http]\nhead_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_poll_wait = \"20s\"",
        )
}

fn base(dp: &Dataplane) -> String {
    format!("http://{}", dp.addr(0))
}

#[test]
fn devices_post_messages_and_poll_their_downlink() {
    let dp = Dataplane::start(http_config());
    let mut watcher = TcpDevice::connect(dp.addr(2), "watcher");
    thread::sleep(INTEREST_SETTLE);
    let url = format!("{}/v1/devices/d1/messages", base(&dp));

    // Content-Length, chunked, a subtopic, and 100-continue.
    let (status, body) = curl_status(&["-X", "POST", "--data-binary", "reading 1", &url]);
    assert_eq!(status, 202, "{body}");
    assert_eq!(json(&body)["topic"], "devices/d1/up");
    assert_eq!(watcher.recv_frame(WAIT), b"reading 1");
    let (status, _) = curl_status(&[
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "reading 2",
        &url,
    ]);
    assert_eq!(status, 202);
    assert_eq!(watcher.recv_frame(WAIT), b"reading 2");
    let (status, body) = curl_status(&["--data-binary", "21.5", &format!("{url}/temp/room%201")]);
    assert_eq!(status, 202);
    assert_eq!(json(&body)["topic"], "devices/d1/up/temp/room 1");
    assert_eq!(watcher.recv_frame(WAIT), b"21.5");
    let big = "x".repeat(1000);
    let (status, _) = curl_status(&["-H", "Expect: 100-continue", "--data-binary", &big, &url]);
    assert_eq!(status, 202);
    assert_eq!(watcher.recv_frame(WAIT), big.as_bytes());

    // Two requests on one kept-alive connection.
    let out = curl(&[
        "-v",
        "--data-binary",
        "a",
        &url,
        "--next",
        "--data-binary",
        "b",
        &url,
    ]);
    assert!(
        out.stderr.contains("Re-using existing connection"),
        "{}",
        out.stderr
    );
    assert_eq!(watcher.recv_frame(WAIT), b"a");
    assert_eq!(watcher.recv_frame(WAIT), b"b");

    // Downlink: the first poll opens the mailbox; what arrives between
    // polls waits there, in order. Several devices, so that owners and
    // polls fall on both cores.
    let mqtt = dp.port(1);
    for device in ["d1", "d2", "d3", "d4"] {
        let poll = format!("{}/v1/devices/{device}/messages", base(&dp));
        let (status, _) = curl_status(&[&format!("{poll}?wait=0")]);
        assert_eq!(status, 204, "{device}: an empty mailbox answers 204");
        thread::sleep(INTEREST_SETTLE);
        for n in 1..=3 {
            let topic = format!("devices/{device}/down");
            publish(
                mqtt,
                MqttVersion::V311,
                &["-t", &topic, "-m", &format!("command {n}")],
            );
        }
        publish(
            mqtt,
            MqttVersion::V311,
            &["-t", &format!("devices/{device}/down/valve"), "-m", "open"],
        );
        let (status, body) = curl_status(&[&format!("{poll}?wait=5s")]);
        assert_eq!(status, 200, "{device}: {body}");
        let messages = json(&body)["messages"].as_array().unwrap().clone();
        let got: Vec<(String, String)> = messages
            .iter()
            .map(|m| {
                (
                    m["topic"].as_str().unwrap().to_owned(),
                    m["payload"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let down = format!("devices/{device}/down");
        assert_eq!(
            got,
            vec![
                (down.clone(), "command 1".to_owned()),
                (down.clone(), "command 2".to_owned()),
                (down.clone(), "command 3".to_owned()),
                (format!("{down}/valve"), "open".to_owned()),
            ],
            "{device}"
        );

        // A long poll returns as soon as a message comes.
        let poll_url = format!("{poll}?wait=15s");
        let waiting = thread::spawn(move || {
            let started = Instant::now();
            (curl_status(&[&poll_url]), started.elapsed())
        });
        thread::sleep(Duration::from_millis(700));
        publish(mqtt, MqttVersion::V311, &["-t", &down, "-m", "wake up"]);
        let ((status, body), took) = waiting.join().unwrap();
        assert_eq!(status, 200, "{device}: {body}");
        assert_eq!(json(&body)["messages"][0]["payload"], "wake up");
        assert!(
            took < Duration::from_secs(10),
            "{device}: the long poll took {took:?}"
        );
    }

    // A payload that is not UTF-8 comes back as base64; `max` bounds a batch.
    let poll = format!("{}/v1/devices/d1/messages", base(&dp));
    let out = run_program(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.to_string(),
            "-t",
            "devices/d1/down",
            "-s",
        ],
        &[0xff, 0x00, 0x80],
        WAIT,
    );
    out.assert_exit_code(0);
    publish(
        mqtt,
        MqttVersion::V311,
        &["-t", "devices/d1/down", "-m", "second"],
    );
    let (status, body) = curl_status(&[&format!("{poll}?wait=5s&max=1")]);
    assert_eq!(status, 200, "{body}");
    let batch = json(&body);
    assert_eq!(batch["messages"].as_array().unwrap().len(), 1);
    assert_eq!(batch["messages"][0]["payload_base64"], "/wCA");
    let (_, body) = curl_status(&[&format!("{poll}?wait=5s")]);
    assert_eq!(json(&body)["messages"][0]["payload"], "second");
    let started = Instant::now();
    let (status, _) = curl_status(&[&format!("{poll}?wait=1s")]);
    assert_eq!(status, 204);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn bad_requests_get_json_errors_and_other_connections_carry_on() {
    let dp = Dataplane::start(http_config());
    let base = base(&dp);
    let mut watcher = TcpDevice::connect(dp.addr(2), "watcher");
    thread::sleep(INTEREST_SETTLE);

    // A kept-alive client that stays open through everything below.
    let mut steady = TcpStream::connect(dp.addr(0)).unwrap();
    steady.set_read_timeout(Some(WAIT)).unwrap();

    let big = "x".repeat(2000);
    let long_header = format!("X-Long: {}", "h".repeat(9000));
    let cases: Vec<(Vec<String>, u16)> = vec![
        (vec![format!("{base}/nothing/here")], 404),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                format!("{base}/v1/devices/d1/messages"),
            ],
            405,
        ),
        (vec![format!("{base}/v1/devices/a%2Fb/messages")], 400),
        (
            vec![format!("{base}/v1/devices/d1/messages?wait=soon")],
            400,
        ),
        (vec![format!("{base}/v1/devices/d1/messages?max=0")], 400),
        (
            vec![
                "--data-binary".into(),
                big,
                format!("{base}/v1/devices/d1/messages"),
            ],
            413,
        ),
        (
            vec![
                "--data-binary".into(),
                "x".into(),
                format!("{base}/v1/devices/d1/messages/a/+/b"),
            ],
            400,
        ),
        (
            vec!["-H".into(), long_header, format!("{base}/metrics")],
            431,
        ),
        (
            vec!["-X".into(), "POST".into(), format!("{base}/metrics")],
            405,
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = curl_status(&args);
        assert_eq!(status, want, "{args:?}: {body}");
        assert_eq!(json(&body)["status"], want, "{args:?}");
        assert!(json(&body)["error"].is_string());
    }

    // A request line that is not HTTP: 400 and the connection closes.
    let reply = raw_exchange(dp.addr(0), b"HELLO THERE\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    assert!(reply.contains("Connection: close"), "{reply}");
    // A head that trickles past head_timeout (1s): 408.
    let started = Instant::now();
    let reply = raw_exchange(dp.addr(0), b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A body shorter than its Content-Length: 408 after body_timeout.
    let reply = raw_exchange(
        dp.addr(0),
        b"POST /v1/devices/d1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");

    // Pipelined requests on the steady connection are answered in order.
    steady
        .write_all(
            b"POST /v1/devices/d9/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none\
              POST /v1/devices/d9/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo\
              GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
    let replies = read_until(&mut steady, "\"status\":\"ok\"");
    assert_eq!(
        replies.matches("HTTP/1.1 202 Accepted").count(),
        2,
        "{replies}"
    );
    assert!(replies.contains("HTTP/1.1 200 OK"), "{replies}");
    assert_eq!(watcher.recv_frame(WAIT), b"one");
    assert_eq!(watcher.recv_frame(WAIT), b"two");
    let log = dp.log().text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Writes `request` on a new connection and reads until the server closes.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// Reads from `stream` until `marker` shows up (bounded by its timeout).
fn read_until(stream: &mut TcpStream, marker: &str) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&got).contains(marker) && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Prometheus text: (name, labels, value) of every sample; panics on a line
/// that is neither a comment nor a sample, or a sample of an undeclared
/// family.
fn parse_metrics(text: &str) -> Vec<(String, String, f64)> {
    let mut families = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("{line:?}")),
            ),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "{line}: undeclared family");
        samples.push((name.to_owned(), labels.to_owned(), value));
    }
    samples
}

fn sum(samples: &[(String, String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_health_and_readiness() {
    let dp = Dataplane::start(http_config());
    let base = base(&dp);
    let url = format!("{base}/v1/devices/m1/messages");
    for n in 0..5 {
        let (status, _) = curl_status(&["--data-binary", &format!("m {n}"), &url]);
        assert_eq!(status, 202);
    }
    let (status, _) = curl_status(&[&format!("{base}/nowhere")]);
    assert_eq!(status, 404);
    // Other cores' figures are at most a second old.
    thread::sleep(Duration::from_millis(1500));
    let out = curl(&["-D", "-", &format!("{base}/metrics")]);
    let stdout = out.stdout.replace("\r\n", "\n");
    let (head, text) = stdout.split_once("\n\n").unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_metrics(text);
    assert_eq!(sum(&samples, "shoal_http_device_messages_total"), 5.0);
    assert!(sum(&samples, "shoal_http_client_errors_total") >= 1.0);
    assert_eq!(sum(&samples, "shoal_ready"), 1.0);
    assert_eq!(sum(&samples, "shoal_cores"), 2.0);
    assert!(sum(&samples, "shoal_resident_memory_bytes") > 1e6);
    let cores: std::collections::HashSet<&str> = samples
        .iter()
        .filter(|(n, _, _)| n == "shoal_connections")
        .map(|(_, l, _)| l.as_str())
        .collect();
    assert_eq!(cores.len(), 2, "one sample per core: {cores:?}");
    assert!(samples
        .iter()
        .any(|(n, l, _)| n == "shoal_pool_in_use_buffers" && l.contains("buffer_bytes=")));
    assert!(
        samples
            .iter()
            .any(|(n, l, _)| n == "shoal_message_handling_seconds_bucket"
                && l.contains("le=\"+Inf\""))
    );

    let (status, body) = curl_status(&[&format!("{base}/healthz")]);
    assert_eq!((status, json(&body)["status"].as_str()), (200, Some("ok")));
    let (status, body) = curl_status(&[&format!("{base}/readyz")]);
    assert_eq!(
        (status, json(&body)["status"].as_str()),
        (200, Some("ready"))
    );
    let out = curl(&["-I", &format!("{base}/metrics")]);
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK"), "{}", out.stdout);
    assert!(out.stdout.contains("Content-Length: "), "{}", out.stdout);
}

#[test]
fn device_secret_listeners_check_bearer_and_basic_credentials() {
    let (planes, _cp) = Planes::start();
    let _dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let (http, tcp) = planes.secure_listener_with_watcher("http", "h1", "h1-secret-token");
    let mut watcher = TcpDevice::connect(tcp, "watcher");
    thread::sleep(INTEREST_SETTLE);
    let url = format!("http://{http}/v1/devices/h1/messages");

    let out = curl(&["-D", "-", "--data-binary", "nope", &url]);
    assert!(out.stdout.starts_with("HTTP/1.1 401 "), "{}", out.stdout);
    assert!(
        out.stdout.contains("WWW-Authenticate: Bearer"),
        "{}",
        out.stdout
    );
    for bad in [
        vec!["-H", "Authorization: Bearer wrong-secret"],
        vec!["-u", "h1:wrong-secret"],
        vec!["-u", "someone-else:h1-secret-token"],
        vec!["-H", "Authorization: Digest abc"],
    ] {
        let mut args = bad.clone();
        args.extend_from_slice(&["--data-binary", "nope", &url]);
        let (status, body) = curl_status(&args);
        assert_eq!(status, 401, "{bad:?}: {body}");
    }
    let (status, _) = curl_status(&[
        "-H",
        "Authorization: Bearer h1-secret-token",
        "--data-binary",
        "by bearer",
        &url,
    ]);
    assert_eq!(status, 202);
    assert_eq!(watcher.recv_frame(WAIT), b"by bearer");
    let (status, _) = curl_status(&[
        "-u",
        "h1:h1-secret-token",
        "--data-binary",
        "by basic",
        &url,
    ]);
    assert_eq!(status, 202);
    assert_eq!(watcher.recv_frame(WAIT), b"by basic");
    // An unknown device is refused like a wrong secret.
    let (status, _) = curl_status(&[
        "-H",
        "Authorization: Bearer ghost-secret-1",
        "--data-binary",
        "x",
        &format!("http://{http}/v1/devices/ghost/messages"),
    ]);
    assert_eq!(status, 401);
    // The secret never reaches the data plane's log.
    let log = _dp.log().text();
    assert!(
        !log.contains("h1-secret-token") && !log.contains("wrong-secret"),
        "a secret reached the log"
    );
}
