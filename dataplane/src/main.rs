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

mod apply;
mod bus;
mod core;
mod forward;
mod listener;
mod message;
mod outq;
mod pool;
mod routes;
mod signal;
mod stats;
mod tcp;
mod udp;
mod uring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use tracing::{error, info, warn};

use crate::apply::ApplyPlan;
use crate::core::{CloseReason, Core};
use crate::message::MeshMsg;

/// A core's answer to a prepare (or to its start): which core, for which
/// config version, and whether it can apply it.
type CoreReply = (usize, u64, Result<(), String>);

/// What the main thread asks of a core while it runs: the two phases of
/// applying a new config.
#[derive(Debug)]
enum CoreControl {
    Prepare(Arc<ApplyPlan>),
    Commit,
    Abort,
}

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
    /// (and keeps the running config) when it is invalid.
    #[arg(long)]
    config: Option<PathBuf>,
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

fn run(cli: Cli) -> Result<(), String> {
    let plan = Arc::new(load_config(cli.config.as_ref())?);
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

    let mesh = (cores > 1).then(|| {
        MeshBuilder::<MeshMsg, _>::full(cores, plan.config.runtime.mesh_channel_capacity as usize)
    });
    let (reply_tx, replies) = mpsc::channel::<CoreReply>();
    let mut threads = Vec::new();
    let mut controls = Vec::new();
    for (index, &cpu) in cpus.iter().take(cores).enumerate() {
        let (control_tx, control) = mpsc::channel::<CoreControl>();
        controls.push(control_tx);
        let link = CoreLink {
            index,
            reply: reply_tx.clone(),
            control,
            stop: Arc::clone(&stop),
            heartbeats: Arc::clone(&heartbeats),
            stats_interval: cli.stats_interval,
        };
        let plan = Arc::clone(&plan);
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
                        let _ = link.reply.send((
                            index,
                            1,
                            Err(format!(
                                "core {index}: cannot start an executor on CPU {cpu}: {e}"
                            )),
                        ));
                        return;
                    }
                };
                executor.run(core_main(link, plan, mesh));
            })
            .map_err(|e| format!("cannot start core thread {index}: {e}"))?;
        threads.push(handle);
    }
    drop(reply_tx);

    // Cores that did start hold sockets and the mesh; a failed start ends
    // the whole process (returning from main ends every thread).
    collect_replies(&replies, cores, plan.version)?;
    let listeners: Vec<String> = plan
        .listeners
        .iter()
        .map(|l| format!("{} {} {}", l.config.name, l.config.protocol, l.addr))
        .collect();
    info!(cores, listeners = ?listeners, "shoal-dataplane ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut supervisor = Supervisor {
        config_path: cli.config,
        plan,
        controls,
        replies,
        stop,
        reload,
        heartbeats,
    };
    supervisor.run(&threads);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for t in threads {
        let _ = t.join();
    }
    info!("shoal-dataplane stopped");
    Ok(())
}

/// Waits for one reply about config `version` from each of `cores` cores
/// (late replies about an earlier version are skipped); the first error
/// wins.
fn collect_replies(
    replies: &mpsc::Receiver<CoreReply>,
    cores: usize,
    version: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = 0;
    let mut first_error = None;
    while answered < cores {
        let left = deadline.saturating_duration_since(Instant::now());
        match replies.recv_timeout(left) {
            Ok((_, v, _)) if v != version => {}
            Ok((_, _, result)) => {
                answered += 1;
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
            Err(_) => {
                return Err(
                    first_error.unwrap_or_else(|| "a core did not answer within 30s".to_owned())
                )
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The main thread's side of the running data plane.
struct Supervisor {
    config_path: Option<PathBuf>,
    plan: Arc<ApplyPlan>,
    controls: Vec<mpsc::Sender<CoreControl>>,
    replies: mpsc::Receiver<CoreReply>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    heartbeats: Arc<Vec<AtomicU64>>,
}

impl Supervisor {
    /// Runs until the cores end: applies reloads (SIGHUP) and, under
    /// systemd's watchdog, pings it only while every core's heartbeat
    /// moves, so a stuck executor gets the service restarted.
    fn run(&mut self, threads: &[std::thread::JoinHandle<()>]) {
        let watchdog = sd_notify::watchdog_enabled();
        let period = watchdog.map_or(Duration::from_millis(100), |w| {
            (w / 2).clamp(Duration::from_millis(20), Duration::from_millis(100))
        });
        let mut last: Vec<u64> = self
            .heartbeats
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect();
        let mut last_ping = Instant::now();
        let mut stopping_told = false;
        while !threads.iter().all(|t| t.is_finished()) {
            std::thread::sleep(period);
            if self.stop.load(Ordering::Relaxed) {
                if !stopping_told {
                    stopping_told = true;
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                }
            } else if self.reload.swap(false, Ordering::Relaxed) {
                self.apply_reload();
            }
            if let Some(w) = watchdog {
                if last_ping.elapsed() >= w / 2 {
                    let now: Vec<u64> = self
                        .heartbeats
                        .iter()
                        .map(|h| h.load(Ordering::Relaxed))
                        .collect();
                    if now.iter().zip(&last).all(|(n, l)| n != l) {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    last = now;
                    last_ping = Instant::now();
                }
            }
        }
    }

    /// Reads the config file again and applies it on every core in two
    /// phases; a config that is invalid, or that any core cannot prepare,
    /// is refused and the running one stays.
    fn apply_reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP: running the embedded default config, nothing to reload (start with --config FILE)");
            return;
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let next = load_config(Some(&path)).and_then(|p| self.plan.next(p.config));
        let result = next.and_then(|plan| {
            let plan = Arc::new(plan);
            for c in &self.controls {
                let _ = c.send(CoreControl::Prepare(Arc::clone(&plan)));
            }
            match collect_replies(&self.replies, self.controls.len(), plan.version) {
                Ok(()) => {
                    for c in &self.controls {
                        let _ = c.send(CoreControl::Commit);
                    }
                    Ok(plan)
                }
                Err(e) => {
                    for c in &self.controls {
                        let _ = c.send(CoreControl::Abort);
                    }
                    Err(format!("config {}: {e}", path.display()))
                }
            }
        });
        match result {
            Ok(plan) => {
                info!(version = plan.version, config = %path.display(), "config reloaded");
                self.plan = plan;
            }
            Err(e) => error!(
                running_version = self.plan.version,
                "config reload refused, the running config stays: {e}"
            ),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// What a core thread gets from the main thread.
struct CoreLink {
    index: usize,
    reply: mpsc::Sender<CoreReply>,
    control: mpsc::Receiver<CoreControl>,
    stop: Arc<AtomicBool>,
    heartbeats: Arc<Vec<AtomicU64>>,
    stats_interval: Duration,
}

async fn core_main(
    link: CoreLink,
    plan: Arc<ApplyPlan>,
    mesh: Option<MeshBuilder<MeshMsg, glommio::channels::channel_mesh::Full>>,
) {
    let index = link.index;
    let (senders, receivers) = match mesh {
        Some(m) => match m.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(_) => {
                let _ = link.reply.send((
                    index,
                    plan.version,
                    Err(format!("core {index}: cannot join the channel mesh")),
                ));
                return;
            }
        },
        None => (None, None),
    };
    let core = Rc::new(Core::new(
        index,
        senders,
        plan.config.pools.clone(),
        plan.config.runtime.clone(),
    ));
    let mut applied = apply::Applied::default();
    match apply::prepare(&core, &plan, &applied) {
        Ok(prepared) => {
            apply::commit(&core, prepared, &mut applied);
            let _ = link.reply.send((index, plan.version, Ok(())));
        }
        Err(e) => {
            let _ = link.reply.send((index, plan.version, Err(e)));
            return;
        }
    }
    drop(plan);
    if let Some(mut receivers) = receivers {
        for (peer, rx) in receivers.streams() {
            let core = Rc::clone(&core);
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    // Take what else is already there in the same write batch.
                    core.begin_batch();
                    core.on_mesh(peer, msg);
                    for _ in 0..256 {
                        match futures_lite::future::poll_once(rx.recv()).await {
                            Some(Some(msg)) => core.on_mesh(peer, msg),
                            _ => break,
                        }
                    }
                    core.end_batch();
                    futures_lite::future::yield_now().await;
                }
            })
            .detach();
        }
    }
    glommio::spawn_local(Rc::clone(&core).run_interest_announcer()).detach();
    glommio::spawn_local(Rc::clone(&core).run_mesh_backlog_pump()).detach();
    if !link.stats_interval.is_zero() {
        let core = Rc::clone(&core);
        let interval = link.stats_interval;
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                info!(target: "shoal::stats", "{}", core.figures());
            }
        })
        .detach();
    }
    let mut pending: Option<apply::Prepared> = None;
    while !link.stop.load(Ordering::Relaxed) {
        if let Some(h) = link.heartbeats.get(index) {
            h.fetch_add(1, Ordering::Relaxed);
        }
        while let Ok(control) = link.control.try_recv() {
            match control {
                CoreControl::Prepare(plan) => {
                    if let Some(stale) = pending.take() {
                        stale.abort();
                    }
                    let reply = match apply::prepare(&core, &plan, &applied) {
                        Ok(prepared) => {
                            pending = Some(prepared);
                            Ok(())
                        }
                        Err(e) => Err(format!("core {index}: {e}")),
                    };
                    let _ = link.reply.send((index, plan.version, reply));
                }
                CoreControl::Commit => {
                    if let Some(prepared) = pending.take() {
                        apply::commit(&core, prepared, &mut applied);
                    }
                }
                CoreControl::Abort => {
                    if let Some(prepared) = pending.take() {
                        prepared.abort();
                    }
                }
            }
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    drain(&core).await;
}

/// Stops accepting, lets open connections finish until the drain
/// deadline, then closes what is left.
async fn drain(core: &Rc<Core>) {
    let timeout = core.settings.borrow().drain_timeout;
    let open = core.conn_count();
    info!(
        open,
        ?timeout,
        "stopping: no new connections; draining open ones"
    );
    core.stopping.raise();
    core.for_each_conn(|c| c.begin_drain());
    let deadline = Instant::now() + timeout;
    while core.conn_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let left = core.conn_count();
    if left > 0 {
        warn!(
            left,
            "drain deadline passed; closing the remaining connections"
        );
        core.for_each_conn(|c| c.close(CloseReason::Shutdown));
        let until = Instant::now() + Duration::from_millis(500);
        while core.conn_count() > 0 && Instant::now() < until {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
    core.routes().stop();
    info!(figures = %core.figures(), "core stopped");
}
