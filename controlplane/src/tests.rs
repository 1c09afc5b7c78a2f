//! The control plane against fake data planes and a fake shoalctl over
//! socket pairs: hello, snapshot, deltas, ACK, NACK, timeouts, kicks.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_protocols::control::{
    wire, ApiError, Change, CliRequest, CliResponse, ErrorCode, FrameBuffer, FromDataPlane, Hello,
    HelloReply, PeerRole, Product, Resource, ResourceKey, ResourceKind, ToDataPlane,
    PROTOCOL_VERSION,
};

use crate::handshake::{AccessPolicy, Doorway, Endpoint};
use crate::service::ControlPlane;
use crate::session::{serve_cli, serve_data_plane};
use crate::store::Store;
use crate::testutil::TempDir;

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("desired.redb")
}

fn control_plane(dir: &TempDir, ack_timeout: Duration) -> Arc<ControlPlane> {
    let (store, state) = Store::open(&db(dir)).unwrap();
    Arc::new(ControlPlane::new("cp".into(), ack_timeout, store, state))
}

fn doorway(endpoint: Endpoint) -> Doorway {
    Doorway {
        endpoint,
        path: PathBuf::from(endpoint.file_name()),
        access: AccessPolicy {
            // SAFETY: geteuid has no preconditions.
            own_uid: unsafe { libc::geteuid() },
            uids: vec![],
            gids: vec![],
        },
        node: "cp".into(),
    }
}

/// One end of a control connection, speaking frames.
struct Peer {
    stream: UnixStream,
    frames: FrameBuffer,
}

impl Peer {
    fn send<T: Serialize>(&mut self, message: &T) {
        self.stream
            .write_all(&wire::encode_to_vec(message).unwrap())
            .unwrap();
    }

    fn recv<T: DeserializeOwned>(&mut self) -> T {
        self.try_recv().expect("connection closed")
    }

    /// The next message, or `None` when the other end closed.
    fn try_recv<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(m) = self.frames.next_message().unwrap() {
                return Some(m);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.frames.extend(&chunk[..n]),
            }
        }
    }
}

fn hello(node: &str, role: PeerRole) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        node: node.into(),
        software_version: "test".into(),
        role,
    }
}

/// Connects a session of `endpoint` served on its own thread.
fn connect(cp: &Arc<ControlPlane>, endpoint: Endpoint, hello: &Hello) -> (Peer, JoinHandle<()>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cp = Arc::clone(cp);
    let server = std::thread::spawn(move || {
        let door = doorway(endpoint);
        let Ok(hello) = door.admit(&mut theirs) else {
            return;
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let _ = match endpoint {
            Endpoint::Control => serve_cli(&cp, theirs, &stop),
            Endpoint::DataPlane => serve_data_plane(&cp, theirs, &hello),
        };
    });
    let mut peer = Peer {
        stream: ours,
        frames: FrameBuffer::new(wire::DEFAULT_MAX_FRAME_BYTES),
    };
    peer.send(hello);
    (peer, server)
}

/// A fake data plane that said hello and took its snapshot.
struct FakePlane {
    peer: Peer,
    snapshot: Vec<Resource>,
    version: u64,
}

impl FakePlane {
    /// Connects and reads the whole snapshot, without answering it.
    fn connect(cp: &Arc<ControlPlane>, node: &str) -> Self {
        let role = PeerRole::DataPlane {
            cores: 2,
            last_applied_version: 0,
        };
        let (mut peer, _server) = connect(cp, Endpoint::DataPlane, &hello(node, role));
        let reply: HelloReply = peer.recv();
        assert!(matches!(reply, HelloReply::Welcome { .. }), "{reply:?}");
        let mut snapshot = Vec::new();
        let mut expected_part = 0;
        let version = loop {
            match peer.recv() {
                ToDataPlane::Snapshot {
                    version,
                    part,
                    last,
                    resources,
                } => {
                    assert_eq!(part, expected_part);
                    expected_part += 1;
                    snapshot.extend(resources);
                    if last {
                        break version;
                    }
                }
                other => panic!("expected a snapshot, got {other:?}"),
            }
        };
        Self {
            peer,
            snapshot,
            version,
        }
    }

    /// Connects and ACKs the snapshot.
    fn synced(cp: &Arc<ControlPlane>, node: &str) -> Self {
        let mut plane = Self::connect(cp, node);
        let version = plane.version;
        plane.peer.send(&FromDataPlane::Ack { version });
        plane
    }

    fn delta(&mut self) -> (u64, Vec<Change>) {
        match self.peer.recv() {
            ToDataPlane::Delta { version, changes } => (version, changes),
            other => panic!("expected a delta, got {other:?}"),
        }
    }
}

fn product(name: &str) -> Product {
    Product {
        name: name.into(),
        description: String::new(),
        publish: vec![],
        subscribe: vec![],
    }
}

fn add_product(name: &str) -> CliRequest {
    CliRequest::Apply {
        changes: vec![Change::Upsert(Resource::Product(product(name)))],
        dry_run: false,
    }
}

/// Sends `request` on its own thread (it waits for the data planes).
fn request(cp: &Arc<ControlPlane>, request: CliRequest) -> JoinHandle<CliResponse> {
    let cp = Arc::clone(cp);
    std::thread::spawn(move || cp.handle(request))
}

fn stored_version_and_products(cp: Arc<ControlPlane>, dir: &TempDir) -> (u64, Vec<String>) {
    // Sessions end once their peers hang up; then the store can reopen.
    let mut cp = cp;
    for _ in 0..500 {
        match Arc::try_unwrap(cp) {
            Ok(only) => {
                drop(only);
                break;
            }
            Err(shared) => {
                cp = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let (_, state) = Store::open(&db(dir)).unwrap();
    (
        state.version(),
        state.small().products.keys().cloned().collect(),
    )
}

fn error_of(response: CliResponse) -> ApiError {
    match response {
        CliResponse::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn snapshot_then_delta_then_stored() {
    let dir = TempDir::new("delta");
    let cp = control_plane(&dir, Duration::from_secs(5));
    let mut plane = FakePlane::synced(&cp, "dp1");
    assert_eq!(plane.version, 1);
    let names: Vec<&str> = plane.snapshot.iter().map(Resource::name).collect();
    assert_eq!(
        names,
        [
            "coap-default",
            "http-default",
            "mqtt-default",
            "rtmp-default",
            "tcp-default",
            "udp-default"
        ]
    );

    let pending = request(&cp, add_product("meter"));
    let (version, changes) = plane.delta();
    assert_eq!(version, 2);
    assert_eq!(
        changes,
        [Change::Upsert(Resource::Product(product("meter")))]
    );
    plane.peer.send(&FromDataPlane::Ack { version });
    let CliResponse::Applied(report) = pending.join().unwrap() else {
        panic!("not applied");
    };
    assert_eq!(report.version, 2);
    assert_eq!(report.acked_by, ["dp1"]);
    assert!(!report.pending);
    assert_eq!(report.diff.len(), 1);

    // The same upsert again changes nothing and is not pushed.
    let CliResponse::Applied(again) = cp.handle(add_product("meter")) else {
        panic!("not applied");
    };
    assert_eq!((again.version, again.diff.len()), (2, 0));

    let CliResponse::Status(status) = cp.handle(CliRequest::Status) else {
        panic!("no status");
    };
    assert_eq!(status.desired_version, 2);
    assert_eq!(status.data_planes.len(), 1);
    assert!(status.data_planes[0].connected);
    assert_eq!(status.data_planes[0].applied_version, 2);
    assert_eq!(status.data_planes[0].cores, 2);

    drop(plane);
    assert_eq!(
        stored_version_and_products(cp, &dir),
        (2, vec!["meter".to_owned()])
    );
}

#[test]
fn a_nack_keeps_nothing() {
    let dir = TempDir::new("nack");
    let cp = control_plane(&dir, Duration::from_secs(5));
    let mut plane = FakePlane::synced(&cp, "dp1");
    let pending = request(&cp, add_product("meter"));
    let (version, _) = plane.delta();
    plane.peer.send(&FromDataPlane::Nack {
        version,
        error: "core 0: no room".into(),
    });
    let e = error_of(pending.join().unwrap());
    assert_eq!(e.code, ErrorCode::Nacked);
    assert_eq!(e.message, "dp1: core 0: no room; nothing was changed");
    assert_eq!(cp.version(), 3, "the version moves past the refused one");

    // The next change goes to the plane as version 4.
    let pending = request(&cp, add_product("gauge"));
    let (version, _) = plane.delta();
    assert_eq!(version, 4);
    plane.peer.send(&FromDataPlane::Ack { version });
    assert!(matches!(pending.join().unwrap(), CliResponse::Applied(_)));
    drop(plane);
    assert_eq!(
        stored_version_and_products(cp, &dir),
        (4, vec!["gauge".to_owned()])
    );
}

#[test]
fn a_timeout_keeps_nothing_and_the_ackers_take_it_back() {
    let dir = TempDir::new("timeout");
    let cp = control_plane(&dir, Duration::from_millis(300));
    let mut fast = FakePlane::synced(&cp, "fast");
    let mut slow = FakePlane::synced(&cp, "slow");
    let pending = request(&cp, add_product("meter"));
    let (version, _) = fast.delta();
    fast.peer.send(&FromDataPlane::Ack { version });
    let (slow_version, _) = slow.delta();
    assert_eq!(slow_version, version);
    // The fast plane gets the inverse delta and ACKs it.
    let (undo, changes) = fast.delta();
    assert_eq!(undo, version + 1);
    assert_eq!(
        changes,
        [Change::Remove(ResourceKey {
            kind: ResourceKind::Product,
            name: "meter".into()
        })]
    );
    fast.peer.send(&FromDataPlane::Ack { version: undo });
    let e = error_of(pending.join().unwrap());
    assert_eq!(e.code, ErrorCode::Timeout);
    assert!(
        e.message.starts_with("slow: no answer within 300ms"),
        "{}",
        e.message
    );
    assert!(
        e.message.ends_with("; nothing was changed"),
        "{}",
        e.message
    );
    // The silent plane was disconnected.
    assert!(slow.peer.try_recv::<ToDataPlane>().is_none());
    let CliResponse::Status(status) = cp.handle(CliRequest::Status) else {
        panic!("no status");
    };
    let slow_status = status
        .data_planes
        .iter()
        .find(|p| p.node == "slow")
        .unwrap();
    assert!(!slow_status.connected);
    drop(fast);
    assert_eq!(stored_version_and_products(cp, &dir), (3, vec![]));
}

#[test]
fn without_data_planes_a_change_is_stored_pending() {
    let dir = TempDir::new("pending");
    let cp = control_plane(&dir, Duration::from_secs(1));
    let CliResponse::Applied(report) = cp.handle(add_product("meter")) else {
        panic!("not applied");
    };
    assert!(report.pending);
    assert_eq!(report.version, 2);
    // A plane that connects later gets it in its snapshot.
    let plane = FakePlane::connect(&cp, "late");
    assert_eq!(plane.version, 2);
    assert!(plane.snapshot.iter().any(|r| r.name() == "meter"));
    drop(plane);
    assert_eq!(
        stored_version_and_products(cp, &dir),
        (2, vec!["meter".to_owned()])
    );
}

#[test]
fn a_refused_snapshot_is_sent_again_after_the_next_change() {
    let dir = TempDir::new("resync");
    let cp = control_plane(&dir, Duration::from_secs(5));
    let mut plane = FakePlane::connect(&cp, "dp1");
    plane.peer.send(&FromDataPlane::Nack {
        version: plane.version,
        error: "listener \"tcp-default\": address in use".into(),
    });
    // Wait until the refusal is filed.
    for _ in 0..100 {
        if cp.planes().targets().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let CliResponse::Applied(report) = cp.handle(add_product("meter")) else {
        panic!("not applied");
    };
    assert!(
        report.pending,
        "a plane that refused its snapshot does not ACK changes"
    );
    let CliResponse::Status(status) = cp.handle(CliRequest::Status) else {
        panic!("no status");
    };
    assert!(status.data_planes[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("address in use"));
    match plane.peer.recv() {
        ToDataPlane::Snapshot { version, last, .. } => assert_eq!((version, last), (2, true)),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[test]
fn kicks_sum_the_planes_answers() {
    let dir = TempDir::new("kick");
    let cp = control_plane(&dir, Duration::from_secs(5));
    let mut plane = FakePlane::synced(&cp, "dp1");
    let pending = request(
        &cp,
        CliRequest::KickDevice {
            device: "m1".into(),
        },
    );
    let request = match plane.peer.recv() {
        ToDataPlane::KickDevice { request, device } => {
            assert_eq!(device, "m1");
            request
        }
        other => panic!("expected a kick, got {other:?}"),
    };
    plane.peer.send(&FromDataPlane::Kicked {
        request,
        connections: 3,
    });
    assert_eq!(
        pending.join().unwrap(),
        CliResponse::Kicked { connections: 3 }
    );
}

#[test]
fn stream_kicks_sum_the_planes_answers() {
    let dir = TempDir::new("kick-stream");
    let cp = control_plane(&dir, Duration::from_secs(5));
    let mut first = FakePlane::synced(&cp, "dp1");
    let mut second = FakePlane::synced(&cp, "dp2");
    let pending = request(
        &cp,
        CliRequest::KickStream {
            stream: "live/cam".into(),
        },
    );
    for (plane, publishers) in [(&mut first, 1), (&mut second, 0)] {
        let request = match plane.peer.recv() {
            ToDataPlane::KickStream { request, stream } => {
                assert_eq!(stream, "live/cam");
                request
            }
            other => panic!("expected a stream kick, got {other:?}"),
        };
        plane.peer.send(&FromDataPlane::StreamKicked {
            request,
            publishers,
        });
    }
    assert_eq!(
        pending.join().unwrap(),
        CliResponse::StreamKicked { publishers: 1 }
    );
}

#[test]
fn figures_are_kept_per_plane() {
    let dir = TempDir::new("figures");
    let cp = control_plane(&dir, Duration::from_secs(5));
    let mut plane = FakePlane::synced(&cp, "dp1");
    let figures = shoal_protocols::control::PlaneFigures {
        applied_version: 1,
        uptime_ms: 1234,
        rss_bytes: 1 << 20,
        registry_devices: 7,
        cores: vec![],
    };
    plane.peer.send(&FromDataPlane::Figures(figures.clone()));
    for _ in 0..100 {
        if let CliResponse::Figures(all) = cp.handle(CliRequest::Figures) {
            if all.first().is_some_and(|f| f.figures == figures) {
                assert_eq!(all[0].node, "dp1");
                assert!(all[0].connected);
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("figures never arrived");
}

#[test]
fn cli_session_answers_requests() {
    let dir = TempDir::new("cli");
    let cp = control_plane(&dir, Duration::from_secs(1));
    let (mut cli, _server) = connect(&cp, Endpoint::Control, &hello("me", PeerRole::Cli));
    let reply: HelloReply = cli.recv();
    assert!(matches!(
        reply,
        HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            ..
        }
    ));
    cli.send(&CliRequest::Get {
        kind: ResourceKind::Listener,
        name: None,
    });
    let CliResponse::Resources(listeners) = cli.recv() else {
        panic!("no resources");
    };
    assert_eq!(listeners.len(), 6);
    cli.send(&CliRequest::Get {
        kind: ResourceKind::Device,
        name: Some("ghost".into()),
    });
    let e = error_of(cli.recv());
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.message, "device \"ghost\" does not exist");
}

#[test]
fn hellos_of_another_version_or_role_are_refused() {
    let dir = TempDir::new("hello");
    let cp = control_plane(&dir, Duration::from_secs(1));
    let mut old = hello("me", PeerRole::Cli);
    old.protocol_version = PROTOCOL_VERSION + 1;
    let (mut cli, _server) = connect(&cp, Endpoint::Control, &old);
    let HelloReply::Refused { reason, .. } = cli.recv() else {
        panic!("not refused");
    };
    assert!(
        reason.contains(&format!(
            "speaks control protocol version {PROTOCOL_VERSION}"
        )) && reason.contains(&format!("shoalctl speaks version {}", PROTOCOL_VERSION + 1)),
        "{reason}"
    );
    let (mut cli, _server) = connect(&cp, Endpoint::DataPlane, &hello("me", PeerRole::Cli));
    let HelloReply::Refused { reason, .. } = cli.recv() else {
        panic!("not refused");
    };
    assert!(reason.contains("shoalctl dials control.sock"), "{reason}");
}

#[test]
fn peers_outside_the_policy_are_refused() {
    let policy = AccessPolicy {
        own_uid: 1000,
        uids: vec![1001],
        gids: vec![50],
    };
    let peer = |uid, gid, groups: Vec<u32>| crate::handshake::PeerCredentials {
        pid: 1,
        uid,
        gid,
        groups,
    };
    assert!(policy.permits(&peer(0, 0, vec![])));
    assert!(policy.permits(&peer(1000, 1000, vec![])));
    assert!(policy.permits(&peer(1001, 1001, vec![])));
    assert!(policy.permits(&peer(1002, 50, vec![])));
    assert!(policy.permits(&peer(1002, 1002, vec![7, 50])));
    assert!(!policy.permits(&peer(1002, 1002, vec![7])));
}

#[test]
fn the_daemon_serves_its_sockets_and_cleans_up() {
    use crate::daemon::{serve, RunSettings};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = TempDir::new("daemon");
    let socket_dir = dir.path().join("run");
    let control = socket_dir.join("control.sock");
    let dataplane = socket_dir.join("dataplane.sock");
    // A socket file left by a process that died: removed at start.
    std::fs::create_dir_all(&socket_dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&control).unwrap());
    let settings = RunSettings {
        state_dir: dir.path().join("state"),
        socket_dir: socket_dir.clone(),
        node: "n1".into(),
        allow_uids: vec![],
        allow_gids: vec![],
        ack_timeout: Duration::from_secs(1),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let daemon_stop = Arc::clone(&stop);
    let daemon = std::thread::spawn(move || serve(settings, &daemon_stop));
    for _ in 0..500 {
        if dataplane.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for path in [&control, &dataplane] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660, "{}", path.display());
    }
    // A second control plane on the same sockets is refused.
    let second = serve(
        RunSettings {
            state_dir: dir.path().join("state2"),
            socket_dir,
            node: "n2".into(),
            allow_uids: vec![],
            allow_gids: vec![],
            ack_timeout: Duration::from_secs(1),
        },
        &Arc::new(AtomicBool::new(false)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        second.contains("another control plane answers on"),
        "{second}"
    );

    let stream = UnixStream::connect(&control).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cli = Peer {
        stream,
        frames: FrameBuffer::new(wire::DEFAULT_MAX_FRAME_BYTES),
    };
    cli.send(&hello("me", PeerRole::Cli));
    let HelloReply::Welcome { node, .. } = cli.recv() else {
        panic!("not welcome");
    };
    assert_eq!(node, "n1");
    cli.send(&CliRequest::Status);
    let CliResponse::Status(status) = cli.recv() else {
        panic!("no status");
    };
    assert_eq!((status.node.as_str(), status.desired_version), ("n1", 1));

    stop.store(true, Ordering::Relaxed);
    daemon.join().unwrap().unwrap();
    assert!(
        cli.try_recv::<CliResponse>().is_none(),
        "the session is closed"
    );
    assert!(!control.exists() && !dataplane.exists());
}

/// An import of a million devices in batches of 10,000, through
/// validation, the store and the in-memory state (no data plane). Run by
/// hand: `cargo test --release -p shoal-controlplane -- --ignored --nocapture million`.
#[test]
#[ignore = "takes a while; measures the import path"]
fn million_device_import() {
    use shoal_protocols::control::{Device, SecretDigest};
    use std::time::Instant;

    let dir = TempDir::new("million");
    let (store, mut state) = Store::open(&db(&dir)).unwrap();
    let seed = [Change::Upsert(Resource::Product(product("meter")))];
    let p = crate::validate::plan(&state, &seed).unwrap();
    store.commit(2, &p.forward, |_| None).unwrap();
    state.commit(2, &p.forward, p.small);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut phases = [Duration::ZERO; 5];
    for batch in 0..100u32 {
        let batch_started = Instant::now();
        let changes: Vec<Change> = (0..10_000u32)
            .map(|i| {
                let id = format!("meter-{:07}", batch * 10_000 + i);
                let secret = SecretDigest::of(&id, b"secret-123");
                Change::Upsert(Resource::Device(Device {
                    id,
                    product: "meter".into(),
                    secret,
                }))
            })
            .collect();
        let t = Instant::now();
        phases[0] += batch_started.elapsed();
        let p = crate::validate::plan(&state, &changes).unwrap();
        phases[1] += t.elapsed();
        let t = Instant::now();
        let frame = wire::encode_to_vec(&ToDataPlane::Delta {
            version: state.version() + 1,
            changes: p.forward.clone(),
        })
        .unwrap();
        assert!(frame.len() < wire::DEFAULT_MAX_FRAME_BYTES as usize);
        phases[2] += t.elapsed();
        let t = Instant::now();
        let version = state.version() + 1;
        store.commit(version, &p.forward, |_| None).unwrap();
        phases[3] += t.elapsed();
        let t = Instant::now();
        state.commit(version, &p.forward, p.small);
        phases[4] += t.elapsed();
        slowest = slowest.max(batch_started.elapsed());
    }
    let elapsed = started.elapsed();
    let rss_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let file_bytes = std::fs::metadata(db(&dir)).unwrap().len();
    println!(
        "1,000,000 devices in {elapsed:?} (slowest batch {slowest:?}); RSS {} MiB; database {} MiB",
        rss_kib / 1024,
        file_bytes >> 20
    );
    println!(
        "making {:?}, validating {:?}, encoding {:?}, storing {:?}, in memory {:?}",
        phases[0], phases[1], phases[2], phases[3], phases[4]
    );
    assert_eq!(state.devices_using("meter"), 1_000_000);
    let reopen = Instant::now();
    drop(store);
    drop(state);
    let (_store, state) = Store::open(&db(&dir)).unwrap();
    println!(
        "reopened with {} devices in {:?}",
        state.devices_using("meter"),
        reopen.elapsed()
    );
    let snapshot = Instant::now();
    let parts = state.snapshot_parts().count();
    println!("{parts} snapshot parts built in {:?}", snapshot.elapsed());
}
