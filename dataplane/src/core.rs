//! One core: its pool, bus, connection table, routes and mesh links.
//!
//! Everything here is `!Send` and touched only by the core's own executor.
//! Other cores are reached only through the channel mesh, with owned
//! [`MeshMsg`]s.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;

use glommio::channels::channel_mesh::Senders;
use shoal_protocols::config::{PoolSettings, RuntimeSettings};
use shoal_protocols::control::SecretDigest;
use shoal_protocols::figures::CoreFigures;
use slab::Slab;
use tracing::{info, warn};

use crate::auth::PendingQueries;
use crate::board::{CorePost, FiguresBoard, LatencyBuckets};
use crate::bus::{Bus, SharedTarget, Subscriber};
use crate::coap::CoapStats;
use crate::http::HttpState;
use crate::latency::LatencyHistogram;
use crate::message::{CrossMessage, MeshMsg, Message};
use crate::mqtt::Broker;
use crate::pool::{Payload, SlabPool};
use crate::registry::RegistryShard;
use crate::routes::RouteTable;
use crate::signal::{Gate, Kick, LocalSignal};
use crate::stats::{CoreStats, LogLimiter};
use crate::stream::StreamHub;

/// One read in this many is timed for the latency histogram.
const LATENCY_SAMPLE_EVERY: u32 = 16;

/// Device ids per [`MeshMsg::CloseDevices`] message.
const CLOSE_BATCH: usize = 256;

/// Typed key of the per-core connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(usize);

/// Why a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The same device logged in again.
    TakenOver,
    /// The data plane is stopping and the drain deadline passed.
    Shutdown,
    /// Its listener was removed and the drain deadline passed.
    ListenerRemoved,
    /// The control plane asked to close the device's connections.
    Kicked,
    /// The device left the registry.
    DeviceRemoved,
}

/// What the core can ask of any connection, whatever its protocol.
pub(crate) trait Connection {
    /// Closes it now.
    fn close(&self, reason: CloseReason);
    /// Starts a graceful end: flush what is queued, half-close, wait for
    /// the peer.
    fn begin_drain(&self);
}

/// A connection whose writes were deferred to the end of a batch.
pub(crate) trait DeferredFlush {
    /// Writes what was queued during the batch.
    fn flush_deferred(&self);
}

/// An entry of the connection table.
pub(crate) struct ConnEntry {
    pub(crate) listener: Rc<str>,
    pub(crate) device: Option<Rc<str>>,
    pub(crate) since: Instant,
    pub(crate) conn: Rc<dyn Connection>,
}

impl std::fmt::Debug for ConnEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnEntry")
            .field("listener", &self.listener)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// The state of one core.
pub(crate) struct Core {
    /// Index of the core (thread `shoal-core-{index}`).
    pub(crate) index: usize,
    /// This core's id in the channel mesh.
    mesh_id: usize,
    /// Members of the mesh (cores).
    peers: usize,
    pub(crate) pool: SlabPool,
    /// What the pool was built from; pools are sized once, at start.
    pub(crate) pool_settings: PoolSettings,
    pub(crate) bus: Bus,
    pub(crate) stats: CoreStats,
    pub(crate) settings: RefCell<RuntimeSettings>,
    routes: RefCell<Rc<RouteTable>>,
    conns: RefCell<Slab<ConnEntry>>,
    devices: RefCell<HashMap<Rc<str>, ConnId>>,
    senders: Option<Senders<MeshMsg>>,
    interest_kick: Kick,
    /// Per peer: messages its full channel did not take yet, in order.
    mesh_backlog: RefCell<Vec<VecDeque<MeshMsg>>>,
    mesh_backlog_len: Cell<usize>,
    mesh_backlog_kick: Kick,
    /// Per peer: the backlog pump holds a message it is waiting to send, so
    /// newer messages must queue behind it.
    mesh_pump_busy: RefCell<Vec<bool>>,
    /// Logins to announce to the other cores (for takeovers), coalesced.
    devices_online: RefCell<HashMap<Box<str>, Instant>>,
    /// Closed while a backlog exists: readers wait here (backpressure)
    /// instead of reading more than the other cores can take.
    pub(crate) mesh_gate: Gate,
    /// Raised when the data plane stops: accept loops end, connections
    /// drain.
    pub(crate) stopping: LocalSignal,
    mesh_drop_log: LogLimiter,
    route_log: LogLimiter,
    /// Nesting depth of the current write batch.
    batch_depth: Cell<u32>,
    /// Connections to flush when the batch ends.
    deferred: RefCell<Vec<Rc<dyn DeferredFlush>>>,
    /// Viewers whose tags wait for the next media write (see
    /// [`Core::run_media_writes`]), and the wake-up of that task.
    media_deferred: RefCell<Vec<Rc<dyn DeferredFlush>>>,
    media_kick: Kick,
    /// The devices this core owns.
    pub(crate) registry: RefCell<RegistryShard>,
    /// Logins of this core waiting for another core's registry answer.
    pub(crate) auth_queries: PendingQueries,
    /// Time from the end of a read to the end of `publish`, sampled.
    latency: RefCell<LatencyHistogram>,
    /// The same samples since the core started (for `/metrics`).
    latency_total: RefCell<LatencyHistogram>,
    /// Reads since the last timed one.
    reads_untimed: Cell<u32>,
    /// The MQTT broker's state on this core.
    pub(crate) mqtt: Broker,
    /// Live streams published or played on this core.
    pub(crate) streams: StreamHub,
    /// The last interest mark asked for, and the last one sent to peers.
    interest_wanted: Cell<u64>,
    interest_asked: Cell<u64>,
    /// Per peer: the highest mark it answered.
    interest_synced: RefCell<Vec<u64>>,
    /// Opened when a peer answers a mark.
    interest_gate: Gate,
    /// Where this core posts its figures for `/metrics`.
    pub(crate) board: Arc<FiguresBoard>,
    /// HTTP listeners' per-core state: device mailboxes, polls, counters.
    pub(crate) http: HttpState,
    /// CoAP listeners' counters.
    pub(crate) coap: CoapStats,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("index", &self.index)
            .field("mesh_id", &self.mesh_id)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        index: usize,
        senders: Option<Senders<MeshMsg>>,
        pool_settings: PoolSettings,
        settings: RuntimeSettings,
        board: Arc<FiguresBoard>,
    ) -> Self {
        let pool = SlabPool::new(&pool_settings);
        let mqtt = Broker::new(&settings.mqtt);
        let (mesh_id, peers) = senders
            .as_ref()
            .map_or((0, 1), |s| (s.peer_id(), s.nr_consumers()));
        Self {
            index,
            mesh_id,
            peers,
            pool,
            pool_settings,
            bus: Bus::new(peers),
            stats: CoreStats::default(),
            settings: RefCell::new(settings),
            routes: RefCell::new(Rc::new(RouteTable::empty())),
            conns: RefCell::new(Slab::new()),
            devices: RefCell::new(HashMap::new()),
            senders,
            interest_kick: Kick::default(),
            mesh_backlog: RefCell::new((0..peers).map(|_| VecDeque::new()).collect()),
            mesh_backlog_len: Cell::new(0),
            mesh_backlog_kick: Kick::default(),
            mesh_pump_busy: RefCell::new(vec![false; peers]),
            devices_online: RefCell::new(HashMap::new()),
            mesh_gate: Gate::default(),
            stopping: LocalSignal::default(),
            mesh_drop_log: LogLimiter::new(Duration::from_secs(5)),
            route_log: LogLimiter::new(Duration::from_secs(5)),
            batch_depth: Cell::new(0),
            deferred: RefCell::new(Vec::new()),
            media_deferred: RefCell::new(Vec::new()),
            media_kick: Kick::default(),
            registry: RefCell::new(RegistryShard::default()),
            auth_queries: PendingQueries::default(),
            latency: RefCell::new(LatencyHistogram::default()),
            latency_total: RefCell::new(LatencyHistogram::default()),
            reads_untimed: Cell::new(0),
            mqtt,
            streams: StreamHub::default(),
            interest_wanted: Cell::new(0),
            interest_asked: Cell::new(0),
            interest_synced: RefCell::new(vec![0; peers]),
            interest_gate: Gate::closed(),
            board,
            http: HttpState::default(),
            coap: CoapStats::default(),
        }
    }

    /// Counters and pool figures, with the latency of the current period.
    pub(crate) fn figures(&self) -> CoreFigures {
        let mut figures = self
            .stats
            .figures(u16::try_from(self.index).unwrap_or(u16::MAX), &self.pool);
        figures.latency = self.latency.borrow().figures();
        let (sessions, offline, retained) = self.mqtt.counts();
        figures.mqtt.sessions = sessions;
        figures.mqtt.offline_sessions = offline;
        figures.mqtt.retained = retained;
        figures.streams = self.streams.figures(self);
        figures
    }

    /// [`Self::figures`], ending the latency period: the histogram starts
    /// over.
    pub(crate) fn take_figures(&self) -> CoreFigures {
        let figures = self.figures();
        self.latency.borrow_mut().reset();
        figures
    }

    /// Posts `figures` (and what only `/metrics` shows) on the board.
    pub(crate) fn post_figures(&self, figures: CoreFigures) {
        /// Bounds of the `/metrics` latency histogram, ns.
        const BOUNDS_NS: [u64; 14] = [
            10_000,
            25_000,
            50_000,
            100_000,
            250_000,
            500_000,
            1_000_000,
            2_500_000,
            5_000_000,
            10_000_000,
            25_000_000,
            50_000_000,
            100_000_000,
            1_000_000_000,
        ];
        let total = self.latency_total.borrow();
        let latency = LatencyBuckets {
            buckets: BOUNDS_NS
                .iter()
                .map(|&ns| ns as f64 / 1e9)
                .zip(total.cumulative(&BOUNDS_NS))
                .collect(),
            count: total.count(),
            sum_seconds: total.sum_ns() as f64 / 1e9,
        };
        self.board.post(
            self.index,
            CorePost {
                figures,
                http: self.http.figures(),
                coap: self.coap.figures(),
                webhook: self.stats.webhook.figures(),
                latency,
            },
        );
    }

    /// Called when a read from a device ends: the instant, for one read in
    /// [`LATENCY_SAMPLE_EVERY`] (the others are not timed, to keep the
    /// clock off the per-message path).
    pub(crate) fn read_clock(&self) -> Option<Instant> {
        let n = self.reads_untimed.get() + 1;
        if n >= LATENCY_SAMPLE_EVERY {
            self.reads_untimed.set(0);
            Some(Instant::now())
        } else {
            self.reads_untimed.set(n);
            None
        }
    }

    /// [`Self::publish`] for a message of a read that ended at `read_end`
    /// (when that read is timed).
    pub(crate) fn publish_read(&self, msg: Message, read_end: Option<Instant>) {
        self.publish(msg);
        if let Some(start) = read_end {
            let elapsed = start.elapsed();
            self.latency.borrow_mut().record(elapsed);
            self.latency_total.borrow_mut().record(elapsed);
        }
    }

    /// This core's id in the channel mesh: the registry shard it owns.
    pub(crate) fn mesh_id(&self) -> usize {
        self.mesh_id
    }

    /// Registry shards (one per core).
    pub(crate) fn shards(&self) -> usize {
        self.peers
    }

    pub(crate) fn set_routes(&self, routes: Rc<RouteTable>) {
        *self.routes.borrow_mut() = routes;
    }

    pub(crate) fn routes(&self) -> Rc<RouteTable> {
        Rc::clone(&self.routes.borrow())
    }

    // ----- connection table -------------------------------------------

    pub(crate) fn add_conn(&self, listener: Rc<str>, conn: Rc<dyn Connection>) -> ConnId {
        self.stats.connections.inc();
        self.stats.accepted.inc();
        ConnId(self.conns.borrow_mut().insert(ConnEntry {
            listener,
            device: None,
            since: Instant::now(),
            conn,
        }))
    }

    /// Removes a closed connection, and its device index entry.
    pub(crate) fn remove_conn(&self, id: ConnId) {
        let entry = self.conns.borrow_mut().try_remove(id.0);
        if let Some(entry) = entry {
            self.stats.connections.dec();
            if let Some(device) = entry.device {
                let mut devices = self.devices.borrow_mut();
                if devices.get(&device) == Some(&id) {
                    devices.remove(&device);
                }
            }
        }
    }

    pub(crate) fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Connections of one listener (to drain it when it is removed).
    pub(crate) fn conns_of(&self, listener: &str) -> Vec<Rc<dyn Connection>> {
        self.conns
            .borrow()
            .iter()
            .filter(|(_, e)| &*e.listener == listener)
            .map(|(_, e)| Rc::clone(&e.conn))
            .collect()
    }

    /// Records that connection `id` is device `device`; an older connection
    /// of the same device, on this core or another, is taken over.
    pub(crate) fn device_online(self: &Rc<Self>, id: ConnId, device: Rc<str>) {
        let since = Instant::now();
        if let Some(entry) = self.conns.borrow_mut().get_mut(id.0) {
            entry.device = Some(Rc::clone(&device));
            entry.since = since;
        }
        let previous = self.devices.borrow_mut().insert(Rc::clone(&device), id);
        if let Some(old) = previous.filter(|old| *old != id) {
            self.take_over(old, &device);
        }
        if self.peers > 1 {
            // The interest announcer tells the other cores; a device that
            // logs in again before that is announced once.
            self.devices_online
                .borrow_mut()
                .insert(device.as_ref().into(), since);
            self.interest_kick.kick();
        }
    }

    fn take_over(&self, old: ConnId, device: &str) {
        let conn = self.conns.borrow().get(old.0).map(|e| Rc::clone(&e.conn));
        if let Some(conn) = conn {
            info!(
                device,
                "device connected again; closing its older connection"
            );
            conn.close(CloseReason::TakenOver);
        }
    }

    fn on_device_online_elsewhere(&self, device: &str, since: Instant) {
        let old = self.devices.borrow().get(device).copied();
        if let Some(old) = old {
            let older = self
                .conns
                .borrow()
                .get(old.0)
                .is_some_and(|e| e.since < since);
            if older {
                self.take_over(old, device);
            }
        }
    }

    /// Closes or drains every connection (shutdown).
    pub(crate) fn for_each_conn(&self, mut f: impl FnMut(&Rc<dyn Connection>)) {
        let conns: Vec<Rc<dyn Connection>> = self
            .conns
            .borrow()
            .iter()
            .map(|(_, e)| Rc::clone(&e.conn))
            .collect();
        for c in &conns {
            f(c);
        }
    }

    /// Closes this core's connection of `device`, if it has one; returns
    /// how many it closed.
    pub(crate) fn close_device(&self, device: &str, reason: CloseReason) -> u32 {
        let Some(id) = self.devices.borrow().get(device).copied() else {
            return 0;
        };
        let conn = self.conns.borrow().get(id.0).map(|e| Rc::clone(&e.conn));
        match conn {
            Some(conn) => {
                conn.close(reason);
                1
            }
            None => 0,
        }
    }

    /// Closes the connections of devices that left the registry, here and
    /// (over the mesh) on every other core.
    pub(crate) fn close_removed_devices(&self, devices: Vec<Box<str>>) {
        if devices.is_empty() {
            return;
        }
        let closed: u32 = devices
            .iter()
            .map(|d| self.close_device(d, CloseReason::DeviceRemoved))
            .sum();
        info!(
            devices = devices.len(),
            closed, "devices left the registry; closing their connections"
        );
        let Some(senders) = &self.senders else {
            return;
        };
        for batch in devices.chunks(CLOSE_BATCH) {
            for peer in self.other_peers() {
                let msg = MeshMsg::CloseDevices {
                    devices: batch.to_vec(),
                };
                self.send_to_peer(senders, peer, msg);
            }
        }
    }

    /// Asks core `owner` whether `digest` is device `device`'s; the answer
    /// comes back as [`MeshMsg::RegistryAnswer`] `query`.
    pub(crate) fn send_registry_query(
        &self,
        owner: usize,
        query: u64,
        device: &str,
        digest: SecretDigest,
    ) {
        if let Some(senders) = &self.senders {
            let msg = MeshMsg::RegistryQuery {
                query,
                device: device.into(),
                digest,
            };
            self.send_to_peer(senders, owner, msg);
        }
    }

    // ----- write batches ----------------------------------------------

    /// Starts a batch: deliveries queue their bytes, and each connection
    /// is written once, with one vectored write, when the batch ends.
    pub(crate) fn begin_batch(&self) {
        self.batch_depth.set(self.batch_depth.get() + 1);
    }

    /// Ends a batch; the outermost end flushes the deferred connections.
    pub(crate) fn end_batch(&self) {
        let depth = self.batch_depth.get().saturating_sub(1);
        self.batch_depth.set(depth);
        if depth > 0 {
            return;
        }
        let mut list = std::mem::take(&mut *self.deferred.borrow_mut());
        for conn in list.drain(..) {
            conn.flush_deferred();
        }
        let mut deferred = self.deferred.borrow_mut();
        if deferred.is_empty() {
            *deferred = list;
        }
    }

    pub(crate) fn in_batch(&self) -> bool {
        self.batch_depth.get() > 0
    }

    pub(crate) fn defer_flush(&self, conn: Rc<dyn DeferredFlush>) {
        self.deferred.borrow_mut().push(conn);
    }

    /// Flushes `conn` at the next media write (`write_interval` after the
    /// first tag of the round was queued).
    pub(crate) fn defer_media_flush(&self, conn: Rc<dyn DeferredFlush>) {
        if self.stopping.is_raised() {
            // The media round has ended with the core: write it now.
            conn.flush_deferred();
            return;
        }
        let mut list = self.media_deferred.borrow_mut();
        if list.is_empty() {
            self.media_kick.kick();
        }
        list.push(conn);
    }

    /// Writes the viewers' gathered tags once per `write_interval`: every
    /// viewer with tags queued since the last round gets one vectored
    /// write. Runs until the core stops.
    pub(crate) async fn run_media_writes(self: Rc<Self>) {
        loop {
            let kicked = async {
                self.media_kick.kicked().await;
                true
            };
            let stop = async {
                self.stopping.wait().await;
                false
            };
            if !kicked.or(stop).await {
                break;
            }
            if self.media_deferred.borrow().is_empty() {
                continue;
            }
            let interval = self.settings.borrow().streams.write_interval;
            glommio::timer::sleep(interval).await;
            let mut list = std::mem::take(&mut *self.media_deferred.borrow_mut());
            for conn in list.drain(..) {
                conn.flush_deferred();
            }
            let mut deferred = self.media_deferred.borrow_mut();
            if deferred.is_empty() {
                *deferred = list;
            }
        }
        // What is left goes out before the connections drain.
        let list = std::mem::take(&mut *self.media_deferred.borrow_mut());
        for conn in list {
            conn.flush_deferred();
        }
    }

    // ----- bus ----------------------------------------------------------

    pub(crate) fn subscribe(&self, filter: &str, subscriber: Subscriber) {
        self.bus.subscribe(filter, subscriber);
        if self.bus.has_interest_changes() {
            self.interest_kick.kick();
        }
    }

    pub(crate) fn unsubscribe(&self, filter: &str, subscriber: &Subscriber) {
        self.bus.unsubscribe(filter, subscriber);
        if self.bus.has_interest_changes() {
            self.interest_kick.kick();
        }
    }

    /// Joins shared subscription group `group` of `filter`.
    pub(crate) fn subscribe_shared(&self, group: &str, filter: &str, subscriber: Subscriber) {
        self.bus.subscribe_shared(group, filter, subscriber);
        if self.bus.has_interest_changes() {
            self.interest_kick.kick();
        }
    }

    /// Leaves shared subscription group `group` of `filter`.
    pub(crate) fn unsubscribe_shared(&self, group: &str, filter: &str, subscriber: &Subscriber) {
        self.bus.unsubscribe_shared(group, filter, subscriber);
        if self.bus.has_interest_changes() {
            self.interest_kick.kick();
        }
    }

    /// Sends what `make` gives to every other core (nothing when it gives
    /// nothing: a payload copy the pool could not make is counted).
    pub(crate) fn broadcast(&self, make: impl Fn() -> Option<MeshMsg>) {
        let Some(senders) = &self.senders else {
            return;
        };
        for peer in self.other_peers() {
            match make() {
                Some(msg) => self.send_to_peer(senders, peer, msg),
                None => self.stats.mesh_drops.inc(),
            }
        }
    }

    /// Publishes a message that entered on this core: routes first, then
    /// local subscribers and interested cores.
    pub(crate) fn publish(&self, msg: Message) {
        self.stats.messages_in.inc();
        let routes = self.routes();
        if routes.is_empty() {
            self.fan_out(&msg);
            return;
        }
        let max_hops = self.settings.borrow().max_route_hops;
        let mut work = vec![msg];
        while let Some(m) = work.pop() {
            let outcome = routes.apply(&m, max_hops);
            for fwd in outcome.forwards {
                if fwd.enqueue(&m) {
                    self.stats.forward_sent.inc();
                } else {
                    self.stats.forward_drops.inc();
                }
            }
            for r in outcome.republish {
                match r {
                    Ok(topic) => {
                        self.stats.route_republished.inc();
                        work.push(Message {
                            topic,
                            payload: m.payload.clone(),
                            qos: m.qos,
                            retain: m.retain,
                            origin: m.origin.clone(),
                            hops: m.hops + 1,
                            props: m.props.clone(),
                        });
                    }
                    Err(why) => {
                        self.stats.route_dropped.inc();
                        if let Some(more) = self.route_log.allow() {
                            warn!(topic = %m.topic, suppressed = more, "route did not republish: {why}");
                        }
                    }
                }
            }
            if outcome.deliver {
                self.fan_out(&m);
            } else {
                self.stats.route_dropped.inc();
            }
        }
    }

    /// Delivers to local subscribers, and crosses once to each core that
    /// wants the topic.
    fn fan_out(&self, m: &Message) {
        self.bus.for_each_local(&m.topic, |s| s.deliver(m));
        self.bus.shared_targets(&m.topic, |target| match target {
            SharedTarget::Local(s) => s.deliver(m),
            SharedTarget::Peer { peer, group } => {
                let Some(senders) = &self.senders else {
                    return;
                };
                match self.pool.detach_copy(m.payload.as_slice()) {
                    Some(payload) => {
                        let msg = MeshMsg::SharedPublish {
                            group: group.as_ref().into(),
                            msg: CrossMessage::of(m, payload),
                        };
                        self.send_to_peer(senders, peer, msg);
                    }
                    None => self.stats.mesh_drops.inc(),
                }
            }
        });
        let Some(senders) = &self.senders else {
            return;
        };
        for peer in self.other_peers() {
            if !self.bus.peer_wants(peer, &m.topic) {
                continue;
            }
            let Some(payload) = self.pool.detach_copy(m.payload.as_slice()) else {
                self.stats.mesh_drops.inc();
                continue;
            };
            let cross = CrossMessage::of(m, payload);
            self.send_to_peer(senders, peer, MeshMsg::Publish(cross));
        }
    }

    /// Sends at once when the channel has room and nothing waits before
    /// it; otherwise the message joins the peer's backlog (bounded: beyond
    /// the bound it is dropped and counted) and readers on this core pause
    /// until the backlog is gone.
    /// Sends `msg` to core `peer` (see [`Self::broadcast`] for the
    /// backlog and its bound).
    pub(crate) fn send_mesh(&self, peer: usize, msg: MeshMsg) {
        if let Some(senders) = &self.senders {
            self.send_to_peer(senders, peer, msg);
        }
    }

    fn send_to_peer(&self, senders: &Senders<MeshMsg>, peer: usize, msg: MeshMsg) {
        let mut backlog = self.mesh_backlog.borrow_mut();
        let Some(queue) = backlog.get_mut(peer) else {
            return;
        };
        let pump_busy = self
            .mesh_pump_busy
            .borrow()
            .get(peer)
            .copied()
            .unwrap_or(false);
        let msg = if queue.is_empty() && !pump_busy {
            match senders.try_send_to(peer, msg) {
                Ok(()) => {
                    self.stats.mesh_sent.inc();
                    return;
                }
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) => msg,
                Err(_) => {
                    // The peer has stopped.
                    self.stats.mesh_drops.inc();
                    return;
                }
            }
        } else {
            msg
        };
        let limit = self.settings.borrow().mesh_channel_capacity as usize * 4;
        if self.mesh_backlog_len.get() >= limit {
            self.stats.mesh_drops.inc();
            if let Some(more) = self.mesh_drop_log.allow() {
                warn!(
                    peer,
                    suppressed = more,
                    "channel to another core and its backlog are full; message dropped"
                );
            }
            return;
        }
        queue.push_back(msg);
        self.mesh_backlog_len.set(self.mesh_backlog_len.get() + 1);
        self.mesh_gate.close();
        self.mesh_backlog_kick.kick();
    }

    /// Moves backlogged messages into the mesh as the peers make room,
    /// then opens the gate for readers.
    pub(crate) async fn run_mesh_backlog_pump(self: Rc<Self>) {
        let Some(senders) = &self.senders else {
            return;
        };
        loop {
            self.mesh_backlog_kick.kicked().await;
            for peer in self.other_peers() {
                loop {
                    let next = self
                        .mesh_backlog
                        .borrow_mut()
                        .get_mut(peer)
                        .and_then(VecDeque::pop_front);
                    let Some(msg) = next else {
                        break;
                    };
                    self.mesh_backlog_len
                        .set(self.mesh_backlog_len.get().saturating_sub(1));
                    self.set_pump_busy(peer, true);
                    let sent = senders.send_to(peer, msg).await;
                    self.set_pump_busy(peer, false);
                    if sent.is_ok() {
                        self.stats.mesh_sent.inc();
                    } else {
                        self.stats.mesh_drops.inc();
                    }
                }
            }
            if self.mesh_backlog_len.get() == 0 {
                self.mesh_gate.open();
            }
        }
    }

    fn set_pump_busy(&self, peer: usize, busy: bool) {
        if let Some(b) = self.mesh_pump_busy.borrow_mut().get_mut(peer) {
            *b = busy;
        }
    }

    fn other_peers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.peers).filter(move |p| *p != self.mesh_id)
    }

    /// Handles what another core sent.
    pub(crate) fn on_mesh(&self, peer: usize, msg: MeshMsg) {
        match msg {
            MeshMsg::Publish(cross) => {
                self.stats.mesh_received.inc();
                let Some(m) = cross.adopt_into(&self.pool) else {
                    self.stats.mesh_drops.inc();
                    return;
                };
                self.bus.for_each_local(&m.topic, |s| s.deliver(&m));
            }
            MeshMsg::SharedPublish { group, msg } => {
                self.stats.mesh_received.inc();
                let Some(m) = msg.adopt_into(&self.pool) else {
                    self.stats.mesh_drops.inc();
                    return;
                };
                match self.bus.pick_shared_member(&group) {
                    Some(s) => s.deliver(&m),
                    // The group's last member here left meanwhile.
                    None => self.stats.outbound_drops.inc(),
                }
            }
            MeshMsg::Retain(msg) => {
                let payload = Payload::heap(msg.payload.as_slice());
                let m = msg.into_message(payload);
                self.mqtt.store_retained(self, &m);
            }
            MeshMsg::SessionClaim {
                claim,
                client_id,
                clean_start,
            } => {
                let session = self.mqtt.on_claim(self, &client_id, clean_start);
                if let Some(senders) = &self.senders {
                    self.send_to_peer(senders, peer, MeshMsg::SessionHandover { claim, session });
                }
            }
            MeshMsg::SessionHandover { claim, session } => {
                self.mqtt.on_handover(claim, session);
            }
            MeshMsg::InterestSync { epoch } => {
                if let Some(senders) = &self.senders {
                    self.send_to_peer(senders, peer, MeshMsg::InterestSynced { epoch });
                }
            }
            MeshMsg::InterestSynced { epoch } => self.on_interest_synced(peer, epoch),
            MeshMsg::Interest { filter, present } => {
                self.bus.apply_peer_interest(peer, filter, present);
            }
            MeshMsg::DeviceOnline { device, since } => {
                self.on_device_online_elsewhere(&device, since);
            }
            MeshMsg::RegistryQuery {
                query,
                device,
                digest,
            } => {
                let (verdict, product) =
                    self.registry.borrow().verify_with_product(&device, &digest);
                if let Some(senders) = &self.senders {
                    let answer = MeshMsg::RegistryAnswer {
                        query,
                        verdict,
                        product,
                    };
                    self.send_to_peer(senders, peer, answer);
                }
            }
            MeshMsg::RegistryAnswer {
                query,
                verdict,
                product,
            } => {
                self.auth_queries.resolve(query, verdict, product);
            }
            MeshMsg::CloseDevices { devices } => {
                for device in &devices {
                    self.close_device(device, CloseReason::DeviceRemoved);
                }
            }
            msg @ (MeshMsg::StreamLive { .. }
            | MeshMsg::StreamViewers { .. }
            | MeshMsg::StreamTag { .. }
            | MeshMsg::StreamClaim { .. }
            | MeshMsg::StreamClaimed { .. }
            | MeshMsg::StreamRelease { .. }) => self.streams.on_mesh(self, peer, msg),
            msg @ (MeshMsg::MailboxPoll { .. }
            | MeshMsg::MailboxBatch { .. }
            | MeshMsg::MailboxCancel { .. }) => crate::http::on_mesh(self, peer, msg),
        }
    }

    /// Announces this core's interest changes, and the devices that logged
    /// in here, to the other cores, for as long as the core runs.
    /// Announcements wait for room in the channel: they must not be lost.
    pub(crate) async fn run_interest_announcer(self: Rc<Self>) {
        let Some(senders) = &self.senders else {
            return;
        };
        loop {
            self.interest_kick.kicked().await;
            let online: Vec<(Box<str>, Instant)> =
                self.devices_online.borrow_mut().drain().collect();
            for (device, since) in online {
                for peer in self.other_peers() {
                    let msg = MeshMsg::DeviceOnline {
                        device: device.clone(),
                        since,
                    };
                    if senders.send_to(peer, msg).await.is_err() {
                        // The peer stopped.
                    }
                }
            }
            let wanted = self.interest_wanted.get();
            for (filter, present) in self.bus.take_interest_changes() {
                for peer in self.other_peers() {
                    let msg = MeshMsg::Interest {
                        filter: filter.clone(),
                        present,
                    };
                    if senders.send_to(peer, msg).await.is_err() {
                        // The peer stopped; nothing to keep in sync.
                    }
                }
            }
            if wanted > self.interest_asked.get() {
                // Behind the announcements on the same channel: a peer's
                // answer means it applied them.
                self.interest_asked.set(wanted);
                for peer in self.other_peers() {
                    let msg = MeshMsg::InterestSync { epoch: wanted };
                    if senders.send_to(peer, msg).await.is_err() {
                        self.on_interest_synced(peer, u64::MAX);
                    }
                }
            }
        }
    }

    /// A mark that, once every other core has answered it, guarantees that
    /// they know this core's subscriptions as they are now.
    pub(crate) fn interest_mark(&self) -> u64 {
        if self.peers <= 1 {
            return 0;
        }
        let mark = self.interest_wanted.get() + 1;
        self.interest_wanted.set(mark);
        self.interest_kick.kick();
        mark
    }

    /// Waits (at most `timeout`) until every other core answered `mark`;
    /// false on timeout.
    pub(crate) async fn interest_synced(&self, mark: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .interest_synced
                .borrow()
                .iter()
                .enumerate()
                .all(|(peer, synced)| peer == self.mesh_id || *synced >= mark);
            if done {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.interest_gate.close();
            let wait = async {
                self.interest_gate.pass().await;
            };
            let timer = async {
                glommio::timer::sleep(left).await;
            };
            wait.or(timer).await;
        }
    }

    fn on_interest_synced(&self, peer: usize, epoch: u64) {
        if let Some(s) = self.interest_synced.borrow_mut().get_mut(peer) {
            *s = (*s).max(epoch);
        }
        self.interest_gate.open();
    }
}
