//! Runs the real `shoal-bench tcp-frames` against a tiny relay that behaves
//! like the data plane's benchmark route: a connection's first frame is its
//! login (device id), and every later frame from device `X` is written to the
//! connection that logged in as `X-rx`. This checks the generator itself.

use std::{
    collections::HashMap,
    io::{self, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// No relay thread and no bench run outlives this.
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

/// Runs `shoal-bench` with `args`, killing it if it outlives the test limit.
fn run_bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TEST_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("shoal-bench did not finish within {TEST_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shoal-bench failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

#[test]
fn pairs_through_relay_in_two_processes() {
    let relay = Relay::start();
    let target = relay.addr.to_string();
    let pid = std::process::id().to_string();
    let output = run_bench(&[
        "tcp-frames",
        "--target",
        &target,
        "--connections",
        "4",
        "--processes",
        "2",
        "--threads",
        "1",
        "--rate",
        "500",
        "--payload-bytes",
        "40",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--settle",
        "200ms",
        "--drain",
        "1s",
        "--source-addrs",
        "127.0.0.1-127.0.0.3",
        "--server-pid",
        &pid,
        "--json",
    ]);
    let report = json_report(&output);
    assert_eq!(report["mode"], "pairs");
    assert_eq!(report["load"]["pairs_connected"], 4);
    assert_eq!(report["connections"]["failed"], 0);
    assert_eq!(report["connections"]["established"], 8);
    assert_eq!(report["run_errors"]["connections"], 0);
    let frames = &report["frames"];
    let sent = frames["sent"].as_u64().unwrap();
    assert!(sent > 0, "{report}");
    assert_eq!(frames["received"].as_u64(), Some(sent), "{report}");
    assert_eq!(frames["lost"], 0);
    assert_eq!(frames["sequence_gaps"], 0);
    assert_eq!(frames["out_of_order"], 0);
    assert_eq!(frames["malformed"], 0);
    assert!(report["measured"]["frames_received"].as_u64().unwrap() > 0);
    let latency = &report["latency_us"];
    assert!(latency["samples"].as_u64().unwrap() > 0, "{report}");
    assert!(latency["p50"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
    assert!(report["server"]["cpu_s"].as_f64().is_some());
    assert!(report["server"]["rss_after_kib"].as_u64().unwrap() > 0);
    assert!(!report["latency_histogram_v2_base64"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[test]
fn pairs_full_speed_text_report() {
    let relay = Relay::start();
    let target = relay.addr.to_string();
    let output = run_bench(&[
        "tcp-frames",
        "--target",
        &target,
        "--connections",
        "3",
        "--threads",
        "2",
        "--window",
        "8",
        "--warmup",
        "100ms",
        "--duration",
        "500ms",
        "--settle",
        "100ms",
        "--drain",
        "1s",
        "--source-addrs",
        "any",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 connected of 3"), "{stdout}");
    assert!(stdout.contains("latency us  p50"), "{stdout}");
    assert!(stdout.contains("lost 0"), "{stdout}");
}

#[test]
fn idle_connections_are_held() {
    let relay = Relay::start();
    let target = relay.addr.to_string();
    let pid = std::process::id().to_string();
    let output = run_bench(&[
        "tcp-frames",
        "--mode",
        "idle",
        "--target",
        &target,
        "--connections",
        "30",
        "--processes",
        "2",
        "--threads",
        "1",
        "--duration",
        "300ms",
        "--settle",
        "100ms",
        "--server-pid",
        &pid,
        "--json",
    ]);
    let report = json_report(&output);
    assert_eq!(report["mode"], "idle");
    assert_eq!(report["connections"]["established"], 30);
    assert_eq!(report["connections"]["failed"], 0);
    assert_eq!(report["open_at_end"], 30);
    assert_eq!(report["closed_by_server"], 0);
    assert!(report["established_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["server"]["rss_established_kib"].as_u64().unwrap() > 0);
}

#[test]
fn refused_connections_are_reported_not_panicked() {
    // A port that nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let output = run_bench(&[
        "tcp-frames",
        "--target",
        &target,
        "--connections",
        "2",
        "--threads",
        "1",
        "--duration",
        "100ms",
        "--connect-timeout",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no pair could connect"), "{stderr}");
    assert!(stderr.contains("2 connection failures"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
