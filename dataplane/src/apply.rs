//! Applying a config on a core, in two phases: prepare (bind the sockets of
//! new listeners, build routes; may fail and then leaves nothing running),
//! then commit (start serving the new listeners, swap the routes, stop the
//! listeners that went away).
//!
//! The same steps run for the config the data plane starts with and for
//! every later one (a reload now, a push from the control plane later), so
//! there is one apply path. A listener whose config did not change is kept
//! as it is: its socket and its connections are not touched. A listener
//! whose config changed gets a new socket (bound beside the old one with
//! SO_REUSEPORT, so accepting never pauses); its open connections go on
//! under the settings they started with. A removed listener closes its
//! socket and drains its connections until the drain deadline.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, UdpSocket};
use shoal_protocols::config::{DataPlaneConfig, ListenerProtocol, RuntimeSettings};
use tracing::info;

use crate::core::{CloseReason, Connection, Core};
use crate::listener::ListenerSpec;
use crate::routes::RouteTable;
use crate::signal::LocalSignal;
use crate::{coap, http, mqtt, stream, tcp, udp};

/// A validated config and the listener state every core shares.
#[derive(Debug)]
pub(crate) struct ApplyPlan {
    /// Counts applies: 1 for the config the data plane starts with.
    pub(crate) version: u64,
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
        Ok(Self {
            version: 1,
            config,
            listeners,
        })
    }

    /// The plan that follows this one: listeners whose config is unchanged
    /// keep their shared state (and so their connection count).
    pub(crate) fn next(&self, config: DataPlaneConfig) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let listeners = config
            .listeners
            .iter()
            .map(|l| match self.listeners.iter().find(|s| s.config == *l) {
                Some(same) => Ok(Arc::clone(same)),
                None => ListenerSpec::new(l.clone()).map(Arc::new),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            version: self.version + 1,
            config,
            listeners,
        })
    }
}

/// A listener running on this core.
#[derive(Debug)]
enum Running {
    Tcp(Rc<tcp::TcpListenerRt>),
    Udp(Rc<udp::UdpListenerRt>),
    /// MQTT, or HTTP (which serves MQTT over WebSocket).
    Stream(Rc<mqtt::MqttListenerRt>),
    Coap(Rc<coap::CoapListenerRt>),
}

impl Running {
    fn removed(&self) -> &LocalSignal {
        match self {
            Self::Tcp(rt) => &rt.removed,
            Self::Udp(rt) => &rt.removed,
            Self::Stream(rt) => &rt.removed,
            Self::Coap(rt) => &rt.removed,
        }
    }
}

/// The listeners this core runs, by name.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    listeners: HashMap<String, (Arc<ListenerSpec>, Running)>,
}

/// What prepare made and commit starts.
pub(crate) struct Prepared {
    version: u64,
    tcp: Vec<(TcpListener, Rc<tcp::TcpListenerRt>, Arc<ListenerSpec>)>,
    udp: Vec<(UdpSocket, Rc<udp::UdpListenerRt>, Arc<ListenerSpec>)>,
    streams: Vec<(TcpListener, Rc<mqtt::MqttListenerRt>, Arc<ListenerSpec>)>,
    coap: Vec<(UdpSocket, Rc<coap::CoapListenerRt>, Arc<ListenerSpec>)>,
    /// Running listeners the new config changes (replaced) or drops.
    replaced: Vec<String>,
    removed: Vec<String>,
    routes: Rc<RouteTable>,
    settings: RuntimeSettings,
    /// The products' topic permissions.
    acl: mqtt::AclTable,
    /// Who may publish and play live streams.
    stream_rules: Vec<shoal_protocols::config::StreamRule>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("version", &self.version)
            .field("tcp", &self.tcp.len())
            .field("udp", &self.udp.len())
            .field("coap", &self.coap.len())
            .field("replaced", &self.replaced)
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Gives up what prepare made (another core failed): the new sockets
    /// close as they drop, the new routes' upstreams stop.
    pub(crate) fn abort(self) {
        self.routes.stop();
    }
}

/// Phase one on this core: binds the sockets of new and changed listeners
/// and builds the routes. On error everything made so far is dropped.
pub(crate) fn prepare(
    core: &Core,
    plan: &ApplyPlan,
    applied: &Applied,
) -> Result<Prepared, String> {
    if plan.config.pools != core.pool_settings {
        return Err(
            "[pools] differs from the running config: pools are sized when the data plane \
             starts; restart it to resize them"
                .to_owned(),
        );
    }
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut streams = Vec::new();
    let mut coap = Vec::new();
    let mut replaced = Vec::new();
    for spec in &plan.listeners {
        let name = &spec.config.name;
        match applied.listeners.get(name) {
            Some((running, _)) if Arc::ptr_eq(running, spec) => continue,
            Some(_) => replaced.push(name.clone()),
            None => {}
        }
        match spec.config.protocol {
            ListenerProtocol::Tcp => {
                let (socket, rt) = tcp::bind(spec)?;
                tcp.push((socket, rt, Arc::clone(spec)));
            }
            ListenerProtocol::Udp => {
                let (socket, rt) = udp::bind(spec)?;
                udp.push((socket, rt, Arc::clone(spec)));
            }
            ListenerProtocol::Mqtt => {
                let (socket, rt) = mqtt::bind(spec)?;
                streams.push((socket, rt, Arc::clone(spec)));
            }
            ListenerProtocol::Http => {
                let (socket, rt) = http::bind(spec)?;
                streams.push((socket, rt, Arc::clone(spec)));
            }
            ListenerProtocol::Rtmp => {
                let (socket, rt) = mqtt::bind(spec)?;
                streams.push((socket, rt, Arc::clone(spec)));
            }
            ListenerProtocol::Coap => {
                let (socket, rt) = coap::bind(core, spec)?;
                coap.push((socket, rt, Arc::clone(spec)));
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(format!(
                    "listener {name:?}: protocol {other} is not served by this data plane"
                ))
            }
        }
    }
    let removed = applied
        .listeners
        .keys()
        .filter(|name| !plan.listeners.iter().any(|s| &s.config.name == *name))
        .cloned()
        .collect();
    let largest = u32::try_from(core.pool.largest_buffer_bytes())
        .unwrap_or(u32::MAX)
        .saturating_sub(1);
    let routes = Rc::new(RouteTable::build_on(core, &plan.config.routes, largest)?);
    Ok(Prepared {
        version: plan.version,
        tcp,
        udp,
        streams,
        coap,
        replaced,
        removed,
        routes,
        settings: plan.config.runtime.clone(),
        acl: mqtt::AclTable::build(&plan.config.products),
        stream_rules: plan.config.streams.clone(),
    })
}

/// Phase two: start serving the new config.
pub(crate) fn commit(core: &Rc<Core>, prepared: Prepared, applied: &mut Applied) {
    core.mqtt.configure(prepared.acl, &prepared.settings.mqtt);
    core.streams.configure(prepared.stream_rules);
    *core.settings.borrow_mut() = prepared.settings;
    core.routes().stop();
    core.set_routes(prepared.routes);
    for name in &prepared.replaced {
        if let Some((_, running)) = applied.listeners.remove(name) {
            // Its connections stay, under the settings they started with.
            running.removed().raise();
        }
    }
    for name in &prepared.removed {
        if let Some((_, running)) = applied.listeners.remove(name) {
            running.removed().raise();
            glommio::spawn_local(drain_listener(Rc::clone(core), name.clone())).detach();
        }
    }
    for (socket, rt, spec) in prepared.tcp {
        glommio::spawn_local(tcp::run_listener(Rc::clone(core), Rc::clone(&rt), socket)).detach();
        applied
            .listeners
            .insert(spec.config.name.clone(), (spec, Running::Tcp(rt)));
    }
    for (socket, rt, spec) in prepared.streams {
        let task = match spec.config.protocol {
            ListenerProtocol::Http => {
                glommio::spawn_local(http::run_listener(Rc::clone(core), Rc::clone(&rt), socket))
            }
            ListenerProtocol::Rtmp => glommio::spawn_local(mqtt::accept_loop(
                Rc::clone(core),
                Rc::clone(&rt),
                socket,
                stream::serve_rtmp,
            )),
            _ => glommio::spawn_local(mqtt::run_listener(Rc::clone(core), Rc::clone(&rt), socket)),
        };
        task.detach();
        applied
            .listeners
            .insert(spec.config.name.clone(), (spec, Running::Stream(rt)));
    }
    for (socket, rt, spec) in prepared.udp {
        glommio::spawn_local(udp::run_listener(Rc::clone(core), Rc::clone(&rt), socket)).detach();
        applied
            .listeners
            .insert(spec.config.name.clone(), (spec, Running::Udp(rt)));
    }
    for (socket, rt, spec) in prepared.coap {
        glommio::spawn_local(coap::run_listener(Rc::clone(core), Rc::clone(&rt), socket)).detach();
        applied
            .listeners
            .insert(spec.config.name.clone(), (spec, Running::Coap(rt)));
    }
    if prepared.version > 1 {
        info!(
            version = prepared.version,
            replaced = ?prepared.replaced,
            removed = ?prepared.removed,
            "config applied"
        );
    }
}

/// Drains the connections a removed listener had when it was removed:
/// half-close now, close what is left of them at the drain deadline. (A
/// listener added again under the same name meanwhile keeps its own new
/// connections.)
async fn drain_listener(core: Rc<Core>, listener: String) {
    let timeout = core.settings.borrow().drain_timeout;
    let conns = core.conns_of(&listener);
    if conns.is_empty() {
        return;
    }
    info!(
        listener,
        open = conns.len(),
        ?timeout,
        "listener removed; draining its connections"
    );
    for c in &conns {
        c.begin_drain();
    }
    // A connection that ended is held only by this list.
    let open = |conns: &[Rc<dyn Connection>]| conns.iter().any(|c| Rc::strong_count(c) > 1);
    let deadline = Instant::now() + timeout;
    while open(&conns) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    for c in conns.iter().filter(|c| Rc::strong_count(c) > 1) {
        c.close(CloseReason::ListenerRemoved);
    }
}
