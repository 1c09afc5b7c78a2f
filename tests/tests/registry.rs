//! The device registry: devices added or imported with `shoalctl` reach the
//! data plane's cores, prove themselves with their secret on listeners that
//! ask for it, and can be kicked.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_tests::{free_ports, Planes, TcpDevice, EMPTY_DATAPLANE_CONFIG, INTEREST_SETTLE, WAIT};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A plain listener and a `device_secret` one; what `meter`-product
/// devices send reaches the device `watcher` on the plain one.
fn secured(planes: &Planes) -> (u16, u16) {
    let ports = free_ports(2);
    for (name, port, auth) in [
        ("plain", ports[0], "none"),
        ("secure", ports[1], "device-secret"),
    ] {
        planes
            .ctl(&[
                "listener",
                "add",
                name,
                "--protocol",
                "tcp",
                "--bind",
                &addr(port).to_string(),
                "--auth",
                auth,
            ])
            .assert_exit_code(0);
    }
    planes
        .ctl(&[
            "route",
            "add",
            "to-watcher",
            "--filter",
            "devices/+/up",
            "--listener",
            "secure",
            "--republish",
            "devices/watcher/down",
        ])
        .assert_exit_code(0);
    planes.ctl(&["product", "add", "meter"]).assert_exit_code(0);
    (ports[0], ports[1])
}

#[test]
fn devices_log_in_with_their_secret_and_can_be_kicked() {
    let (planes, _cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let (plain, secure) = secured(&planes);
    for (id, secret) in [("m1", "m1-secret-token"), ("m2", "m2-secret-token")] {
        planes
            .ctl(&[
                "device",
                "add",
                id,
                "--product",
                "meter",
                "--secret",
                secret,
            ])
            .assert_exit_code(0);
    }
    let mut watcher = TcpDevice::connect(addr(plain), "watcher");
    let mut m1 = TcpDevice::connect(addr(secure), "m1:m1-secret-token");
    let mut m2 = TcpDevice::connect(addr(secure), "m2:m2-secret-token");
    std::thread::sleep(INTEREST_SETTLE);
    m1.send(b"from m1");
    assert_eq!(watcher.recv_frame(WAIT), b"from m1");
    m2.send(b"from m2");
    assert_eq!(watcher.recv_frame(WAIT), b"from m2");

    // A wrong secret and an unknown device are turned away, and the
    // secret is never logged.
    let mut wrong = TcpDevice::connect(addr(secure), "m1:not-the-secret");
    wrong.expect_closed(WAIT);
    let mut ghost = TcpDevice::connect(addr(secure), "ghost:ghost-secret-1");
    ghost.expect_closed(WAIT);
    dp.wait_for_logs("device=ghost", 1, WAIT);
    let log = dp.log().text();
    assert!(!log.contains("not-the-secret"), "a secret reached the log");
    // Both refusals are counted in the figures the data plane reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = planes.ctl_json(&["stats"]);
        let failures: u64 = stats
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|plane| plane["cores"].as_array().cloned().unwrap_or_default())
            .map(|core| core["auth_failures"].as_u64().unwrap_or(0))
            .sum();
        if failures == 2 {
            break;
        }
        assert!(failures < 2, "{failures} auth failures counted: {stats}");
        assert!(
            Instant::now() < deadline,
            "auth failures never counted: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Kicked: m1's connection closes, m2's stays.
    let kicked = planes.ctl(&["device", "kick", "m1"]);
    kicked.assert_exit_code(0);
    assert!(kicked.stdout.contains('1'), "{kicked:?}");
    m1.expect_closed(WAIT);
    m2.send(b"still here");
    assert_eq!(watcher.recv_frame(WAIT), b"still here");

    // A removed device's connection closes and it cannot log in again.
    planes.ctl(&["device", "rm", "m2"]).assert_exit_code(0);
    m2.expect_closed(WAIT);
    let mut again = TcpDevice::connect(addr(secure), "m2:m2-secret-token");
    again.expect_closed(WAIT);
}

#[test]
fn an_imported_fleet_reaches_every_core() {
    let (planes, _cp) = Planes::start();
    let _dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let (plain, secure) = secured(&planes);
    let dir = planes.dir().to_path_buf();

    // A file with one bad line is refused whole, naming the line.
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "id,product,secret\nd1,meter,d1-secret-token\nd/2,meter,d2-secret-token\n",
    )
    .expect("write csv");
    let out = planes.ctl(&["device", "import", bad.to_str().expect("utf-8 path")]);
    out.assert_exit_code(2);
    assert!(out.stderr.contains("bad.csv:3"), "{out:?}");
    let none = planes.ctl_json(&["get", "devices"]).to_string();
    assert!(!none.contains("d1"), "{none}");

    let n = 5000;
    let mut csv = String::from("id,product,secret\n");
    for i in 0..n {
        let _ = writeln!(csv, "fleet-{i},meter,fleet-secret-{i:05}");
    }
    let good = dir.join("fleet.csv");
    std::fs::write(&good, csv).expect("write csv");
    let out = planes.ctl(&[
        "device",
        "import",
        good.to_str().expect("utf-8 path"),
        "--batch",
        "1000",
    ]);
    out.assert_exit_code(0);
    assert!(out.stdout.contains("5000"), "{out:?}");

    // The data plane reports every device in its registry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = planes.ctl_json(&["status"]).to_string();
        if status.contains(&format!("\"registry_devices\":{n}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registry never showed {n}: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Devices owned by either core log in on whichever core accepts them.
    let mut watcher = TcpDevice::connect(addr(plain), "watcher");
    std::thread::sleep(INTEREST_SETTLE);
    for i in [0, 1, 2, 3, 1234, 4999] {
        let mut d = TcpDevice::connect(addr(secure), &format!("fleet-{i}:fleet-secret-{i:05}"));
        std::thread::sleep(INTEREST_SETTLE);
        let payload = format!("reading {i}");
        d.send(payload.as_bytes());
        assert_eq!(watcher.recv_frame(WAIT), payload.as_bytes());
    }
}
