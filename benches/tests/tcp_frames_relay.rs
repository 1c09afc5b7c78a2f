//! Runs the real `shoal-bench tcp-frames` against a tiny relay that behaves
//! like the data plane's benchmark route: a connection's first frame is its
//! login (device id), and every later frame from device `X` is written to the
//! connection that logged in as `X-rx`. This checks the generator itself.

mod support;

use std::{
    collections::HashMap,
    io::{self, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use support::{
    assert_contains, assert_zero, count, free_tcp_port, loopback, run_failing, run_json, run_text,
    BENCH_LIMIT,
};

/// No relay thread outlives this.
const TEST_LIMIT: Duration = Duration::from_secs(60);

type Writers = Arc<Mutex<HashMap<String, Arc<Mutex<TcpStream>>>>>;

struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Writers = Arc::default();
        let accept_stop = Arc::clone(&stop);
        let accept_thread = thread::spawn(move || {
            let deadline = Instant::now() + TEST_LIMIT;
            while !accept_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let writers = Arc::clone(&writers);
                        thread::spawn(move || {
                            let _ = relay_connection(stream, &writers, deadline);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept failed: {e}"),
                }
            }
        });
        Self {
            addr,
            stop,
            accept_thread: Some(accept_thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one frame (2-byte big-endian length, payload) into `frame`,
/// prefix included. `Ok(false)` on a clean end of stream.
fn read_frame(reader: &mut impl Read, frame: &mut Vec<u8>) -> io::Result<bool> {
    let mut prefix = [0u8; 2];
    match reader.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    frame.clear();
    frame.extend_from_slice(&prefix);
    frame.resize(2 + len, 0);
    reader.read_exact(&mut frame[2..])?;
    Ok(true)
}

fn relay_connection(stream: TcpStream, writers: &Writers, deadline: Instant) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut frame = Vec::new();
    if !read_frame(&mut reader, &mut frame)? {
        return Ok(());
    }
    let id = String::from_utf8(frame[2..].to_vec()).expect("login is UTF-8");
    let receiver = format!("{id}-rx");
    writers
        .lock()
        .unwrap()
        .insert(id, Arc::new(Mutex::new(stream)));
    while Instant::now() < deadline && read_frame(&mut reader, &mut frame)? {
        let target = writers.lock().unwrap().get(&receiver).cloned();
        if let Some(target) = target {
            // A receiver that went away just drops the frame, as a server would.
            let _ = target.lock().unwrap().write_all(&frame);
        }
    }
    Ok(())
}

#[test]
fn pairs_through_relay_in_two_processes() {
    let relay = Relay::start();
    let report = run_json(
        &format!(
            "tcp-frames --target {} --connections 4 --processes 2 --threads 1 --rate 500 \
             --payload-bytes 40 --warmup 200ms --duration 1s --settle 200ms --drain 1s \
             --source-addrs 127.0.0.1-127.0.0.3 --server-pid {} --json",
            relay.addr,
            std::process::id()
        ),
        BENCH_LIMIT,
    );
    assert_eq!(report["mode"], "pairs");
    assert_eq!(report["load"]["pairs_connected"], 4);
    assert_eq!(report["connections"]["established"], 8);
    let sent = count(&report, "/frames/sent");
    assert!(sent > 0, "{report}");
    assert_eq!(count(&report, "/frames/received"), sent, "{report}");
    assert_zero(
        &report,
        &[
            "/connections/failed",
            "/run_errors/connections",
            "/frames/lost",
            "/frames/sequence_gaps",
            "/frames/out_of_order",
            "/frames/malformed",
        ],
    );
    assert!(count(&report, "/measured/frames_received") > 0, "{report}");
    assert!(count(&report, "/latency_us/samples") > 0, "{report}");
    assert!(count(&report, "/latency_us/p50") <= count(&report, "/latency_us/max"));
    assert!(report["server"]["cpu_s"].as_f64().is_some());
    assert!(count(&report, "/server/rss_after_kib") > 0, "{report}");
    assert!(!report["latency_histogram_v2_base64"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[test]
fn pairs_full_speed_text_report() {
    let relay = Relay::start();
    let text = format!(
        "tcp-frames --target {} --connections 3 --threads 2 --window 8 --warmup 100ms \
         --duration 500ms --settle 100ms --drain 1s --source-addrs any",
        relay.addr
    );
    assert_contains(
        &run_text(&text, BENCH_LIMIT),
        &["3 connected of 3", "lost 0"],
    );
}

#[test]
fn idle_connections_are_held() {
    let relay = Relay::start();
    let report = run_json(
        &format!(
            "tcp-frames --mode idle --target {} --connections 30 --processes 2 --threads 1 \
             --duration 300ms --settle 100ms --server-pid {} --json",
            relay.addr,
            std::process::id()
        ),
        BENCH_LIMIT,
    );
    assert_eq!(report["mode"], "idle");
    assert_eq!(report["connections"]["established"], 30);
    assert_eq!(report["open_at_end"], 30);
    assert_zero(&report, &["/connections/failed", "/closed_by_server"]);
    assert!(report["established_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        count(&report, "/server/rss_established_kib") > 0,
        "{report}"
    );
}

#[test]
fn refused_connections_are_reported_not_panicked() {
    // A port that nothing listens on.
    let target = loopback(free_tcp_port());
    let args = format!(
        "tcp-frames --target {target} --connections 2 --threads 1 --duration 100ms \
         --connect-timeout 1s"
    );
    assert_contains(
        &run_failing(&args, BENCH_LIMIT),
        &["no pair could connect", "2 connection failures"],
    );
}
