//! SIGHUP: the config file is read again and applied on every core in two
//! phases. What stays keeps its connections; what goes drains; a config
//! that cannot be applied leaves the running one in place.

use std::net::TcpListener;
use std::time::Duration;

use shoal_tests::{Config, Dataplane, Listener, Route, TcpDevice, INTEREST_SETTLE, WAIT};

/// The suite's TCP listener plus a line-based one on `@port1@`.
fn with_lines_listener(config: Config) -> Config {
    config
        .listener(Listener::tcp("lines", 1).framing(r#"{ kind = "delimiter", delimiter = "\n" }"#))
}

#[test]
fn a_reload_adds_a_listener_and_a_route_and_keeps_every_connection() {
    let mut dp = Dataplane::start(Config::tcp());
    let mut a = TcpDevice::login(&dp, "a");
    let mut b = TcpDevice::login(&dp, "b");
    std::thread::sleep(INTEREST_SETTLE);
    // No route yet: a's frame reaches nobody.
    a.send(b"before");
    b.expect_no_frame(Duration::from_millis(200));

    let line = dp.reload(with_lines_listener(Config::tcp().route(Route::republish(
        "a-to-b",
        "devices/a/up",
        "devices/b/down",
    ))));
    assert!(
        line.contains("config reloaded") && line.contains("version=2"),
        "{line}"
    );
    dp.wait_for_logs("config applied", 2, WAIT);

    // The connections made before the reload carry on, under the new route.
    a.send(b"after");
    assert_eq!(b.recv_frame(WAIT), b"after");
    // The new listener accepts, with its own framing.
    let mut c = TcpDevice::connect_raw(dp.addr(1));
    c.send_raw(b"c\n");
    dp.device_core("c", WAIT);
    let stats = dp.wait_for_stats("three devices", WAIT, |s| s.sum("conns") == 3);
    assert_eq!(stats.sum("frame_errors"), 0, "{stats}");
}

#[test]
fn an_invalid_config_is_refused_and_the_running_one_stays() {
    let route = Route::republish("a-to-b", "devices/a/up", "devices/b/down");
    let mut dp = Dataplane::start(Config::tcp().route(route.clone()));
    let mut a = TcpDevice::login(&dp, "a");
    let mut b = TcpDevice::login(&dp, "b");
    std::thread::sleep(INTEREST_SETTLE);

    // A syntax error: refused with the place.
    let line = dp.reload("[[listener]]\nname = 5\n");
    assert!(line.contains("config reload refused"), "{line}");
    assert!(line.contains("line 2"), "{line}");

    // A config that validates but that no core can apply: its new listener's
    // port is held by another process. Every core aborts.
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let held = holder.local_addr().expect("addr").to_string();
    let line = dp.reload(
        Config::tcp()
            .route(route)
            .listener(Listener::tcp("taken", 1).bind(&held)),
    );
    assert!(line.contains("config reload refused"), "{line}");
    assert!(
        line.contains("cannot bind") && line.contains(&held),
        "{line}"
    );
    assert!(
        dp.logs_matching("config applied").is_empty(),
        "nothing was committed"
    );

    // Everything runs as before: the route, the connections, version 1.
    a.send(b"still routed");
    assert_eq!(b.recv_frame(WAIT), b"still routed");
    let line = dp.reload(Config::tcp());
    assert!(
        line.contains("version=2"),
        "the refused configs took no version: {line}"
    );
}

#[test]
fn a_removed_listener_stops_accepting_and_drains_its_connections() {
    let mut dp = Dataplane::start(with_lines_listener(Config::tcp().drain_timeout("2s")));
    let mut kept = TcpDevice::login(&dp, "kept");
    let mut gone = TcpDevice::connect_raw(dp.addr(1));
    gone.send_raw(b"gone\n");
    dp.device_core("gone", WAIT);

    let line = dp.reload(Config::tcp().drain_timeout("2s").route(Route::echo()));
    assert!(line.contains("config reloaded"), "{line}");
    dp.wait_for_log("listener removed; draining its connections", WAIT);

    // Its device is half-closed (drained), and its port no longer accepts.
    gone.expect_eof(WAIT);
    // Closing the sockets completes asynchronously on each core.
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(dp.addr(1)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed listener still accepts"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The listener that stayed kept its device, which now has the echo route.
    std::thread::sleep(INTEREST_SETTLE);
    kept.assert_echo(b"still here");
}
