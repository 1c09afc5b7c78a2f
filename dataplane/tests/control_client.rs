//! The real `shoal-dataplane` against a fake control plane written with
//! the protocol types: snapshot, device logins with their secret on both
//! cores, kicks, removals, figures, and a restart from the cache without
//! the control plane.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_protocols::control::{
    wire, Change, Device, Framing, FromDataPlane, Hello, HelloReply, Identity, Listener,
    ListenerAuth, ListenerProtocol, PlaneFigures, Product, Resource, ResourceKey, ResourceKind,
    Route, RouteAction, SecretDigest, ToDataPlane, PROTOCOL_VERSION, SNAPSHOT_PART_RESOURCES,
};

const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shoal-dp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The data plane process and its captured log.
struct DataPlane {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl DataPlane {
    fn start(dir: &Path, socket: &Path) -> Self {
        let config = dir.join("empty.toml");
        std::fs::write(&config, "[runtime]\ndrain_timeout = \"1s\"\n").expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-dataplane"))
            .args(["--cores", "2", "--stats-interval", "0s", "--node", "dp-e2e"])
            .arg("--config")
            .arg(&config)
            .arg("--control")
            .arg(socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start shoal-dataplane");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("dp| {line}");
                sink.lock().expect("log").push(line);
            }
        });
        Self { child, log }
    }

    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "the data plane did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control plane's end of `dataplane.sock`.
struct FakeControlPlane {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl FakeControlPlane {
    fn accept(listener: &UnixListener) -> Self {
        let (stream, _) = listener.accept().expect("the data plane dials in");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn recv<T: DeserializeOwned>(&mut self) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(len)) = wire::declared_len(&self.buf, wire::DEFAULT_MAX_FRAME_BYTES) {
                if self.buf.len() >= 4 + len {
                    let rest = self.buf.split_off(4 + len);
                    let frame = std::mem::replace(&mut self.buf, rest);
                    return wire::decode_body(&frame[4..]).expect("decode");
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the data plane closed the control connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => assert!(Instant::now() < deadline, "nothing from the data plane"),
            }
        }
    }

    fn reply(&mut self) -> FromDataPlane {
        loop {
            match self.recv::<FromDataPlane>() {
                FromDataPlane::Figures(_) => {}
                other => return other,
            }
        }
    }

    fn figures(&mut self) -> PlaneFigures {
        loop {
            if let FromDataPlane::Figures(f) = self.recv::<FromDataPlane>() {
                return f;
            }
        }
    }

    fn send<T: Serialize>(&mut self, msg: &T) {
        let frame = wire::encode_to_vec(msg).expect("encode");
        self.stream.write_all(&frame).expect("write");
    }

    fn welcome(&mut self) -> Hello {
        let hello: Hello = self.recv();
        self.send(&HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            node: "cp-e2e".into(),
            software_version: "0.0.0".into(),
        });
        hello
    }

    /// Sends `resources` as a snapshot in parts and expects the Ack.
    fn snapshot(&mut self, version: u64, resources: Vec<Resource>) {
        let parts: Vec<Vec<Resource>> = resources
            .chunks(SNAPSHOT_PART_RESOURCES)
            .map(<[Resource]>::to_vec)
            .collect();
        let count = parts.len();
        for (part, resources) in parts.into_iter().enumerate() {
            self.send(&ToDataPlane::Snapshot {
                version,
                part: part as u32,
                last: part + 1 == count,
                resources,
            });
        }
        assert_eq!(self.reply(), FromDataPlane::Ack { version });
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn listener(name: &str, port: u16, auth: ListenerAuth) -> Listener {
    Listener {
        name: name.into(),
        protocol: ListenerProtocol::Tcp,
        bind: format!("127.0.0.1:{port}"),
        max_connections: 1000,
        max_frame_bytes: 1024,
        idle_timeout_ms: 60_000,
        framing: Some(Framing::LengthField {
            offset: 0,
            width: 2,
            big_endian: true,
            adjustment: 0,
            strip_bytes: None,
        }),
        identity: Identity::LoginFrame,
        auth,
    }
}

fn secret(id: &str) -> String {
    format!("{id}-secret-token")
}

fn device(id: &str) -> Device {
    Device {
        id: id.into(),
        product: "meter".into(),
        secret: SecretDigest::of(id, secret(id).as_bytes()),
    }
}

/// A device speaking 2-byte length frames.
struct Tcp(TcpStream);

impl Tcp {
    fn connect(port: u16, login: &str) -> Self {
        let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut d = Self(stream);
        d.send(login.as_bytes());
        d
    }

    fn send(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.0.write_all(&frame).expect("send");
    }

    fn recv(&mut self) -> Vec<u8> {
        let mut len = [0u8; 2];
        self.0.read_exact(&mut len).expect("frame length");
        let mut payload = vec![0u8; u16::from_be_bytes(len) as usize];
        self.0.read_exact(&mut payload).expect("frame payload");
        payload
    }

    fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.0.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

fn state(plain: u16, secure: u16, devices: usize) -> Vec<Resource> {
    let mut r = vec![
        Resource::Listener(listener("plain", plain, ListenerAuth::None)),
        Resource::Listener(listener("secure", secure, ListenerAuth::DeviceSecret)),
        Resource::Product(Product {
            name: "meter".into(),
            description: String::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
        }),
    ];
    r.extend((0..devices).map(|i| Resource::Device(device(&format!("d{i}")))));
    r.push(Resource::Route(Route {
        name: "to-watcher".into(),
        filter: "devices/+/up".into(),
        listener: Some("secure".into()),
        device: None,
        action: RouteAction::Republish {
            topic: "devices/watcher/down".into(),
        },
    }));
    r
}

#[test]
fn devices_prove_themselves_on_every_core_and_the_cache_restarts_the_plane() {
    let scratch = Scratch::new("e2e");
    let socket = scratch.0.join("dataplane.sock");
    let control = UnixListener::bind(&socket).expect("bind dataplane.sock");
    let dp = DataPlane::start(&scratch.0, &socket);
    dp.wait_for_log("shoal-dataplane ready");
    let mut cp = FakeControlPlane::accept(&control);
    let hello = cp.welcome();
    assert_eq!(hello.node, "dp-e2e");
    let line = dp.wait_for_log("control plane connected");
    assert!(
        line.contains("node=cp-e2e") && line.contains("version=1"),
        "{line}"
    );

    let (plain, secure) = (free_port(), free_port());
    cp.snapshot(3, state(plain, secure, 200));
    let line = dp.wait_for_log("applied version 3 from the control plane");
    assert!(line.contains("devices=200"), "{line}");

    let mut watcher = Tcp::connect(plain, "watcher");
    std::thread::sleep(Duration::from_millis(300));
    // Enough devices that both cores own some and both accept some.
    let mut devices: Vec<Tcp> = (0..8)
        .map(|i| Tcp::connect(secure, &format!("d{i}:{}", secret(&format!("d{i}")))))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for (i, d) in devices.iter_mut().enumerate() {
        let payload = format!("reading {i}");
        d.send(payload.as_bytes());
        assert_eq!(watcher.recv(), payload.as_bytes());
    }

    // A wrong secret and an unknown device are turned away; no secret is
    // logged.
    Tcp::connect(secure, "d1:not-the-secret").expect_closed();
    Tcp::connect(secure, "ghost:ghost-secret-token").expect_closed();
    dp.wait_for_log("device=ghost");
    assert!(!dp.log_text().contains("not-the-secret"));

    // A kick closes d0's connection.
    cp.send(&ToDataPlane::KickDevice {
        request: 5,
        device: "d0".into(),
    });
    assert_eq!(
        cp.reply(),
        FromDataPlane::Kicked {
            request: 5,
            connections: 1
        }
    );
    devices[0].expect_closed();

    // A removed device's connection closes; it cannot log in again.
    cp.send(&ToDataPlane::Delta {
        version: 4,
        changes: vec![Change::Remove(ResourceKey {
            kind: ResourceKind::Device,
            name: "d1".into(),
        })],
    });
    assert_eq!(cp.reply(), FromDataPlane::Ack { version: 4 });
    devices[1].expect_closed();
    Tcp::connect(secure, &format!("d1:{}", secret("d1"))).expect_closed();

    // Figures: the registry over both cores, the refused logins, and the
    // latency of the messages (one read in 16 is timed).
    for i in 0..64 {
        devices[7].send(format!("sample {i}").as_bytes());
        assert_eq!(watcher.recv(), format!("sample {i}").as_bytes());
    }
    let deadline = Instant::now() + WAIT;
    let mut timed = 0;
    let figures = loop {
        let f = cp.figures();
        timed += f.cores.iter().map(|c| c.latency.samples).sum::<u64>();
        let failures: u64 = f.cores.iter().map(|c| c.auth_failures).sum();
        if f.cores.len() == 2 && failures >= 3 && timed > 0 {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "figures never showed the failures and the latency: {f:?}"
        );
    };
    assert_eq!(figures.applied_version, 4);
    assert_eq!(figures.registry_devices, 199);
    assert!(figures.rss_bytes > 0);

    // Without the control plane, a restart serves the cached state.
    drop(cp);
    drop(control);
    dp.stop();
    let _ = std::fs::remove_file(&socket);
    let dp = DataPlane::start(&scratch.0, &socket);
    let line = dp.wait_for_log("started from cached desired state version 4");
    assert!(line.contains("devices=199"), "{line}");
    dp.wait_for_log("shoal-dataplane ready");
    dp.wait_for_log("control plane unreachable at");
    let mut watcher = Tcp::connect(plain, "watcher");
    std::thread::sleep(Duration::from_millis(300));
    let mut d7 = Tcp::connect(secure, &format!("d7:{}", secret("d7")));
    std::thread::sleep(Duration::from_millis(300));
    d7.send(b"from the cache");
    assert_eq!(watcher.recv(), b"from the cache");
    Tcp::connect(secure, &format!("d1:{}", secret("d1"))).expect_closed();
    dp.stop();
}

/// The whole process's resident memory before and after a snapshot of a
/// million devices. Run by hand (release build):
/// `cargo test -p shoal-dataplane --release --test control_client -- --ignored --nocapture`.
#[test]
#[ignore = "a million devices: run by hand, in release"]
fn rss_per_device_at_a_million_devices() {
    const DEVICES: usize = 1_000_000;
    let scratch = Scratch::new("rss");
    let socket = scratch.0.join("dataplane.sock");
    let control = UnixListener::bind(&socket).expect("bind dataplane.sock");
    let dp = DataPlane::start(&scratch.0, &socket);
    let mut cp = FakeControlPlane::accept(&control);
    cp.welcome();
    let (plain, secure) = (free_port(), free_port());
    cp.snapshot(1, state(plain, secure, 0));
    // Let the figures settle, then take the smallest of a few readings.
    let before = (0..3).map(|_| cp.figures().rss_bytes).min().unwrap_or(0);
    let started = Instant::now();
    cp.snapshot(2, state(plain, secure, DEVICES));
    let applied_in = started.elapsed();
    let mut after = 0;
    for _ in 0..3 {
        let f = cp.figures();
        if f.registry_devices == DEVICES as u64 {
            after = f.rss_bytes;
        }
    }
    let per_device = after.saturating_sub(before) as f64 / DEVICES as f64;
    println!(
        "rss before {before} B, after {after} B: {per_device:.1} B/device; snapshot applied in {applied_in:?}"
    );
    // A second full snapshot replaces the registry: memory must not grow.
    cp.snapshot(3, state(plain, secure, DEVICES));
    let again = (0..3).map(|_| cp.figures().rss_bytes).max().unwrap_or(0);
    println!("rss after a second snapshot of the same fleet: {again} B");
    assert!(per_device < 200.0, "{per_device} bytes per device");
    dp.stop();
}
