//! `shoalctl up`, the README's first command: both daemons in the
//! foreground with the embedded default config, stopped cleanly by Ctrl-C.

use std::process::Command;
use std::time::Duration;

use shoal_tests::{run_bin, workspace_bin, Daemon, TcpDevice, READY_LINE, WAIT};

#[test]
fn up_starts_both_planes_and_ctrl_c_stops_them() {
    let dir = std::env::temp_dir().join(format!("shoal-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut up = Daemon::start(
        "shoalctl-up",
        Command::new(workspace_bin("shoalctl"))
            .arg("up")
            .arg("--dir")
            .arg(&dir)
            .arg("--cores")
            .arg("2"),
    );
    up.wait_for_log(READY_LINE, Duration::from_secs(30));
    up.wait_for_log("applied version", Duration::from_secs(30));
    let socket = dir.join("control.sock");
    let status = run_bin(
        "shoalctl",
        &["--socket".as_ref(), socket.as_os_str(), "status".as_ref()],
        b"",
        Duration::from_secs(20),
    );
    status.assert_exit_code(0);
    assert!(
        status.stdout.contains("tcp-default") || status.stdout.contains("connected"),
        "{status:?}"
    );

    // The embedded default config serves: a raw TCP device logs in.
    let mut device = TcpDevice::connect("127.0.0.1:7000".parse().expect("addr"), "up-test");
    device.send(b"hello");
    up.wait_for_log("device=up-test", WAIT);

    up.signal(libc::SIGINT);
    let code = up.wait_exit(Duration::from_secs(40));
    assert_eq!(code.code(), Some(0), "{}", up.log().text());
    let log = up.log().text();
    assert!(log.contains("shoal-dataplane stopped"), "{log}");
    assert!(log.contains("shoal-controlplane stopped"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
