//! Buffer pools under load: 1,000 short-lived devices come, publish and go;
//! every buffer they used goes back to its pool.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{
    length_frame, Config, Dataplane, Listener, Route, Stats, TcpDevice, CORES, INTEREST_SETTLE,
    WAIT,
};

const DEVICES: usize = 1000;
const BATCH: usize = 100;
const FRAMES_PER_DEVICE: usize = 5;
const FRAME_BYTES: usize = 100;

/// The embedded default config's listeners and pools, on free ports, with
/// every uplink routed to one receiver device.
fn default_like_config() -> Config {
    let default_limits = |listener: Listener, max_frame_bytes| {
        listener
            .max_connections(100_000)
            .max_frame_bytes(max_frame_bytes)
            .idle_timeout("5m")
    };
    Config::new()
        .drain_timeout("1s")
        .pools(
            r#"
classes = [
    { buffer_bytes = 512, capacity = 16384 },
    { buffer_bytes = 4096, capacity = 4096 },
    { buffer_bytes = 65536, capacity = 256 },
]"#,
        )
        .listener(default_limits(Listener::tcp("tcp-default", 0), 4096))
        .listener(default_limits(Listener::udp("udp-default", 1), 2048))
        .route(
            Route::republish("collect", "devices/+/up", "devices/sink/down")
                .listener("tcp-default"),
        )
}

/// One device's whole life on the wire: login, five frames, then close.
fn device_bytes(n: usize) -> Vec<u8> {
    let mut bytes = length_frame(format!("load-{n}").as_bytes());
    for f in 0..FRAMES_PER_DEVICE {
        let mut payload = format!("device {n} frame {f} ").into_bytes();
        payload.resize(FRAME_BYTES, b'.');
        bytes.extend_from_slice(&length_frame(&payload));
    }
    bytes
}

/// Bytes of a device's stream sent before the batch pauses: everything
/// but the second half of its last frame.
fn first_part(bytes: &[u8]) -> usize {
    bytes.len() - FRAME_BYTES / 2
}

/// Runs one batch of devices: all connect and send their stream up to the
/// middle of the last frame, so each holds a partial frame in a pool
/// buffer; once the data plane has read all of that, they send the rest
/// and close. Returns the bytes they sent.
fn run_batch(dp: &Dataplane, first: usize, bytes_in_before: u64) -> u64 {
    let addr = dp.addr(0);
    let streams: Vec<Vec<u8>> = (first..first + BATCH).map(device_bytes).collect();
    let mut open = Vec::with_capacity(BATCH);
    for (n, bytes) in (first..).zip(&streams) {
        let mut stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("device {n}: connect: {e}"));
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        stream
            .write_all(&bytes[..first_part(bytes)])
            .unwrap_or_else(|e| panic!("device {n}: write: {e}"));
        open.push(stream);
    }
    let sent_first: u64 = streams.iter().map(|b| first_part(b) as u64).sum();
    let held = dp.wait_for_stats("the first parts read", WAIT, |s| {
        s.sum("bytes_in") >= bytes_in_before + sent_first
    });
    let partial_frames: u64 = held.cores.iter().map(|c| c.pool(512).in_use).sum();
    assert!(
        partial_frames >= BATCH as u64,
        "{BATCH} connections each hold a partial frame, yet only {partial_frames} buffers are in use:\n{held}"
    );
    for ((n, bytes), stream) in (first..).zip(&streams).zip(&mut open) {
        stream
            .write_all(&bytes[first_part(bytes)..])
            .unwrap_or_else(|e| panic!("device {n}: write: {e}"));
    }
    // Closing sends FIN after the frames: they are all read first.
    drop(open);
    streams.iter().map(|b| b.len() as u64).sum()
}

fn in_use(stats: &Stats) -> Vec<Vec<u64>> {
    stats
        .cores
        .iter()
        .map(|c| c.pools.iter().map(|p| p.in_use).collect())
        .collect()
}

#[test]
fn buffers_return_to_their_pools_after_a_thousand_devices() {
    let dp = Dataplane::start(default_like_config());
    let mut sink = TcpDevice::login(&dp, "sink");
    thread::sleep(INTEREST_SETTLE);

    let baseline = dp.stats();
    assert_eq!(baseline.sum("conns"), 1, "{baseline}");
    for core in &baseline.cores {
        let classes: Vec<u32> = core.pools.iter().map(|p| p.buffer_bytes).collect();
        assert_eq!(classes, [512, 4096, 65536], "core {}", core.core);
    }

    let expected = DEVICES * FRAMES_PER_DEVICE;
    let receiver = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut received = 0;
        while received < expected && Instant::now() < deadline {
            match sink.try_recv_frame(Duration::from_millis(200)) {
                Some(frame) => {
                    assert_eq!(frame.len(), FRAME_BYTES);
                    assert!(
                        frame.starts_with(b"device "),
                        "{:?}",
                        String::from_utf8_lossy(&frame)
                    );
                    received += 1;
                }
                None => continue,
            }
        }
        (sink, received)
    });

    let started = Instant::now();
    let mut bytes_in = baseline.sum("bytes_in");
    for batch in 0..DEVICES / BATCH {
        bytes_in += run_batch(&dp, batch * BATCH, bytes_in);
    }
    let (mut sink, received) = receiver.join().expect("the receiver thread");
    eprintln!(
        "{DEVICES} devices sent {expected} frames in {:?}",
        started.elapsed()
    );

    let after = dp.wait_for_stats(
        "every load connection closed",
        Duration::from_secs(10),
        |s| s.sum("conns") == baseline.sum("conns"),
    );
    assert_eq!(
        received, expected,
        "the sink got {received} of {expected} frames:\n{after}"
    );
    assert_eq!(after.sum("accepted"), 1 + DEVICES as u64, "{after}");
    assert_eq!(after.sum("msgs_in"), expected as u64, "{after}");
    assert_eq!(after.sum("route_republished"), expected as u64, "{after}");
    assert_eq!(after.sum("frame_errors"), 0, "{after}");
    assert_eq!(after.sum("mesh_drops"), 0, "{after}");
    assert_eq!(after.sum("outbound_drops"), 0, "{after}");

    eprintln!("before the load:\n{baseline}after it:\n{after}");
    assert_eq!(
        in_use(&after),
        in_use(&baseline),
        "buffers in use per core and class, after vs before:\n{after}"
    );
    let high_water: u64 = after.cores.iter().map(|c| c.pool(512).high_water).sum();
    assert!(high_water >= BATCH as u64, "{after}");
    for core in 0..CORES {
        let (before, now) = (baseline.core(core), after.core(core));
        assert!(
            now.pool(512).high_water > before.pool(512).in_use,
            "core {core}: the load never used the 512-byte class:\n{after}"
        );
        for p in &now.pools {
            assert!(
                p.allocated <= p.capacity,
                "core {core}: pool{} allocated {} of {}",
                p.buffer_bytes,
                p.allocated,
                p.capacity
            );
        }
    }

    // The receiver still works after all that.
    let mut probe = TcpDevice::login(&dp, "probe");
    probe.send(b"after the load");
    assert_eq!(sink.recv_frame(WAIT), b"after the load");
}
