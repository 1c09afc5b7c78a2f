//! The main thread's side of the running data plane: the one driver of
//! the two-phase apply on every core.
//!
//! The start config, a SIGHUP reload and a push from the control plane all
//! go through [`Supervisor::apply_plan`]: every core prepares (listeners,
//! routes, and the registry changes staged for that apply); if all succeed
//! all commit, otherwise all abort. The control client (its own thread)
//! asks for applies, device staging and kicks with [`Request`]s; the
//! supervisor serves them one at a time, between its signal and watchdog
//! checks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shoal_protocols::config::DataPlaneConfig;
use tracing::{error, info, warn};

use crate::apply::ApplyPlan;
use crate::control::{ApplySummary, PlaneDriver};
use crate::registry::{owner_shard, DeviceOp, ProductNames};

/// How long a core may take to answer a prepare.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the cores may take to answer a kick.
const KICK_TIMEOUT: Duration = Duration::from_secs(10);

/// Control messages queued per core before the sender waits. With device
/// batches of 8192 this bounds what a snapshot in transit holds beside
/// the registry.
pub(crate) const CORE_CONTROL_QUEUE: usize = 8;

/// Requests queued from the control client before it waits.
pub(crate) const REQUEST_QUEUE: usize = 4;

/// The registry side of an apply: which staged changes to commit, checked
/// against which products.
#[derive(Debug, Clone)]
pub(crate) struct RegistryCommit {
    pub(crate) ticket: u64,
    pub(crate) products: ProductNames,
}

/// What the main thread asks of a core.
#[derive(Debug)]
pub(crate) enum CoreControl {
    /// Phase one of an apply.
    Prepare {
        plan: Arc<ApplyPlan>,
        registry: Option<RegistryCommit>,
    },
    /// Phase two: every core prepared.
    Commit,
    /// Phase two: some core refused.
    Abort,
    /// Start staging the registry changes of apply `ticket` (`replace`: a
    /// whole new registry).
    BeginDevices { ticket: u64, replace: bool },
    /// Registry changes of apply `ticket` for devices this core owns.
    StageDevices { ticket: u64, ops: Vec<DeviceOp> },
    /// Drop what apply `ticket` staged.
    DiscardDevices { ticket: u64 },
    /// Close the connections of `device`.
    Kick { request: u64, device: Arc<str> },
    /// End the publisher of live stream `stream` if it publishes here.
    KickStream { request: u64, stream: Arc<str> },
}

/// What a core tells the main thread.
#[derive(Debug)]
pub(crate) enum CoreReport {
    /// The core runs and joined the mesh as `mesh_id` (its registry shard).
    Joined { core: usize, mesh_id: usize },
    /// The core could not start.
    Failed { error: String },
    /// The answer to a prepare of plan `version`: the registry devices the
    /// core will hold after the commit, or why it cannot apply it.
    Prepared {
        version: u64,
        result: Result<usize, String>,
    },
    /// Plan `version` is committed on the core: it serves it.
    Committed { version: u64 },
    /// The answer to a kick: device connections closed, or (for a
    /// stream kick) publishing connections ended.
    Kicked { request: u64, connections: u32 },
}

/// What the control client asks of the supervisor.
#[derive(Debug)]
pub(crate) enum Request {
    BeginDevices {
        ticket: u64,
        replace: bool,
    },
    StageDevices {
        ticket: u64,
        ops: Vec<DeviceOp>,
    },
    DiscardDevices {
        ticket: u64,
    },
    Apply {
        config: Box<DataPlaneConfig>,
        registry: RegistryCommit,
        reply: mpsc::SyncSender<Result<ApplySummary, String>>,
    },
    Kick {
        device: String,
        reply: mpsc::SyncSender<u32>,
    },
    KickStream {
        stream: String,
        reply: mpsc::SyncSender<u32>,
    },
}

/// The main thread's handles on the cores.
pub(crate) struct Supervisor {
    pub(crate) config_path: Option<PathBuf>,
    /// The plan every core runs.
    pub(crate) plan: Arc<ApplyPlan>,
    /// Listeners and routes come from the control plane (or its cache), not
    /// from the config file.
    from_control: bool,
    cores: Vec<mpsc::SyncSender<CoreControl>>,
    /// Core index of each registry shard (mesh id).
    shard_core: Vec<usize>,
    reports: mpsc::Receiver<CoreReport>,
    pub(crate) stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    heartbeats: Arc<Vec<AtomicU64>>,
    next_kick: u64,
    /// The process's RSS goes here once a second (for `/metrics`).
    board: Arc<crate::board::FiguresBoard>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("version", &self.plan.version)
            .field("cores", &self.cores.len())
            .finish_non_exhaustive()
    }
}

/// The supervisor's parts, gathered by `main` while the cores start.
#[derive(Debug)]
pub(crate) struct SupervisorParts {
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) plan: Arc<ApplyPlan>,
    pub(crate) cores: Vec<mpsc::SyncSender<CoreControl>>,
    pub(crate) reports: mpsc::Receiver<CoreReport>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) reload: Arc<AtomicBool>,
    pub(crate) heartbeats: Arc<Vec<AtomicU64>>,
    pub(crate) board: Arc<crate::board::FiguresBoard>,
}

impl Supervisor {
    /// Waits until every core joined the mesh (or one failed to start).
    pub(crate) fn start(parts: SupervisorParts) -> Result<Self, String> {
        let cores = parts.cores.len();
        let mut shard_core = vec![usize::MAX; cores];
        let deadline = Instant::now() + PREPARE_TIMEOUT;
        let mut joined = 0;
        while joined < cores {
            let left = deadline.saturating_duration_since(Instant::now());
            match parts.reports.recv_timeout(left) {
                Ok(CoreReport::Joined { core, mesh_id }) => {
                    if let Some(slot) = shard_core.get_mut(mesh_id) {
                        *slot = core;
                        joined += 1;
                    }
                }
                Ok(CoreReport::Failed { error, .. }) => return Err(error),
                Ok(_) => {}
                Err(_) => return Err("a core did not start within 30s".to_owned()),
            }
        }
        Ok(Self {
            config_path: parts.config_path,
            plan: parts.plan,
            from_control: false,
            cores: parts.cores,
            shard_core,
            reports: parts.reports,
            stop: parts.stop,
            reload: parts.reload,
            heartbeats: parts.heartbeats,
            board: parts.board,
            next_kick: 0,
        })
    }

    fn broadcast(&self, make: impl Fn() -> CoreControl) {
        for core in &self.cores {
            // A core that ended (stopping) no longer listens.
            let _ = core.send(make());
        }
    }

    /// Applies `plan` on every core in two phases; on success it is the
    /// running plan. Returns the registry devices after the commit.
    pub(crate) fn apply_plan(
        &mut self,
        plan: ApplyPlan,
        registry: Option<RegistryCommit>,
    ) -> Result<usize, String> {
        let plan = Arc::new(plan);
        self.broadcast(|| CoreControl::Prepare {
            plan: Arc::clone(&plan),
            registry: registry.clone(),
        });
        match self.collect_prepared(plan.version) {
            Ok(devices) => {
                self.broadcast(|| CoreControl::Commit);
                self.collect_committed(plan.version);
                self.plan = plan;
                Ok(devices)
            }
            Err(e) => {
                self.broadcast(|| CoreControl::Abort);
                Err(e)
            }
        }
    }

    /// Waits for one answer about plan `version` from each core (late
    /// answers about an earlier version are skipped); the first error
    /// wins.
    fn collect_prepared(&self, version: u64) -> Result<usize, String> {
        let deadline = Instant::now() + PREPARE_TIMEOUT;
        let mut answered = 0;
        let mut devices = 0;
        let mut first_error = None;
        while answered < self.cores.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(CoreReport::Prepared {
                    version: v, result, ..
                }) if v == version => {
                    answered += 1;
                    match result {
                        Ok(n) => devices += n,
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Ok(CoreReport::Failed { error, .. }) => {
                    first_error.get_or_insert(error);
                    answered += 1;
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(first_error.unwrap_or_else(|| {
                        format!(
                            "a core did not answer within {}s",
                            PREPARE_TIMEOUT.as_secs()
                        )
                    }))
                }
            }
        }
        first_error.map_or(Ok(devices), Err)
    }

    /// Waits until every core serves plan `version`, so whoever asked for
    /// it is answered only once it is in effect everywhere.
    fn collect_committed(&self, version: u64) {
        let deadline = Instant::now() + PREPARE_TIMEOUT;
        let mut committed = 0;
        while committed < self.cores.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(CoreReport::Committed { version: v }) if v == version => committed += 1,
                Ok(_) => {}
                Err(_) => {
                    error!(
                        version,
                        committed,
                        "not every core confirmed the commit within {}s",
                        PREPARE_TIMEOUT.as_secs()
                    );
                    return;
                }
            }
        }
    }

    /// Applies listeners and routes from the control plane (or its cache)
    /// with this process's own runtime and pool settings.
    pub(crate) fn apply_config(
        &mut self,
        mut config: DataPlaneConfig,
        registry: Option<RegistryCommit>,
    ) -> Result<ApplySummary, String> {
        if self.stop.load(Ordering::Relaxed) {
            return Err("the data plane is stopping".to_owned());
        }
        config.runtime = self.plan.config.runtime.clone();
        config.pools = self.plan.config.pools.clone();
        let plan = self.plan.next(config)?;
        let (listeners, routes) = (plan.config.listeners.len(), plan.config.routes.len());
        let devices = self.apply_plan(plan, registry)?;
        self.from_control = true;
        Ok(ApplySummary {
            listeners,
            routes,
            devices: devices as u64,
        })
    }

    /// Marks the running listeners and routes as the control plane's (the
    /// start config came from its cache).
    pub(crate) fn set_from_control(&mut self) {
        self.from_control = true;
    }

    fn stage(&self, ticket: u64, ops: Vec<DeviceOp>) {
        let shards = self.cores.len();
        if shards == 1 {
            if let Some(core) = self.cores.first() {
                let _ = core.send(CoreControl::StageDevices { ticket, ops });
            }
            return;
        }
        let mut per_core: Vec<Vec<DeviceOp>> = vec![Vec::new(); shards];
        for op in ops {
            let core = self
                .shard_core
                .get(owner_shard(op.id(), shards))
                .copied()
                .unwrap_or(0);
            if let Some(list) = per_core.get_mut(core) {
                list.push(op);
            }
        }
        for (core, ops) in self.cores.iter().zip(per_core) {
            if !ops.is_empty() {
                let _ = core.send(CoreControl::StageDevices { ticket, ops });
            }
        }
    }

    /// Closes `device`'s connections on every core; returns how many.
    fn kick(&mut self, device: &str) -> u32 {
        let device: Arc<str> = device.into();
        self.kick_cores(|request| CoreControl::Kick {
            request,
            device: Arc::clone(&device),
        })
    }

    /// Ends the publisher of `stream` on whichever core it publishes to;
    /// returns how many publishers ended (0 or 1).
    fn kick_stream(&mut self, stream: &str) -> u32 {
        let stream: Arc<str> = stream.into();
        self.kick_cores(|request| CoreControl::KickStream {
            request,
            stream: Arc::clone(&stream),
        })
    }

    /// Sends every core a kick made by `make` with a new request number and
    /// sums their answers.
    fn kick_cores(&mut self, make: impl Fn(u64) -> CoreControl) -> u32 {
        self.next_kick += 1;
        let request = self.next_kick;
        self.broadcast(|| make(request));
        let deadline = Instant::now() + KICK_TIMEOUT;
        let mut answered = 0;
        let mut closed = 0;
        while answered < self.cores.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(CoreReport::Kicked {
                    request: r,
                    connections,
                    ..
                }) if r == request => {
                    answered += 1;
                    closed += connections;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        closed
    }

    fn serve(&mut self, request: Request) {
        if self.stop.load(Ordering::Relaxed) {
            // The cores are draining and no longer take control messages.
            match request {
                Request::Apply { reply, .. } => {
                    let _ = reply.send(Err("the data plane is stopping".to_owned()));
                }
                Request::Kick { reply, .. } | Request::KickStream { reply, .. } => {
                    let _ = reply.send(0);
                }
                _ => {}
            }
            return;
        }
        match request {
            Request::BeginDevices { ticket, replace } => {
                self.broadcast(|| CoreControl::BeginDevices { ticket, replace });
            }
            Request::StageDevices { ticket, ops } => self.stage(ticket, ops),
            Request::DiscardDevices { ticket } => {
                self.broadcast(|| CoreControl::DiscardDevices { ticket });
            }
            Request::Apply {
                config,
                registry,
                reply,
            } => {
                let result = self.apply_config(*config, Some(registry));
                let _ = reply.send(result);
            }
            Request::Kick { device, reply } => {
                let closed = self.kick(&device);
                let _ = reply.send(closed);
            }
            Request::KickStream { stream, reply } => {
                let ended = self.kick_stream(&stream);
                let _ = reply.send(ended);
            }
        }
    }

    /// Runs until the cores end: serves the control client's requests,
    /// applies reloads (SIGHUP) and, under systemd's watchdog, pings it
    /// only while every core's heartbeat moves, so a stuck executor gets
    /// the service restarted.
    pub(crate) fn run(
        &mut self,
        threads: &[std::thread::JoinHandle<()>],
        requests: &mpsc::Receiver<Request>,
    ) {
        let watchdog = sd_notify::watchdog_enabled();
        let period = watchdog.map_or(Duration::from_millis(100), |w| {
            (w / 2).clamp(Duration::from_millis(20), Duration::from_millis(100))
        });
        let mut last: Vec<u64> = self.heartbeat_values();
        let mut last_ping = Instant::now();
        let mut stopping_told = false;
        let mut last_rss: Option<Instant> = None;
        while !threads.iter().all(|t| t.is_finished()) {
            if last_rss.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_rss = Some(Instant::now());
                if let Some(rss) = crate::control::rss_bytes() {
                    self.board.set_rss_bytes(rss);
                }
            }
            match requests.recv_timeout(period) {
                Ok(request) => self.serve(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(period),
            }
            if self.stop.load(Ordering::Relaxed) {
                self.board.set_ready(false);
                if !stopping_told {
                    stopping_told = true;
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                }
            } else if self.reload.swap(false, Ordering::Relaxed) {
                self.apply_reload();
            }
            if let Some(w) = watchdog {
                if last_ping.elapsed() >= w / 2 {
                    let now = self.heartbeat_values();
                    if now.iter().zip(&last).all(|(n, l)| n != l) {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    last = now;
                    last_ping = Instant::now();
                }
            }
        }
    }

    fn heartbeat_values(&self) -> Vec<u64> {
        self.heartbeats
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect()
    }

    /// Reads the config file again and applies it on every core in two
    /// phases; a config that is invalid, or that any core cannot prepare,
    /// is refused and the running one stays. When the control plane gives
    /// the listeners and routes, only the file's runtime settings are
    /// taken from it.
    fn apply_reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP: running the embedded default config, nothing to reload (start with --config FILE)");
            return;
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let next = crate::load_config(Some(&path)).and_then(|loaded| {
            let mut config = loaded.config;
            if self.from_control {
                config.listeners = self.plan.config.listeners.clone();
                config.routes = self.plan.config.routes.clone();
            }
            self.plan.next(config)
        });
        let result = next.and_then(|plan| {
            let version = plan.version;
            self.apply_plan(plan, None)
                .map(|_| version)
                .map_err(|e| format!("config {}: {e}", path.display()))
        });
        match result {
            Ok(version) => {
                info!(version, config = %path.display(), "config reloaded");
            }
            Err(e) => error!(
                running_version = self.plan.version,
                "config reload refused, the running config stays: {e}"
            ),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

impl PlaneDriver for Supervisor {
    fn begin_devices(&mut self, ticket: u64, replace: bool) -> Result<(), String> {
        self.broadcast(|| CoreControl::BeginDevices { ticket, replace });
        Ok(())
    }

    fn stage_devices(&mut self, ticket: u64, ops: Vec<DeviceOp>) -> Result<(), String> {
        self.stage(ticket, ops);
        Ok(())
    }

    fn discard_devices(&mut self, ticket: u64) {
        self.broadcast(|| CoreControl::DiscardDevices { ticket });
    }

    fn apply(
        &mut self,
        config: DataPlaneConfig,
        registry: RegistryCommit,
    ) -> Result<ApplySummary, String> {
        self.apply_config(config, Some(registry))
    }

    fn kick(&mut self, device: &str) -> Result<u32, String> {
        Ok(Self::kick(self, device))
    }

    fn kick_stream(&mut self, stream: &str) -> Result<u32, String> {
        Ok(Self::kick_stream(self, stream))
    }
}

/// The control client's handle on the supervisor (another thread).
#[derive(Debug)]
pub(crate) struct SupervisorLink {
    requests: mpsc::SyncSender<Request>,
}

impl SupervisorLink {
    pub(crate) fn new(requests: mpsc::SyncSender<Request>) -> Self {
        Self { requests }
    }

    fn send(&self, request: Request) -> Result<(), String> {
        self.requests
            .send(request)
            .map_err(|_| "the data plane is stopping".to_owned())
    }
}

impl PlaneDriver for SupervisorLink {
    fn begin_devices(&mut self, ticket: u64, replace: bool) -> Result<(), String> {
        self.send(Request::BeginDevices { ticket, replace })
    }

    fn stage_devices(&mut self, ticket: u64, ops: Vec<DeviceOp>) -> Result<(), String> {
        self.send(Request::StageDevices { ticket, ops })
    }

    fn discard_devices(&mut self, ticket: u64) {
        let _ = self.send(Request::DiscardDevices { ticket });
    }

    fn apply(
        &mut self,
        config: DataPlaneConfig,
        registry: RegistryCommit,
    ) -> Result<ApplySummary, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Apply {
            config: Box::new(config),
            registry,
            reply,
        })?;
        answer
            .recv()
            .map_err(|_| "the data plane is stopping".to_owned())?
    }

    fn kick(&mut self, device: &str) -> Result<u32, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Kick {
            device: device.to_owned(),
            reply,
        })?;
        answer
            .recv()
            .map_err(|_| "the data plane is stopping".to_owned())
    }

    fn kick_stream(&mut self, stream: &str) -> Result<u32, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::KickStream {
            stream: stream.to_owned(),
            reply,
        })?;
        answer
            .recv()
            .map_err(|_| "the data plane is stopping".to_owned())
    }
}
