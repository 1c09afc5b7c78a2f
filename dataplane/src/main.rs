//! `shoal-dataplane`: one pinned glommio executor per core, shared-nothing.
//!
//! Invariants (see ARCHITECTURE.md): per-core state is `!Send` and owned by
//! its executor; buffers come from the core's bounded [`pool::SlabPool`];
//! every queue is bounded and counted; cores talk only over the channel
//! mesh; nothing blocks an executor.
//!
//! The main loop of a core:
//!
//! ```text
//! join mesh ─▶ prepare(config) ─▶ commit ─▶ serve: accept / read frames ─▶ Core::publish
//!                                                 ├─ routes (republish, forward, drop)
//!                                                 ├─ local subscribers (Bus)
//!                                                 └─ other cores that want the topic (mesh)
//! SIGTERM ─▶ stop accepting ─▶ drain connections (deadline) ─▶ exit 0
//! ```
//!
//! The threads around the cores:
//!
//! ```text
//! shoal-control ── snapshot/delta/kick requests ──▶ main (Supervisor) ── prepare/commit/abort,
//!   ▲    │                                            ▲  start state,   registry staging, kicks
//!   │    └── Ack / Nack / Kicked / Figures ──▶ CP     │  SIGHUP                  │
//!   │                                                 └── answers ───────────────┤
//!   └──────────── figures every second (bounded, try_send) ◀─────────── shoal-core-{i}
//! ```

mod apply;
mod auth;
mod board;
mod bus;
mod coap;
mod control;
mod core;
mod core_task;
mod forward;
mod http;
mod latency;
mod listener;
mod message;
mod mqtt;
mod outq;
mod pool;
mod registry;
mod routes;
mod signal;
mod stats;
mod stream;
mod supervisor;
mod tcp;
mod udp;
mod uring;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use tracing::{error, info, warn};

use crate::apply::ApplyPlan;
use crate::control::{Cache, ClientStart, ControlClient, DesiredState};
use crate::core_task::CoreLink;
use crate::message::MeshMsg;
use crate::supervisor::{
    CoreControl, CoreReport, RegistryCommit, Supervisor, SupervisorLink, SupervisorParts,
};

/// The registry staging ticket of the cached state loaded at start (the
/// control client's tickets come after it).
const CACHE_TICKET: u64 = 1;

/// Shoal's data plane.
#[derive(Debug, Parser)]
#[command(name = "shoal-dataplane", version, about)]
struct Cli {
    /// Cores to run on (one pinned executor each). Default: every CPU this
    /// process may use.
    #[arg(long)]
    cores: Option<usize>,
    /// TOML config file. Without it the embedded default config runs
    /// (loopback only: raw TCP on 127.0.0.1:7000, raw UDP on 127.0.0.1:7001).
    /// SIGHUP reads it again and applies it on every core, or refuses it
    /// (and keeps the running config) when it is invalid. Its runtime and
    /// pool settings always apply; its listeners and routes apply until the
    /// control plane (or the cached state) gives others.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The control plane's `dataplane.sock`. When given, the data plane
    /// dials it (again and again, with backoff, while it is unreachable)
    /// and applies the desired state it pushes.
    #[arg(long, env = "SHOAL_CONTROL_SOCKET")]
    control: Option<PathBuf>,
    /// Directory where the last applied desired state is cached (created
    /// if missing). At start a cached state is applied instead of the
    /// config file's listeners and routes, so the data plane serves without
    /// the control plane.
    #[arg(long, env = "SHOAL_DATAPLANE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Node id this data plane gives the control plane. Default: the host
    /// name.
    #[arg(long)]
    node: Option<String>,
    /// Print one line of figures per core this often (0s: never).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
    /// Check the config and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the embedded default config and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{EMBEDDED_DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    // Executors never write to stderr themselves: lines go through a
    // bounded queue to a writer thread, and are dropped (not waited for)
    // if it is full, so a slow log reader cannot stall a core.
    let (log_writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(65_536)
        .thread_name("shoal-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(log_writer)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("shoal-dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<ApplyPlan, String> {
    let (text, source) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read config {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            EMBEDDED_DEFAULT_TOML.to_owned(),
            "embedded default config".to_owned(),
        ),
    };
    let config = DataPlaneConfig::from_toml(&text).map_err(|e| format!("config {source}: {e}"))?;
    let relying = shoal_protocols::config::listeners_relying_on_default_auth(&text);
    if let Some(warning) = shoal_protocols::config::default_auth_warning(&relying) {
        warn!("config {source}: {warning}");
    }
    ApplyPlan::new(config).map_err(|e| format!("config {source}: {e}"))
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills the set we
    // own for this process (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// What the data plane started with.
struct Started {
    /// Listeners, products, routes and streams (from the cache; empty when
    /// the config file's run).
    state: DesiredState,
    /// The control-plane version of that state (0: the config file's).
    applied_version: u64,
}

/// Applies the cached desired state, if `state_dir` holds one that reads
/// back and applies; otherwise the config file's.
fn apply_start_state(
    supervisor: &mut Supervisor,
    file_config: &DataPlaneConfig,
    source: &str,
    state_dir: Option<&PathBuf>,
) -> Result<Started, String> {
    let mut version = 1;
    if let Some(dir) = state_dir {
        match control::load_cache(dir, supervisor, CACHE_TICKET) {
            Ok(None) => {}
            Ok(Some(loaded)) => {
                let config = loaded
                    .state
                    .config(&file_config.runtime, &file_config.pools);
                let registry = RegistryCommit {
                    ticket: CACHE_TICKET,
                    products: loaded.state.product_names(),
                };
                let (listeners, routes) = (config.listeners.len(), config.routes.len());
                version += 1;
                match ApplyPlan::new(config).and_then(|p| supervisor.apply_plan(p, Some(registry)))
                {
                    Ok(devices) => {
                        info!(
                            version = loaded.version,
                            deltas = loaded.deltas,
                            listeners,
                            routes,
                            devices,
                            state_dir = %dir.display(),
                            "started from cached desired state version {}",
                            loaded.version
                        );
                        supervisor.set_from_control();
                        return Ok(Started {
                            state: loaded.state,
                            applied_version: loaded.version,
                        });
                    }
                    Err(e) => {
                        discard_cache_staging(supervisor);
                        warn!(
                            "the cached desired state (version {}) in {} cannot be applied: {e}; \
                             starting from {source}",
                            loaded.version,
                            dir.display()
                        );
                    }
                }
            }
            Err(e) => {
                discard_cache_staging(supervisor);
                warn!(
                    "the desired-state cache in {} is corrupt: {e}; starting from {source}",
                    dir.display()
                );
            }
        }
    }
    let mut plan = ApplyPlan::new(file_config.clone())?;
    plan.version = version;
    supervisor.apply_plan(plan, None)?;
    Ok(Started {
        state: DesiredState::default(),
        applied_version: 0,
    })
}

fn discard_cache_staging(supervisor: &mut Supervisor) {
    control::PlaneDriver::discard_devices(supervisor, CACHE_TICKET);
}

fn run(cli: Cli) -> Result<(), String> {
    let started = std::time::Instant::now();
    let plan = load_config(cli.config.as_ref())?;
    if cli.check_config {
        println!(
            "config ok: {} listeners, {} routes",
            plan.config.listeners.len(),
            plan.config.routes.len()
        );
        return Ok(());
    }
    uring::probe()?;
    let cpus = allowed_cpus();
    let cores = cli.cores.unwrap_or(cpus.len());
    if cores == 0 || cores > cpus.len() {
        return Err(format!(
            "--cores {cores}: this process may use {} CPUs ({cpus:?}); choose 1..={}",
            cpus.len(),
            cpus.len()
        ));
    }
    let cache = cli
        .state_dir
        .as_deref()
        .map(Cache::open)
        .transpose()
        .map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let heartbeats: Arc<Vec<AtomicU64>> = Arc::new((0..cores).map(|_| AtomicU64::new(0)).collect());
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while draining ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| format!("cannot install signal handler: {e}"))?;

    let file_config = plan.config.clone();
    let mesh = (cores > 1).then(|| {
        MeshBuilder::<MeshMsg, _>::full(cores, file_config.runtime.mesh_channel_capacity as usize)
    });
    let (report_tx, reports) = mpsc::channel::<CoreReport>();
    let (sample_tx, samples) = match cli.control {
        Some(_) => {
            let (tx, rx) = mpsc::sync_channel(cores * 4);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let board = Arc::new(board::FiguresBoard::new(cores));
    let mut threads = Vec::new();
    let mut controls = Vec::new();
    for (index, &cpu) in cpus.iter().take(cores).enumerate() {
        let (control_tx, control) =
            mpsc::sync_channel::<CoreControl>(supervisor::CORE_CONTROL_QUEUE);
        controls.push(control_tx);
        let link = CoreLink {
            index,
            reports: report_tx.clone(),
            control,
            stop: Arc::clone(&stop),
            heartbeats: Arc::clone(&heartbeats),
            stats_interval: cli.stats_interval,
            samples: sample_tx.clone(),
            pools: file_config.pools.clone(),
            runtime: file_config.runtime.clone(),
            board: Arc::clone(&board),
        };
        let mesh = mesh.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shoal-core-{index}"))
            .spawn(move || {
                // The preemption slice bounds how long a busy task queue
                // keeps the executor from polling for I/O. 10 ms cost 17%
                // of full-speed throughput here (more timer work per
                // loop); glommio's 100 ms default is kept.
                let executor = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                    .io_memory(256 * 1024)
                    .preempt_timer(Duration::from_millis(100))
                    .make();
                let executor = match executor {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = link.reports.send(CoreReport::Failed {
                            error: format!(
                                "core {index}: cannot start an executor on CPU {cpu}: {e}"
                            ),
                        });
                        return;
                    }
                };
                executor.run(core_task::core_main(link, mesh));
            })
            .map_err(|e| format!("cannot start core thread {index}: {e}"))?;
        threads.push(handle);
    }
    drop(report_tx);
    drop(sample_tx);

    // Cores that did start hold sockets and the mesh; a failed start ends
    // the whole process (returning from main ends every thread).
    let source = cli.config.as_ref().map_or_else(
        || "the embedded default config".to_owned(),
        |p| p.display().to_string(),
    );
    let mut supervisor = Supervisor::start(SupervisorParts {
        config_path: cli.config.clone(),
        plan: Arc::new(plan),
        cores: controls,
        reports,
        stop: Arc::clone(&stop),
        reload,
        heartbeats,
        board: Arc::clone(&board),
    })?;
    let start_state = apply_start_state(
        &mut supervisor,
        &file_config,
        &source,
        cli.state_dir.as_ref(),
    )?;
    let listeners: Vec<String> = supervisor
        .plan
        .listeners
        .iter()
        .map(|l| format!("{} {} {}", l.config.name, l.config.protocol, l.addr))
        .collect();
    board.set_ready(true);
    info!(cores, listeners = ?listeners, "shoal-dataplane ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let (request_tx, requests) = mpsc::sync_channel(supervisor::REQUEST_QUEUE);
    if let Some(socket) = cli.control {
        let client = ControlClient::new(ClientStart {
            node: cli.node.unwrap_or_else(control::host_name),
            cores: u16::try_from(cores).unwrap_or(u16::MAX),
            runtime: file_config.runtime.clone(),
            pools: file_config.pools.clone(),
            driver: SupervisorLink::new(request_tx),
            state: start_state.state,
            applied_version: start_state.applied_version,
            cache,
            samples,
            stop: Arc::clone(&stop),
            first_ticket: CACHE_TICKET,
            started,
        });
        control::spawn(socket, client, Arc::clone(&stop))
            .map_err(|e| format!("cannot start the control client thread: {e}"))?;
    } else {
        drop(request_tx);
    }

    supervisor.run(&threads, &requests);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for t in threads {
        let _ = t.join();
    }
    info!("shoal-dataplane stopped");
    Ok(())
}
