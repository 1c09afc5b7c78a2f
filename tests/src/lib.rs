//! Helpers for the end-to-end tests in `tests/`: start the real
//! `shoal-dataplane` binary with a config, watch its log, read its stats
//! lines, drive it with plain std sockets acting as devices and upstreams,
//! and run the workspace's other binaries to their end.
//!
//! Every wait here is bounded: a helper that runs out of time panics with
//! what it was waiting for, and the data plane's log is echoed to the test's
//! stderr (shown when a test fails).
//!
//! - [`config`]: configs built from listeners and routes ([`Config`]).
//! - [`process`]: the binaries, config files, free ports, [`Dataplane`],
//!   one-shot runs ([`run_bin`]).
//! - [`log`]: captured output lines and what a log line says.
//! - [`stats`]: the per-core stats lines, parsed.
//! - [`devices`]: TCP and UDP devices, device pairs, and a TCP upstream.
//! - [`downlink`]: bursts of downlink for a device that is not reading.
//! - [`planes`]: both planes as processes, and `shoalctl` runs against them.
//! - [`mqtt`]: real MQTT clients: `mosquitto_pub`/`mosquitto_sub` and a
//!   driven Python client (paho-mqtt, or raw packets over TCP or WebSocket).

use std::time::Duration;

pub mod config;
pub mod devices;
pub mod downlink;
pub mod log;
pub mod mqtt;
pub mod planes;
pub mod process;
pub mod stats;
pub mod streams;

pub use config::{Config, Listener, Route};
pub use devices::{
    connect_devices, connect_pairs, length_frame, udp_recv, udp_socket, Closed, DevicePair,
    FrameSink, TcpDevice,
};
pub use downlink::{burst_config, DownlinkBurst, BURST_FRAMES};
pub use log::{core_of, has_field, thread_of, Log, LogLine};
pub use mqtt::{
    by_sender, core_with_one, mosquitto_pub, mqtt_config, mqtt_settings, per_core, publish,
    publish_lines, run_program, script_path, wait_per_core, Backend, ConnAck, Connect,
    MosquittoSub, MqttClient, MqttVersion, Received, SubMessage, SubOptions, Transport, PYTHON,
};
pub use planes::{Daemon, Planes, CONTROLPLANE_READY, EMPTY_DATAPLANE_CONFIG};
pub use process::{
    dataplane_bin, free_ports, run_bin, run_dataplane, thread_states, workspace_bin, Dataplane,
    RunOutput, TempConfig,
};
pub use stats::{CoreStats, PoolFigures, Stats};
pub use streams::{
    curl_viewer, http_status, publish_stream, response_header, stream_config, stream_settings,
    ws_flv_client, ws_flv_summary, Finished, Playback, Program, SlowEnd, SlowViewer, StreamAddr,
    Viewer, ViewerTool,
};

/// Cores every data plane of the suite runs with.
pub const CORES: usize = 2;

/// Stats interval passed to every data plane of the suite.
pub const STATS_INTERVAL: &str = "200ms";

/// How long the suite waits for anything that should happen promptly: a
/// login line, a frame, a stats line showing a count.
pub const WAIT: Duration = Duration::from_secs(5);

/// The ready line's marker.
pub const READY_LINE: &str = "shoal-dataplane ready";

/// The last line of a clean stop.
pub const STOPPED_LINE: &str = "shoal-dataplane stopped";

/// Subscriptions are announced to the other cores asynchronously after a
/// device's login line; this is how long the suite lets that settle before
/// relying on cross-core delivery.
pub const INTEREST_SETTLE: Duration = Duration::from_millis(300);
