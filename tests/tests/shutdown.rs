//! SIGTERM: stop accepting, drain (half-close, wait for the peers) up to
//! the drain timeout, exit 0.

use std::io::{self, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use shoal_tests::{
    burst_config, has_field, length_frame, Closed, Config, Dataplane, DownlinkBurst, Route,
    TcpDevice, CORES, INTEREST_SETTLE, WAIT,
};

/// The usual listener, echoing every frame, with this drain timeout.
fn echo_config(drain_timeout: &str) -> Config {
    Config::tcp()
        .drain_timeout(drain_timeout)
        .route(Route::echo())
}

#[test]
fn sigterm_half_closes_every_connection_and_exits_once_peers_close() {
    // A long drain timeout: the exit must come from the peers closing.
    let mut dp = Dataplane::start(echo_config("30s"));
    let mut devices: Vec<TcpDevice> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let mut d = TcpDevice::login(&dp, id);
            d.assert_echo(b"before");
            d
        })
        .collect();

    dp.sigterm();
    for d in &mut devices {
        // A FIN after everything queued: an orderly end of stream.
        d.expect_eof(WAIT);
    }
    dp.wait_for_logs("draining open ones", CORES, WAIT);

    // The listeners are closed: new connections are refused.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect_timeout(&dp.addr(0), Duration::from_secs(1)) {
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
            Ok(mut late) => {
                // Queued before the listeners closed; it must not be served.
                let _ = late.write_all(&length_frame(b"late"));
            }
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        thread::sleep(Duration::from_millis(50));
    }

    // The peers still may write: the data plane only closed its side.
    let closing = Instant::now();
    drop(devices);
    dp.expect_clean_exit(WAIT);
    assert!(
        closing.elapsed() < Duration::from_secs(5),
        "the drain waited for its deadline instead of the peers"
    );
    assert!(dp.logs_matching("drain deadline passed").is_empty());
    assert!(dp
        .logs_matching("device online")
        .iter()
        .all(|l| !has_field(l, "device", "late")));
}

#[test]
fn a_peer_that_never_closes_is_cut_at_the_drain_deadline() {
    let mut dp = Dataplane::start(echo_config("1s"));
    let mut stubborn = TcpDevice::login(&dp, "stubborn");

    let signalled = Instant::now();
    dp.sigterm();
    stubborn.expect_eof(WAIT);
    // It keeps its side open; the data plane must give up on it.
    dp.expect_clean_exit(WAIT);
    let took = signalled.elapsed();
    assert!(took < WAIT, "took {took:?}");
    let line = dp.wait_for_log("drain deadline passed", Duration::from_millis(100));
    assert!(line.contains(" WARN "), "{line}");
    // The connection is gone for good now.
    assert!(matches!(
        stubborn.expect_closed(Duration::from_secs(1)),
        Closed::Eof | Closed::Reset
    ));
}

#[test]
fn sigint_stops_an_idle_data_plane() {
    let mut dp = Dataplane::start(echo_config("10s"));
    dp.signal(libc::SIGINT);
    // Exit code 0 and the stopped line last.
    dp.expect_clean_exit(WAIT);
}

#[test]
fn downlink_queued_before_sigterm_is_delivered_before_the_half_close() {
    let mut dp = Dataplane::start(burst_config().drain_timeout("10s"));
    let mut reader = TcpDevice::login(&dp, "reader");
    let mut pusher = TcpDevice::login(&dp, "pusher");
    thread::sleep(INTEREST_SETTLE);

    // A burst for `reader`, which does not read yet: more than the sockets
    // hold, so the rest waits in the data plane's outbound queue.
    let burst = DownlinkBurst::new("before sigterm");
    burst.push(&dp, &mut pusher);

    dp.sigterm();
    pusher.expect_eof(WAIT);
    drop(pusher);
    burst.expect_delivered(&mut reader, Duration::from_secs(8));
    reader.expect_eof(WAIT);
    drop(reader);
    dp.expect_clean_exit(WAIT);
    assert!(dp.logs_matching("drain deadline passed").is_empty());
}
