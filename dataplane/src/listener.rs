//! What every core shares about a listener: its config and its open
//! connection count (the only cross-core state of the accept path; the
//! per-message path never touches it).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;

use shoal_protocols::config::{parse_socket_addr, ListenerConfig};

/// A listener's config, with the count that `max_connections` bounds.
#[derive(Debug)]
pub(crate) struct ListenerSpec {
    pub(crate) config: ListenerConfig,
    pub(crate) addr: SocketAddr,
    /// TCP connections or UDP sessions open on all cores.
    pub(crate) open: AtomicU32,
}

impl ListenerSpec {
    pub(crate) fn new(config: ListenerConfig) -> Result<Self, String> {
        let addr = parse_socket_addr(&config.bind)?;
        Ok(Self {
            config,
            addr,
            open: AtomicU32::new(0),
        })
    }
}
