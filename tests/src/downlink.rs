//! Downlink bursts: thousands of numbered frames pushed through a route to
//! a device that is not reading, more than the sockets hold, so the rest
//! waits in the data plane's outbound queue; then read back and checked
//! frame by frame, in order.

use std::time::{Duration, Instant};

use crate::config::{Config, Route};
use crate::devices::{length_frame, TcpDevice};
use crate::process::Dataplane;
use crate::WAIT;

/// Frames in a burst.
pub const BURST_FRAMES: usize = 6000;

/// Payload bytes of each frame of a burst (6 MB a burst in all).
const PAYLOAD_BYTES: usize = 1000;

/// Device `pusher`'s uplink republished as device `reader`'s downlink, with
/// an outbound queue (16 MiB) that holds a whole burst and a write stall
/// timeout (10 s) that no test reaches.
pub fn burst_config() -> Config {
    Config::tcp()
        .outbound_queue_bytes(16 * 1024 * 1024)
        .write_stall_timeout("10s")
        .route(Route::republish(
            "push",
            "devices/pusher/up",
            "devices/reader/down",
        ))
}

/// [`BURST_FRAMES`] numbered frames of downlink; `label` tells one burst's
/// frames from another's.
#[derive(Debug)]
pub struct DownlinkBurst {
    label: String,
}

impl DownlinkBurst {
    /// A burst whose frames carry `label`.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
        }
    }

    /// Payload of frame `i`: `downlink LABEL/NNNNN `, padded to
    /// [`PAYLOAD_BYTES`].
    fn payload(&self, i: usize) -> Vec<u8> {
        let mut p = format!("downlink {}/{i:05} ", self.label).into_bytes();
        p.resize(PAYLOAD_BYTES, b'-');
        p
    }

    /// Sends the burst as uplink of `pusher` in one write, waits until the
    /// data plane has taken every frame as downlink, and asserts that part
    /// of it is still waiting in the outbound queue (not yet written).
    pub fn push(&self, dp: &Dataplane, pusher: &mut TcpDevice) {
        let before = dp.stats();
        let bytes: Vec<u8> = (0..BURST_FRAMES)
            .flat_map(|i| length_frame(&self.payload(i)))
            .collect();
        pusher.send_raw(&bytes);
        let frames = BURST_FRAMES as u64;
        let msgs_in = before.sum("msgs_in") + frames;
        let msgs_out = before.sum("msgs_out") + frames;
        let taken = dp.wait_for_stats("every downlink taken", WAIT, |s| {
            s.sum("msgs_in") >= msgs_in && s.sum("msgs_out") >= msgs_out
        });
        assert!(
            taken.sum("bytes_out") - before.sum("bytes_out") < bytes.len() as u64,
            "some downlink should wait in the outbound queue:\n{taken}"
        );
    }

    /// Reads the whole burst at `reader` within `timeout`, each frame
    /// intact and in order.
    pub fn expect_delivered(&self, reader: &mut TcpDevice, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for i in 0..BURST_FRAMES {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = reader.try_recv_frame(left).unwrap_or_else(|| {
                panic!(
                    "burst {}: only {i} of {BURST_FRAMES} frames arrived in time",
                    self.label
                )
            });
            assert!(
                frame == self.payload(i),
                "burst {}: frame {i} differs: {} bytes, starting {:?}",
                self.label,
                frame.len(),
                String::from_utf8_lossy(&frame[..frame.len().min(24)])
            );
        }
    }
}
