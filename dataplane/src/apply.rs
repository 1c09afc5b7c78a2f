//! Applying a config on a core: prepare (bind sockets, build routes; may
//! fail and leave nothing running), then commit (start serving).
//!
//! The same steps run for the config the data plane starts with and for
//! every config pushed later, so there is one apply path.

use std::rc::Rc;
use std::sync::Arc;

use glommio::net::{TcpListener, UdpSocket};
use shoal_protocols::config::{DataPlaneConfig, ListenerProtocol, RuntimeSettings};

use crate::core::Core;
use crate::listener::ListenerSpec;
use crate::routes::RouteTable;
use crate::{tcp, udp};

/// A validated config and the listener state every core shares.
#[derive(Debug)]
pub(crate) struct ApplyPlan {
    pub(crate) config: DataPlaneConfig,
    pub(crate) listeners: Vec<Arc<ListenerSpec>>,
}

impl ApplyPlan {
    /// Validates `config` and builds the shared listener state.
    pub(crate) fn new(config: DataPlaneConfig) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerSpec::new(l.clone()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { config, listeners })
    }
}

/// What prepare made and commit starts.
pub(crate) struct Prepared {
    tcp: Vec<(TcpListener, Rc<tcp::TcpListenerRt>)>,
    udp: Vec<(UdpSocket, Rc<udp::UdpListenerRt>)>,
    routes: Rc<RouteTable>,
    settings: RuntimeSettings,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("tcp", &self.tcp.len())
            .field("udp", &self.udp.len())
            .finish_non_exhaustive()
    }
}

/// Phase one on this core: binds every listener's socket and builds the
/// routes. On error everything made so far is dropped.
pub(crate) fn prepare(core: &Core, plan: &ApplyPlan) -> Result<Prepared, String> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for spec in &plan.listeners {
        match spec.config.protocol {
            ListenerProtocol::Tcp => tcp.push(tcp::bind(spec)?),
            ListenerProtocol::Udp => udp.push(udp::bind(spec)?),
            #[allow(unreachable_patterns)]
            other => {
                return Err(format!(
                    "listener {:?}: protocol {other} is not served by this data plane",
                    spec.config.name
                ))
            }
        }
    }
    let largest = u32::try_from(core.pool.largest_buffer_bytes())
        .unwrap_or(u32::MAX)
        .saturating_sub(1);
    let routes = Rc::new(RouteTable::build(&plan.config.routes, largest)?);
    Ok(Prepared {
        tcp,
        udp,
        routes,
        settings: plan.config.runtime.clone(),
    })
}

/// Phase two: start serving.
pub(crate) fn commit(core: &Rc<Core>, prepared: Prepared) {
    *core.settings.borrow_mut() = prepared.settings;
    core.routes().stop();
    core.set_routes(prepared.routes);
    for (listener, rt) in prepared.tcp {
        glommio::spawn_local(tcp::run_listener(Rc::clone(core), rt, listener)).detach();
    }
    for (socket, rt) in prepared.udp {
        glommio::spawn_local(udp::run_listener(Rc::clone(core), rt, socket)).detach();
    }
}
