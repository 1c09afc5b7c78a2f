//! Both planes together, driven with `shoalctl`: configuration reaches the
//! data plane without dropping connections, refusals leave the running
//! state alone, either plane restarts without the other, and nothing a
//! caller was told succeeded is lost to `kill -9`.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use shoal_tests::{free_ports, Planes, TcpDevice, EMPTY_DATAPLANE_CONFIG, INTEREST_SETTLE, WAIT};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Adds a raw TCP listener (2-byte length framing, login frame, no
/// credentials) on `port`.
fn add_tcp_listener(planes: &Planes, name: &str, port: u16) -> String {
    let out = planes.ctl(&[
        "listener",
        "add",
        name,
        "--protocol",
        "tcp",
        "--bind",
        &addr(port).to_string(),
        "--auth",
        "none",
    ]);
    out.assert_exit_code(0);
    out.stdout
}

/// Routes what `from` sends to `to`.
fn add_route(planes: &Planes, name: &str, from: &str, to: &str) {
    planes
        .ctl(&[
            "route",
            "add",
            name,
            "--filter",
            &format!("devices/{from}/up"),
            "--republish",
            &format!("devices/{to}/down"),
        ])
        .assert_exit_code(0);
}

fn assert_delivers(from: &mut TcpDevice, to: &mut TcpDevice, payload: &[u8]) {
    from.send(payload);
    assert_eq!(to.recv_frame(WAIT), payload);
}

#[test]
fn shoalctl_configures_the_data_plane_and_connections_stay() {
    let (planes, _cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    dp.wait_for_log("control plane connected", WAIT);
    let ports = free_ports(2);

    let added = add_tcp_listener(&planes, "tcp-a", ports[0]);
    assert!(added.contains("acked"), "{added}");
    add_route(&planes, "a-to-b", "a", "b");
    let mut a = TcpDevice::connect(addr(ports[0]), "a");
    let mut b = TcpDevice::connect(addr(ports[0]), "b");
    std::thread::sleep(INTEREST_SETTLE);
    assert_delivers(&mut a, &mut b, b"one");

    // More changes while both stay connected: another listener, another
    // route, a product and devices, a changed route.
    add_tcp_listener(&planes, "tcp-b", ports[1]);
    add_route(&planes, "b-to-a", "b", "a");
    planes
        .ctl(&["product", "add", "meter", "--description", "power meters"])
        .assert_exit_code(0);
    planes
        .ctl(&[
            "device",
            "add",
            "m1",
            "--product",
            "meter",
            "--secret",
            "m1-secret-token",
        ])
        .assert_exit_code(0);
    planes
        .ctl(&[
            "route",
            "add",
            "a-to-b",
            "--filter",
            "devices/a/up",
            "--republish",
            "devices/b/down",
        ])
        .assert_exit_code(0);
    assert_delivers(&mut a, &mut b, b"two");
    assert_delivers(&mut b, &mut a, b"three");
    let mut c = TcpDevice::connect(addr(ports[1]), "c");
    c.send(b"hello");

    let listeners = planes.ctl_json(&["get", "listeners"]).to_string();
    assert!(
        listeners.contains("tcp-a") && listeners.contains("tcp-b"),
        "{listeners}"
    );
    let devices = planes.ctl_json(&["get", "device", "m1"]).to_string();
    assert!(devices.contains("meter"), "{devices}");
    assert!(!devices.contains("m1-secret-token"), "{devices}");

    // Removing a listener closes its connections; the other one's stay.
    planes.ctl(&["listener", "rm", "tcp-b"]).assert_exit_code(0);
    c.expect_closed(Duration::from_secs(10));
    assert_delivers(&mut a, &mut b, b"four");

    let status = planes.ctl(&["status"]);
    status.assert_exit_code(0);
    assert!(status.stdout.contains("connected"), "{status:?}");
}

#[test]
fn invalid_changes_are_refused_with_their_reason_and_nothing_changes() {
    let (planes, _cp) = Planes::start();
    let _dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let port = free_ports(1)[0];
    add_tcp_listener(&planes, "tcp-a", port);
    add_route(&planes, "a-to-b", "a", "b");
    let before = planes.ctl_json(&["get", "routes"]);

    let bad_filter = planes.ctl(&["route", "add", "bad", "--filter", "devices/#/up", "--drop"]);
    bad_filter.assert_exit_code(2);
    assert!(bad_filter.stderr.contains("bad"), "{bad_filter:?}");
    assert!(bad_filter.stderr.contains("filter"), "{bad_filter:?}");

    let no_listener = planes.ctl(&[
        "route",
        "add",
        "bad",
        "--filter",
        "devices/+/up",
        "--listener",
        "nope",
        "--drop",
    ]);
    no_listener.assert_exit_code(2);
    assert!(no_listener.stderr.contains("nope"), "{no_listener:?}");

    let no_product = planes.ctl(&[
        "device",
        "add",
        "d1",
        "--product",
        "ghost",
        "--secret",
        "d1-secret-token",
    ]);
    no_product.assert_exit_code(2);
    assert!(no_product.stderr.contains("ghost"), "{no_product:?}");

    planes
        .ctl(&["route", "rm", "never-was"])
        .assert_exit_code(3);
    assert_eq!(planes.ctl_json(&["get", "routes"]), before);

    // Still routing as before.
    let mut a = TcpDevice::connect(addr(port), "a");
    let mut b = TcpDevice::connect(addr(port), "b");
    std::thread::sleep(INTEREST_SETTLE);
    assert_delivers(&mut a, &mut b, b"still");
}

#[test]
fn a_change_the_data_plane_refuses_is_not_kept() {
    let (planes, cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    dp.wait_for_log("control plane connected", WAIT);
    // A port someone else holds (without SO_REUSEPORT): the data plane
    // cannot bind it and NACKs.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = planes.ctl(&[
        "listener",
        "add",
        "taken",
        "--protocol",
        "tcp",
        "--bind",
        &addr(port).to_string(),
    ]);
    out.assert_exit_code(1);
    assert!(out.stderr.contains("taken"), "{out:?}");
    cp.wait_for_log("refused", WAIT);
    planes
        .ctl(&["get", "listener", "taken"])
        .assert_exit_code(3);

    // The next change goes through.
    let free = free_ports(1)[0];
    add_tcp_listener(&planes, "ok", free);
    TcpDevice::connect(addr(free), "x").send(b"hi");
}

#[test]
fn the_data_plane_serves_through_a_control_plane_restart_and_resyncs() {
    let (planes, mut cp) = Planes::start();
    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let port = free_ports(1)[0];
    add_tcp_listener(&planes, "tcp-a", port);
    add_route(&planes, "a-to-b", "a", "b");
    let mut a = TcpDevice::connect(addr(port), "a");
    let mut b = TcpDevice::connect(addr(port), "b");
    std::thread::sleep(INTEREST_SETTLE);

    cp.kill9();
    assert_delivers(&mut a, &mut b, b"no control plane");
    let late = TcpDevice::connect(addr(port), "late");
    drop(late);

    let _cp = planes.start_controlplane();
    dp.wait_for_logs("control plane connected", 2, Duration::from_secs(15));
    // The change made now reaches the data plane that was there all along.
    add_route(&planes, "b-to-a", "b", "a");
    assert_delivers(&mut b, &mut a, b"resynced");
    assert_delivers(&mut a, &mut b, b"kept");
    let status = planes.ctl(&["status"]);
    status.assert_exit_code(0);
}

#[test]
fn the_data_plane_restarts_from_its_cache_without_the_control_plane() {
    let (planes, mut cp) = Planes::start();
    let mut dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    let port = free_ports(1)[0];
    add_tcp_listener(&planes, "tcp-a", port);
    add_route(&planes, "a-to-b", "a", "b");
    cp.stop();
    dp.stop();

    let dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    dp.wait_for_log("started from cached desired state", WAIT);
    let mut a = TcpDevice::connect(addr(port), "a");
    let mut b = TcpDevice::connect(addr(port), "b");
    std::thread::sleep(INTEREST_SETTLE);
    assert_delivers(&mut a, &mut b, b"from the cache");
}

#[test]
fn a_peer_whose_uid_is_not_allowed_is_refused() {
    let (planes, cp) = Planes::start();
    // Let everyone reach the socket file, so the refusal can only come
    // from the peer-credential check.
    let socket = planes.control_socket();
    chmod(&socket, 0o666);
    chmod(planes.dir(), 0o755);
    let out = planes.ctl_as(65534, 65534, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("65534"), "{out:?}");
    let line = cp.wait_for_log("uid=65534", WAIT);
    assert!(line.contains("control.sock"), "{line}");
    // Root still gets in.
    planes.ctl(&["status"]).assert_exit_code(0);
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Products added one after another while the control plane is killed
/// with SIGKILL at some moment: every one `shoalctl` reported as done is
/// there after the restart, in the control plane and in the data plane.
#[test]
fn kill_9_during_changes_loses_nothing_that_was_acknowledged() {
    let (planes, mut cp) = Planes::start();
    let mut dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
    dp.wait_for_log("control plane connected", WAIT);

    let mut acked = Vec::new();
    for round in 0..3 {
        let planes_ref = &planes;
        let (done, killed_at) = std::thread::scope(|s| {
            let adder = s.spawn(move || {
                let mut done = Vec::new();
                for i in 0..40 {
                    let name = format!("p{round}-{i}");
                    let out = planes_ref.ctl(&["product", "add", &name]);
                    if out.status.code() == Some(0) {
                        done.push(name);
                    }
                }
                done
            });
            // Kill at a different moment each round.
            std::thread::sleep(Duration::from_millis(150 + 200 * round));
            if round == 1 {
                dp.kill9();
            } else {
                cp.kill9();
            }
            (adder.join().expect("adder"), round)
        });
        assert!(
            !done.is_empty() || killed_at == 0,
            "round {round}: nothing acked"
        );
        acked.extend(done);
        if round == 1 {
            dp = planes.start_dataplane(EMPTY_DATAPLANE_CONFIG);
        } else {
            cp = planes.start_controlplane();
        }
    }
    let products = planes.ctl_json(&["get", "products"]).to_string();
    for name in &acked {
        assert!(
            products.contains(&format!("\"{name}\"")),
            "{name} was acknowledged but is gone: {products}"
        );
    }
    // The data plane catches up with everything that is stored: it is
    // connected and runs the desired version.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = planes.ctl_json(&["status"]);
        let desired = &status["control_plane"]["desired_version"];
        let caught_up = status["data_planes"].as_array().is_some_and(|planes| {
            planes
                .iter()
                .any(|p| p["connected"] == true && &p["applied_version"] == desired)
        });
        if caught_up {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the data plane never caught up: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(dp);
}
