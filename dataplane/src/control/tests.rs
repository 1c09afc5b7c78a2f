//! The control client against a fake control plane on a Unix socket pair,
//! with a fake data plane behind it (one real registry shard, config
//! validation as the cores do it, no sockets); and the cache on disk.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_protocols::config::{DataPlaneConfig, PoolSettings, RuntimeSettings};
use shoal_protocols::control::{
    wire, Change, Device, Framing, FromDataPlane, Hello, HelloReply, Identity, Listener,
    ListenerAuth, ListenerProtocol, PeerRole, Product, Resource, ResourceKey, ResourceKind, Route,
    RouteAction, SecretDigest, ToDataPlane, PROTOCOL_VERSION,
};

use super::cache::{self, Cache};
use super::client::{ClientStart, ControlClient, SessionEnd};
use super::frames::{write_message, FrameReader, RawFrame};
use super::{ApplySummary, DesiredState, PlaneDriver};
use crate::apply::ApplyPlan;
use crate::registry::{AuthVerdict, DeviceOp, RegistryShard};
use crate::supervisor::RegistryCommit;

/// The cores as the client sees them: one registry shard, and the config
/// validated as `prepare` does.
#[derive(Debug, Default)]
struct FakePlane {
    registry: RegistryShard,
    config: Option<DataPlaneConfig>,
    applies: u32,
    /// The next apply fails with this error (as a core that cannot bind).
    refuse_next: Option<String>,
    kicked: Vec<String>,
    /// Streams whose publisher is on one of the fake cores.
    publishing: Vec<String>,
    kicked_streams: Vec<String>,
}

impl PlaneDriver for FakePlane {
    fn begin_devices(&mut self, ticket: u64, replace: bool) -> Result<(), String> {
        self.registry.begin(ticket, replace);
        Ok(())
    }

    fn stage_devices(&mut self, ticket: u64, ops: Vec<DeviceOp>) -> Result<(), String> {
        self.registry.stage(ticket, ops);
        Ok(())
    }

    fn discard_devices(&mut self, ticket: u64) {
        self.registry.discard(ticket);
    }

    fn apply(
        &mut self,
        config: DataPlaneConfig,
        registry: RegistryCommit,
    ) -> Result<ApplySummary, String> {
        let checked = match self.refuse_next.take() {
            Some(e) => Err(e),
            None => ApplyPlan::new(config.clone()).and_then(|_| {
                self.registry
                    .prepare(registry.ticket, &registry.products)
                    .map_err(|e| format!("core 0: registry: {e}"))
            }),
        };
        let devices = match checked {
            Ok(n) => n,
            Err(e) => {
                self.registry.abort(registry.ticket);
                return Err(e);
            }
        };
        self.registry.commit(registry.ticket)?;
        self.applies += 1;
        let summary = ApplySummary {
            listeners: config.listeners.len(),
            routes: config.routes.len(),
            devices: devices as u64,
        };
        self.config = Some(config);
        Ok(summary)
    }

    fn kick(&mut self, device: &str) -> Result<u32, String> {
        self.kicked.push(device.to_owned());
        Ok(1)
    }

    fn kick_stream(&mut self, stream: &str) -> Result<u32, String> {
        self.kicked_streams.push(stream.to_owned());
        Ok(u32::from(self.publishing.iter().any(|s| s == stream)))
    }
}

fn listener(name: &str, port: u16) -> Listener {
    Listener {
        name: name.into(),
        protocol: ListenerProtocol::Tcp,
        bind: format!("127.0.0.1:{port}"),
        max_connections: 100,
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
        auth: ListenerAuth::DeviceSecret,
    }
}

fn route(name: &str, filter: &str) -> Route {
    Route {
        name: name.into(),
        filter: filter.into(),
        listener: None,
        device: None,
        action: RouteAction::Drop,
    }
}

fn product(name: &str) -> Product {
    Product {
        name: name.into(),
        description: String::new(),
        publish: Vec::new(),
        subscribe: Vec::new(),
    }
}

fn device(id: &str) -> Device {
    Device {
        id: id.into(),
        product: "meter".into(),
        secret: SecretDigest::of(id, format!("{id}-secret").as_bytes()),
    }
}

fn key(kind: ResourceKind, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        name: name.into(),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoal-dp-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(cache: Option<Cache>) -> ControlClient<FakePlane> {
    ControlClient::new(ClientStart {
        node: "dp-test".into(),
        cores: 2,
        runtime: RuntimeSettings::default(),
        pools: PoolSettings::default(),
        driver: FakePlane::default(),
        state: DesiredState::default(),
        applied_version: 0,
        cache,
        samples: None,
        stop: Arc::new(AtomicBool::new(false)),
        first_ticket: 1,
        started: Instant::now(),
    })
}

/// The control plane's end of the socket pair.
struct FakeControlPlane {
    stream: UnixStream,
    reader: FrameReader,
}

impl FakeControlPlane {
    fn recv<T: DeserializeOwned>(&mut self) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.reader.next_frame(&mut self.stream).expect("read") {
                Some(frame) => return wire::decode_body(frame.body()).expect("decode"),
                None => assert!(Instant::now() < deadline, "nothing from the data plane"),
            }
        }
    }

    /// The next answer that is not figures.
    fn reply(&mut self) -> FromDataPlane {
        loop {
            match self.recv::<FromDataPlane>() {
                FromDataPlane::Figures(_) => {}
                other => return other,
            }
        }
    }

    fn send<T: Serialize>(&mut self, msg: &T) {
        write_message(&mut self.stream, msg).expect("write");
    }
}

/// Runs `client` against a fake control plane driven by `script`; returns
/// the client after the session and how it ended.
fn with_control_plane(
    mut client: ControlClient<FakePlane>,
    script: impl FnOnce(&mut FakeControlPlane),
) -> (ControlClient<FakePlane>, SessionEnd) {
    let (mut ours, theirs) = UnixStream::pair().expect("socket pair");
    ours.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    theirs
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let runner = std::thread::spawn(move || {
        let end = client.session(&mut ours);
        (client, end)
    });
    let mut cp = FakeControlPlane {
        stream: theirs,
        reader: FrameReader::new(wire::DEFAULT_MAX_FRAME_BYTES),
    };
    script(&mut cp);
    drop(cp);
    runner.join().expect("client thread")
}

fn welcome(cp: &mut FakeControlPlane) -> Hello {
    let hello: Hello = cp.recv();
    cp.send(&HelloReply::Welcome {
        protocol_version: PROTOCOL_VERSION,
        node: "cp-test".into(),
        software_version: "9.9.9".into(),
    });
    hello
}

/// Snapshot `version` in three parts: listener and product, devices,
/// routes.
fn send_snapshot(cp: &mut FakeControlPlane, version: u64, devices: &[&str]) {
    let parts = [
        vec![
            Resource::Listener(listener("secure", 17000)),
            Resource::Product(product("meter")),
        ],
        devices
            .iter()
            .map(|d| Resource::Device(device(d)))
            .collect(),
        vec![
            Resource::Route(route("r1", "devices/+/up")),
            Resource::Route(route("r2", "x/#")),
        ],
    ];
    let count = parts.len();
    for (part, resources) in parts.into_iter().enumerate() {
        cp.send(&ToDataPlane::Snapshot {
            version,
            part: part as u32,
            last: part + 1 == count,
            resources,
        });
    }
}

fn verify(plane: &FakePlane, id: &str) -> AuthVerdict {
    plane
        .registry
        .verify(id, &SecretDigest::of(id, format!("{id}-secret").as_bytes()))
}

#[test]
fn hello_snapshot_in_parts_deltas_and_a_kick() {
    let dir = TempDir::new();
    let cache = Cache::open(&dir.0).unwrap();
    let (client, end) = with_control_plane(client(Some(cache)), |cp| {
        let hello = welcome(cp);
        assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
        assert_eq!(hello.node, "dp-test");
        assert_eq!(
            hello.role,
            PeerRole::DataPlane {
                cores: 2,
                last_applied_version: 0
            }
        );
        send_snapshot(cp, 4, &["m1", "m2", "m3"]);
        assert_eq!(cp.reply(), FromDataPlane::Ack { version: 4 });

        // A delta: a device goes, one comes, a route changes in place, one
        // is added last.
        cp.send(&ToDataPlane::Delta {
            version: 5,
            changes: vec![
                Change::Remove(key(ResourceKind::Device, "m2")),
                Change::Upsert(Resource::Device(device("m4"))),
                Change::Upsert(Resource::Route(route("r1", "devices/m1/up"))),
                Change::Upsert(Resource::Route(route("r0", "late/#"))),
            ],
        });
        assert_eq!(cp.reply(), FromDataPlane::Ack { version: 5 });

        cp.send(&ToDataPlane::KickDevice {
            request: 77,
            device: "m1".into(),
        });
        assert_eq!(
            cp.reply(),
            FromDataPlane::Kicked {
                request: 77,
                connections: 1
            }
        );
        // Figures come every second, with the applied version.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let FromDataPlane::Figures(f) = cp.recv::<FromDataPlane>() {
                assert_eq!(f.applied_version, 5);
                assert!(f.rss_bytes > 0);
                break;
            }
            assert!(Instant::now() < deadline);
        }
    });
    assert!(matches!(end, SessionEnd::Lost(_)), "{end:?}");
    assert_eq!(client.applied_version, 5);
    let routes: Vec<&str> = client
        .state
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(routes, ["r1", "r2", "r0"]);
    assert_eq!(client.state.routes[0].filter, "devices/m1/up");
    let plane = &client.driver;
    assert_eq!(plane.applies, 2);
    assert_eq!(plane.registry.len(), 3);
    assert_eq!(verify(plane, "m1"), AuthVerdict::Accepted);
    assert_eq!(verify(plane, "m2"), AuthVerdict::UnknownDevice);
    assert_eq!(verify(plane, "m4"), AuthVerdict::Accepted);
    assert_eq!(plane.kicked, ["m1"]);
    let config = plane.config.as_ref().unwrap();
    assert_eq!(config.listeners[0].name, "secure");
    assert_eq!(config.routes.len(), 3);

    // What was acknowledged is in the cache, and reads back.
    let mut fresh = FakePlane::default();
    let loaded = cache::load(&dir.0, &mut fresh, 9).unwrap().unwrap();
    assert_eq!(loaded.version, 5);
    assert_eq!(loaded.deltas, 1);
    assert_eq!(loaded.state, client.state);
    let registry = RegistryCommit {
        ticket: 9,
        products: loaded.state.product_names(),
    };
    fresh
        .apply(
            loaded
                .state
                .config(&Default::default(), &Default::default()),
            registry,
        )
        .unwrap();
    assert_eq!(fresh.registry.len(), 3);
    assert_eq!(verify(&fresh, "m4"), AuthVerdict::Accepted);
    assert_eq!(verify(&fresh, "m2"), AuthVerdict::UnknownDevice);
}

#[test]
fn stream_kicks_reach_the_cores_and_say_whether_a_publisher_ended() {
    let mut start = client(None);
    start.driver.publishing.push("live/cam".into());
    let (client, end) = with_control_plane(start, |cp| {
        welcome(cp);
        send_snapshot(cp, 1, &["m1"]);
        assert_eq!(cp.reply(), FromDataPlane::Ack { version: 1 });
        cp.send(&ToDataPlane::KickStream {
            request: 8,
            stream: "live/cam".into(),
        });
        assert_eq!(
            cp.reply(),
            FromDataPlane::StreamKicked {
                request: 8,
                publishers: 1
            }
        );
        cp.send(&ToDataPlane::KickStream {
            request: 9,
            stream: "live/none".into(),
        });
        assert_eq!(
            cp.reply(),
            FromDataPlane::StreamKicked {
                request: 9,
                publishers: 0
            }
        );
    });
    assert!(matches!(end, SessionEnd::Lost(_)), "{end:?}");
    assert_eq!(client.driver.kicked_streams, ["live/cam", "live/none"]);
    assert!(client.driver.kicked.is_empty());
}

#[test]
fn refused_deltas_change_nothing_anywhere() {
    let dir = TempDir::new();
    let cache = Cache::open(&dir.0).unwrap();
    let (mut client, _) = with_control_plane(client(Some(cache)), |cp| {
        welcome(cp);
        send_snapshot(cp, 1, &["m1"]);
        assert_eq!(cp.reply(), FromDataPlane::Ack { version: 1 });
    });
    let before_state = client.state.clone();
    client.driver.refuse_next = Some("core 1: listener \"new\": cannot bind".into());
    let (client, _) = with_control_plane(client, |cp| {
        let hello: Hello = welcome(cp);
        assert_eq!(
            hello.role,
            PeerRole::DataPlane {
                cores: 2,
                last_applied_version: 1
            }
        );
        let nack = |cp: &mut FakeControlPlane, version: u64, changes: Vec<Change>| {
            cp.send(&ToDataPlane::Delta { version, changes });
            match cp.reply() {
                FromDataPlane::Nack { version: v, error } => {
                    assert_eq!(v, version);
                    error
                }
                other => panic!("expected a nack, got {other:?}"),
            }
        };
        // A core refuses (the device change is staged, then dropped).
        let e = nack(
            cp,
            2,
            vec![
                Change::Upsert(Resource::Device(device("m9"))),
                Change::Upsert(Resource::Listener(listener("new", 17001))),
            ],
        );
        assert!(e.contains("cannot bind"), "{e}");
        // Removing what is not there, in the small state and in the registry.
        let e = nack(
            cp,
            2,
            vec![
                Change::Upsert(Resource::Device(device("m9"))),
                Change::Remove(key(ResourceKind::Route, "ghost")),
            ],
        );
        assert!(e.contains("route \"ghost\""), "{e}");
        let e = nack(
            cp,
            2,
            vec![
                Change::Upsert(Resource::Device(device("m9"))),
                Change::Remove(key(ResourceKind::Device, "ghost")),
            ],
        );
        assert!(e.contains("\"ghost\" does not exist"), "{e}");
        // An invalid config (a route on a listener that is not there).
        let mut bad = route("bad", "a/#");
        bad.listener = Some("nope".into());
        let e = nack(cp, 2, vec![Change::Upsert(Resource::Route(bad))]);
        assert!(e.contains("\"nope\" does not exist"), "{e}");
        // A product its devices still use.
        let e = nack(
            cp,
            2,
            vec![Change::Remove(key(ResourceKind::Product, "meter"))],
        );
        assert!(e.contains("\"meter\" is removed"), "{e}");
        // An old version.
        let e = nack(cp, 1, vec![Change::Upsert(Resource::Product(product("p")))]);
        assert!(e.contains("not newer"), "{e}");
        // A snapshot cut short by a delta is refused, and so is its delta's
        // fault; the running state stays.
        cp.send(&ToDataPlane::Snapshot {
            version: 3,
            part: 0,
            last: false,
            resources: vec![Resource::Device(device("x1"))],
        });
        cp.send(&ToDataPlane::Delta {
            version: 2,
            changes: vec![Change::Upsert(Resource::Product(product("p")))],
        });
        assert!(matches!(cp.reply(), FromDataPlane::Nack { version: 3, .. }));
        assert_eq!(cp.reply(), FromDataPlane::Ack { version: 2 });
    });
    assert_eq!(client.applied_version, 2);
    assert_eq!(client.state.routes, before_state.routes);
    assert_eq!(client.state.listeners, before_state.listeners);
    assert_eq!(client.state.products.len(), 2);
    let plane = &client.driver;
    assert_eq!(plane.applies, 2);
    assert_eq!(plane.registry.len(), 1);
    assert_eq!(verify(plane, "m1"), AuthVerdict::Accepted);
    assert_eq!(verify(plane, "m9"), AuthVerdict::UnknownDevice);
    assert_eq!(verify(plane, "x1"), AuthVerdict::UnknownDevice);
    // Only what was acknowledged reached the cache.
    let loaded = cache::load(&dir.0, &mut FakePlane::default(), 5)
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state, client.state);
}

#[test]
fn refusals_and_other_versions_end_the_session() {
    let (_, end) = with_control_plane(client(None), |cp| {
        let _: Hello = cp.recv();
        cp.send(&HelloReply::Refused {
            protocol_version: PROTOCOL_VERSION,
            reason: "node dp-test is not allowed".into(),
        });
    });
    assert_eq!(
        end,
        SessionEnd::Refused("node dp-test is not allowed".into())
    );

    let (_, end) = with_control_plane(client(None), |cp| {
        let _: Hello = cp.recv();
        cp.send(&HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION + 1,
            node: "cp".into(),
            software_version: "2".into(),
        });
    });
    let SessionEnd::VersionMismatch(why) = end else {
        panic!("{end:?}");
    };
    assert!(
        why.contains(&format!("version {PROTOCOL_VERSION}"))
            && why.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
        "{why}"
    );
    // A reply of a later layout still names its version.
    let body = [0u8, 0x2c, 0xff, 0xff];
    assert_eq!(super::client::peek_reply_version(&body), Some(44));
}

/// Writes a snapshot of `version` (and the given deltas) through the
/// cache's writer, as the client does.
fn write_cache(dir: &std::path::Path, version: u64, deltas: &[ToDataPlane]) {
    let mut cache = Cache::open(dir).unwrap();
    cache.begin_snapshot().unwrap();
    let parts = [
        vec![
            Resource::Listener(listener("secure", 17000)),
            Resource::Product(product("meter")),
            Resource::Device(device("m1")),
        ],
        vec![Resource::Route(route("r1", "a/#"))],
    ];
    for (part, resources) in parts.into_iter().enumerate() {
        let frame = wire::encode_to_vec(&ToDataPlane::Snapshot {
            version,
            part: part as u32,
            last: part == 1,
            resources,
        })
        .unwrap();
        cache.write_snapshot_part(&RawFrame(frame)).unwrap();
    }
    cache.commit_snapshot().unwrap();
    for delta in deltas {
        let frame = wire::encode_to_vec(delta).unwrap();
        cache.append_delta(&RawFrame(frame)).unwrap();
    }
}

fn delta(version: u64, changes: Vec<Change>) -> ToDataPlane {
    ToDataPlane::Delta { version, changes }
}

#[test]
fn the_cache_reloads_and_ignores_a_torn_last_delta() {
    let dir = TempDir::new();
    assert!(cache::load(&dir.0, &mut FakePlane::default(), 1)
        .unwrap()
        .is_none());
    write_cache(
        &dir.0,
        10,
        &[
            delta(11, vec![Change::Upsert(Resource::Device(device("m2")))]),
            delta(12, vec![Change::Remove(key(ResourceKind::Route, "r1"))]),
        ],
    );
    // A crash in the middle of the next append.
    let torn = wire::encode_to_vec(&delta(
        13,
        vec![Change::Upsert(Resource::Device(device("m3")))],
    ))
    .unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.0.join("deltas.log"))
        .unwrap();
    log.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(log);

    let mut plane = FakePlane::default();
    let loaded = cache::load(&dir.0, &mut plane, 1).unwrap().unwrap();
    assert_eq!(loaded.version, 12);
    assert_eq!(loaded.deltas, 2);
    assert!(loaded.state.routes.is_empty());
    let registry = RegistryCommit {
        ticket: 1,
        products: loaded.state.product_names(),
    };
    plane
        .apply(
            loaded
                .state
                .config(&Default::default(), &Default::default()),
            registry,
        )
        .unwrap();
    assert_eq!(verify(&plane, "m1"), AuthVerdict::Accepted);
    assert_eq!(verify(&plane, "m2"), AuthVerdict::Accepted);
    assert_eq!(verify(&plane, "m3"), AuthVerdict::UnknownDevice);

    // A new snapshot replaces both files; deltas older than it are gone.
    write_cache(&dir.0, 20, &[]);
    assert!(!dir.0.join("deltas.log").exists());
    let loaded = cache::load(&dir.0, &mut FakePlane::default(), 1)
        .unwrap()
        .unwrap();
    assert_eq!((loaded.version, loaded.deltas), (20, 0));
}

#[test]
fn a_corrupt_cache_is_an_error() {
    let dir = TempDir::new();
    write_cache(&dir.0, 3, &[]);
    // A snapshot cut short is not a torn delta: the cache is unusable.
    let path = dir.0.join("snapshot.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert!(cache::load(&dir.0, &mut FakePlane::default(), 1).is_err());
    // Garbage in place of a delta.
    write_cache(&dir.0, 3, &[]);
    let mut garbage = vec![0, 0, 0, 4];
    garbage.extend_from_slice(&[0xff; 4]);
    std::fs::write(dir.0.join("deltas.log"), garbage).unwrap();
    assert!(cache::load(&dir.0, &mut FakePlane::default(), 1).is_err());
    // A delta that does not apply to the snapshot.
    write_cache(
        &dir.0,
        3,
        &[delta(
            4,
            vec![Change::Remove(key(ResourceKind::Listener, "nope"))],
        )],
    );
    let e = cache::load(&dir.0, &mut FakePlane::default(), 1).unwrap_err();
    assert!(e.contains("delta 4"), "{e}");
}

#[test]
fn backoff_doubles_to_five_seconds_with_jitter() {
    let mut b = super::Backoff::new();
    let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
    assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
    assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
    for d in &delays[7..] {
        assert!(
            *d >= Duration::from_millis(2500) && *d <= Duration::from_secs(5),
            "{d:?}"
        );
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
    assert!(b.max_delay() >= Duration::from_millis(2500));
}
