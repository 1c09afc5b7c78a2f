//! Webhook routes (`forward_http`) end to end: messages published over MQTT
//! and raw TCP reach an HTTP receiver in JSON batches, every one, in order
//! per publisher, over kept-alive connections; a slow then dead receiver
//! neither stalls other devices nor grows the queue past its bounds (the
//! drops show on `/metrics`), and delivery resumes when it is back; a 500
//! is retried until it succeeds and a 400 is dropped at once; the route is
//! added with `shoalctl route add --forward-http`.
//!
//! The receiver is written here: a std `TcpListener` whose connections each
//! get a thread speaking HTTP/1.1 (keep-alive, `Content-Length` and chunked
//! answers), with a scripted delay and scripted statuses.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shoal_tests::{
    free_ports, mosquitto_pub, run_program, Config, Dataplane, Listener, MqttVersion, Planes,
    Route, TcpDevice, EMPTY_DATAPLANE_CONFIG, WAIT,
};

/// The longest any wait of this file lasts.
const LONG_WAIT: Duration = Duration::from_secs(10);
/// The receiver's threads end by themselves after this, whatever happens.
const RECEIVER_LIFETIME: Duration = Duration::from_secs(60);

// ----- the webhook receiver ------------------------------------------------

/// One request the receiver read whole.
#[derive(Debug, Clone)]
struct Request {
    /// Which connection (0-based, in accept order) carried it.
    connection: usize,
    /// The body, parsed.
    body: serde_json::Value,
    /// The status it was answered with (or would have been, had the
    /// receiver not been stopped first).
    status: u16,
}

impl Request {
    fn payloads(&self) -> Vec<String> {
        self.body["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no messages array: {}", self.body))
            .iter()
            .map(|m| m["payload"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    /// Statuses for the next requests, in order; 200 once it is empty.
    statuses: Mutex<VecDeque<u16>>,
    /// How long each request is held before it is answered.
    delay: Mutex<Duration>,
    connections: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default())
    }

    fn start_on(addr: SocketAddr, shared: Arc<Shared>) -> Self {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (shared, stop, threads) =
                (Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&threads));
            thread::spawn(move || {
                let until = Instant::now() + RECEIVER_LIFETIME;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let n = shared.connections.fetch_add(1, Ordering::Relaxed);
                            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
                            let handler = thread::spawn(move || serve(stream, n, &shared, &stop));
                            threads.lock().unwrap().push(handler);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        Self {
            addr,
            shared,
            stop,
            threads,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    fn script(&self, statuses: &[u16]) {
        self.shared.statuses.lock().unwrap().extend(statuses);
    }

    fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The payloads of every request answered with a 2xx, in arrival order.
    fn delivered(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(Request::payloads)
            .collect()
    }

    /// Waits until `done` holds for the requests so far.
    fn wait_for(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let until = Instant::now() + LONG_WAIT;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                Instant::now() < until,
                "the receiver never got {what}; it got {} requests: {:?}",
                requests.len(),
                requests.iter().map(Request::payloads).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes the listener and every connection (answers being held are
    /// never sent); returns what the next receiver on the same port shares.
    fn shut(mut self) -> (SocketAddr, Arc<Shared>) {
        self.halt();
        (self.addr, Arc::clone(&self.shared))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let handlers: Vec<JoinHandle<()>> = self.threads.lock().unwrap().drain(..).collect();
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Serves one connection: requests in turn, each answered after the
/// scripted delay with the next scripted status (`Content-Length` and
/// chunked answers alternate), until the peer closes or the receiver stops.
fn serve(mut stream: TcpStream, connection: usize, shared: &Shared, stop: &AtomicBool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let until = Instant::now() + RECEIVER_LIFETIME;
    let mut held: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut answered = 0usize;
    while Instant::now() < until {
        // One whole request in `held`: head, then Content-Length bytes.
        let whole = held.windows(4).position(|w| w == b"\r\n\r\n").map(|end| {
            let head = String::from_utf8_lossy(&held[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("a Content-Length"));
            (end + 4, length)
        });
        if let Some((body_at, length)) = whole.filter(|(at, len)| held.len() >= at + len) {
            let head = String::from_utf8_lossy(&held[..body_at]).into_owned();
            assert!(head.starts_with("POST /ingest HTTP/1.1\r\n"), "{head}");
            assert!(
                head.contains("Content-Type: application/json\r\n"),
                "{head}"
            );
            let body: serde_json::Value = serde_json::from_slice(&held[body_at..body_at + length])
                .unwrap_or_else(|e| panic!("the body is not JSON ({e})"));
            held.drain(..body_at + length);
            let status = shared.statuses.lock().unwrap().pop_front().unwrap_or(200);
            shared.requests.lock().unwrap().push(Request {
                connection,
                body,
                status,
            });
            let delay = *shared.delay.lock().unwrap();
            let answer_at = Instant::now() + delay;
            while Instant::now() < answer_at {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let answer = if answered % 2 == 0 {
                format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok")
            } else {
                format!(
                    "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nyes\r\n0\r\n\r\n"
                )
            };
            answered += 1;
            if stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                held.extend_from_slice(&buf[..n]);
                assert!(held.len() < 8 << 20, "a request over 8 MiB");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

// ----- /metrics --------------------------------------------------------------

/// The sum over cores of the samples of `name` whose labels contain
/// `label` (empty: any).
fn metric(http: SocketAddr, name: &str, label: &str) -> u64 {
    let out = run_program(
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{http}/metrics")],
        b"",
        Duration::from_secs(10),
    );
    out.assert_exit_code(0);
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && (label.is_empty() || series.contains(label))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or_else(|_| panic!("bad value {v}")) as u64)
        .sum()
}

/// Waits (figures of other cores are up to a second old) until `done`
/// holds for [`metric`]; returns the value.
fn wait_metric(http: SocketAddr, name: &str, label: &str, done: impl Fn(u64) -> bool) -> u64 {
    let until = Instant::now() + LONG_WAIT;
    loop {
        let value = metric(http, name, label);
        if done(value) {
            return value;
        }
        assert!(
            Instant::now() < until,
            "{name}{{{label}}} stayed at {value}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// One echo round trip of `device` (the `echo` route sends its uplink back).
fn round_trip(device: &mut TcpDevice, payload: &str) -> Duration {
    let started = Instant::now();
    device.send(payload.as_bytes());
    assert_eq!(device.recv_frame(WAIT), payload.as_bytes());
    started.elapsed()
}

// ----- the tests -------------------------------------------------------------

#[test]
fn batches_carry_every_message_in_order_over_kept_alive_connections() {
    let receiver = Receiver::start();
    let dp = Dataplane::start(
        Config::new()
            .listener(Listener::tcp("tcp", 0))
            .listener(Listener::mqtt("mqtt", 1))
            .listener(Listener::http("http", 2))
            .route(Route::forward_http(
                "hook",
                "devices/#",
                &receiver.url("/ingest"),
                r#"batch_max = 20, batch_wait = "30ms""#,
            )),
    );
    let mut tcp = TcpDevice::login(&dp, "t1");
    for i in 0..100 {
        tcp.send(format!("t1-{i}").as_bytes());
    }
    let lines: Vec<String> = (0..50).map(|i| format!("m1-{i}")).collect();
    let mut text = lines.join("\n");
    text.push('\n');
    mosquitto_pub(
        dp.port(1),
        MqttVersion::V311,
        &["-i", "m1", "-t", "devices/m1/up", "-q", "1", "-l"],
        text.as_bytes(),
    )
    .assert_exit_code(0);

    let requests = receiver.wait_for("150 messages", |r| {
        r.iter().map(|r| r.payloads().len()).sum::<usize>() >= 150
    });
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 150, "{delivered:?}");
    for (prefix, count) in [("t1-", 100), ("m1-", 50)] {
        let mine: Vec<&String> = delivered.iter().filter(|p| p.starts_with(prefix)).collect();
        let want: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(
            mine,
            want.iter().collect::<Vec<_>>(),
            "{prefix} out of order or missing"
        );
    }
    assert!(
        requests.iter().all(|r| r.payloads().len() <= 20),
        "a batch over batch_max"
    );
    // What each message says of itself.
    let all: Vec<&serde_json::Value> = requests
        .iter()
        .flat_map(|r| r.body["messages"].as_array().unwrap())
        .collect();
    let from_tcp = all.iter().find(|m| m["payload"] == "t1-0").unwrap();
    assert_eq!(from_tcp["topic"], "devices/t1/up");
    assert_eq!(from_tcp["device"], "t1");
    assert_eq!(from_tcp["listener"], "tcp");
    let from_mqtt = all.iter().find(|m| m["payload"] == "m1-0").unwrap();
    assert_eq!(from_mqtt["topic"], "devices/m1/up");
    assert_eq!(from_mqtt["listener"], "mqtt");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let received = from_tcp["received_ms"].as_u64().unwrap();
    assert!(
        received <= now_ms && received + 60_000 > now_ms,
        "{received}"
    );
    // Kept alive: a connection carried several batches, and there are
    // fewer connections than batches (2 per core at most).
    let mut per_connection = vec![0usize; receiver.connections()];
    for r in &requests {
        per_connection[r.connection] += 1;
    }
    assert!(per_connection.iter().any(|n| *n > 1), "{per_connection:?}");
    assert!(
        receiver.connections() <= 4 && receiver.connections() < requests.len(),
        "{} connections for {} batches",
        receiver.connections(),
        requests.len()
    );
    let http = dp.addr(2);
    wait_metric(http, "shoal_webhook_delivered_total", "", |v| v == 150);
    wait_metric(http, "shoal_webhook_batches_total", "", |v| {
        v == requests.len() as u64
    });
    assert_eq!(metric(http, "shoal_webhook_dropped_total", ""), 0);
    assert_eq!(metric(http, "shoal_webhook_retries_total", ""), 0);
}

#[test]
fn a_slow_then_dead_webhook_stalls_nothing_and_delivery_resumes() {
    let receiver = Receiver::start();
    receiver.set_delay(Duration::from_millis(1500));
    let dp = Dataplane::start(
        Config::new()
            .listener(Listener::tcp("tcp", 0))
            .listener(Listener::http("http", 1))
            .route(Route::echo())
            .route(Route::forward_http(
                "hook",
                "devices/busy/up",
                &receiver.url("/ingest"),
                r#"batch_max = 5, batch_wait = "10ms", queue_messages = 20, connections = 1, timeout = "3s", max_retries = 2"#,
            )),
    );
    let http = dp.addr(1);
    let mut busy = TcpDevice::login(&dp, "busy");
    let mut ping = TcpDevice::login(&dp, "ping");
    busy.send(b"slow-0");
    assert_eq!(busy.recv_frame(WAIT), b"slow-0");

    // Slow: the receiver holds each batch 1.5s. The queue fills and
    // overflows; other devices (and busy's own echo) are served at once.
    for i in 1..100 {
        busy.send(format!("slow-{i}").as_bytes());
    }
    let slowest = (0..10)
        .map(|i| round_trip(&mut ping, &format!("ping-{i}")))
        .max()
        .unwrap();
    assert!(
        slowest < Duration::from_millis(1000),
        "a round trip took {slowest:?} while the webhook held its batch"
    );
    for i in 1..100 {
        assert_eq!(busy.recv_frame(WAIT), format!("slow-{i}").as_bytes());
    }
    let full = wait_metric(
        http,
        "shoal_webhook_dropped_total",
        "reason=\"queue_full\"",
        |v| v >= 70,
    );
    assert!(
        full <= 80,
        "{full} dropped: more than the queue bound explains"
    );
    assert!(metric(http, "shoal_webhook_queued_messages", "") <= 20);

    // Dead: the listener and its connections close. Batches are retried,
    // then given up; the data plane keeps serving.
    let (addr, shared) = receiver.shut();
    for i in 0..10 {
        busy.send(format!("down-{i}").as_bytes());
        assert_eq!(busy.recv_frame(WAIT), format!("down-{i}").as_bytes());
    }
    let slowest = (0..10)
        .map(|i| round_trip(&mut ping, &format!("down-ping-{i}")))
        .max()
        .unwrap();
    assert!(
        slowest < Duration::from_millis(1000),
        "{slowest:?} while the webhook was down"
    );
    wait_metric(
        http,
        "shoal_webhook_dropped_total",
        "reason=\"gave_up\"",
        |v| v > 0,
    );
    wait_metric(http, "shoal_webhook_retries_total", "", |v| v > 0);
    // Empty for good (a scrape may show another core's figures of up to a
    // second ago): what comes next fits.
    wait_metric(http, "shoal_webhook_queued_messages", "", |v| v == 0);
    thread::sleep(Duration::from_millis(1100));
    wait_metric(http, "shoal_webhook_queued_messages", "", |v| v == 0);

    // Back on the same port, fast: delivery resumes, in order.
    let receiver = Receiver::start_on(addr, shared);
    receiver.set_delay(Duration::ZERO);
    for i in 0..10 {
        busy.send(format!("back-{i}").as_bytes());
    }
    receiver.wait_for("the messages sent once it was back", |_| {
        receiver
            .delivered()
            .iter()
            .filter(|p| p.starts_with("back-"))
            .count()
            == 10
    });
    let back: Vec<String> = receiver
        .delivered()
        .into_iter()
        .filter(|p| p.starts_with("back-"))
        .collect();
    let want: Vec<String> = (0..10).map(|i| format!("back-{i}")).collect();
    assert_eq!(back, want);
}

#[test]
fn a_500_is_retried_until_it_succeeds_and_a_400_is_dropped() {
    let receiver = Receiver::start();
    receiver.script(&[500, 503, 200, 400]);
    let (planes, _cp) = Planes::start();
    let _dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let ports = free_ports(2);
    let tcp = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let http = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    for (name, protocol, addr) in [("tcp", "tcp", tcp), ("http", "http", http)] {
        planes
            .ctl(&[
                "listener",
                "add",
                name,
                "--protocol",
                protocol,
                "--bind",
                &addr.to_string(),
                "--auth",
                "none",
            ])
            .assert_exit_code(0);
    }
    let url = receiver.url("/ingest");
    let refused = planes.ctl(&[
        "route",
        "add",
        "hook",
        "--filter",
        "devices/+/up",
        "--forward-http",
        &url.replace("http://", "https://"),
    ]);
    refused.assert_exit_code(2);
    assert!(
        refused.stderr.contains("https is not supported"),
        "{refused:?}"
    );
    planes
        .ctl(&[
            "route",
            "add",
            "hook",
            "--filter",
            "devices/+/up",
            "--forward-http",
            &url,
            "--batch-max",
            "1",
            "--batch-wait",
            "0ms",
            "--max-retries",
            "3",
        ])
        .assert_exit_code(0);
    let routes = planes.ctl(&["get", "routes"]);
    assert!(
        routes
            .stdout
            .contains(&format!("forward-http {url} batch=1/0ms")),
        "{routes:?}"
    );

    let mut device = TcpDevice::connect(tcp, "d1");
    device.send(b"first");
    let requests = receiver.wait_for("the first message three times", |r| r.len() >= 3);
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    assert!(requests.iter().all(|r| r.payloads() == ["first"]));
    // An unrelated change is applied: the route's sender and its
    // kept-alive connection carry on.
    planes.ctl(&["product", "add", "meter"]).assert_exit_code(0);
    device.send(b"second");
    let requests = receiver.wait_for("the second message", |r| r.len() >= 4);
    assert_eq!(
        requests[3].connection, requests[2].connection,
        "the sender was restarted by an unrelated change"
    );
    // Refused: not sent again.
    thread::sleep(Duration::from_millis(600));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(
        (requests[3].status, requests[3].payloads()),
        (400, vec!["second".to_owned()])
    );

    wait_metric(
        http,
        "shoal_webhook_dropped_total",
        "reason=\"refused\"",
        |v| v == 1,
    );
    wait_metric(http, "shoal_webhook_retries_total", "", |v| v == 2);
    wait_metric(http, "shoal_webhook_delivered_total", "", |v| v == 1);
    wait_metric(http, "shoal_webhook_batches_total", "", |v| v == 1);
    assert_eq!(
        metric(http, "shoal_webhook_dropped_total", "reason=\"gave_up\""),
        0
    );
}
