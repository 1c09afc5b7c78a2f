//! What runs on each core's executor: joining the mesh, the control loop
//! (the core's side of the two-phase apply, registry staging, kicks), the
//! periodic figures, and the drain at the end.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use shoal_protocols::config::{PoolSettings, RuntimeSettings};
use shoal_protocols::figures::CoreFigures;
use tracing::{error, info, warn};

use crate::apply;
use crate::core::{CloseReason, Core};
use crate::message::MeshMsg;
use crate::supervisor::{CoreControl, CoreReport, RegistryCommit};

/// How often a core looks at its control channel (an apply takes two
/// looks: prepare, then commit).
const CONTROL_POLL: Duration = Duration::from_millis(10);

/// How often a core sends its figures to the control client.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// One core's figures for the control plane.
#[derive(Debug, Clone)]
pub(crate) struct CoreSample {
    pub(crate) figures: CoreFigures,
    /// Devices of the registry this core owns.
    pub(crate) registry_devices: u64,
}

/// What a core thread gets from the main thread.
#[derive(Debug)]
pub(crate) struct CoreLink {
    pub(crate) index: usize,
    pub(crate) reports: mpsc::Sender<CoreReport>,
    pub(crate) control: mpsc::Receiver<CoreControl>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) heartbeats: Arc<Vec<AtomicU64>>,
    pub(crate) stats_interval: Duration,
    /// Where the figures go every [`SAMPLE_PERIOD`] (with a control
    /// client): bounded, never waited for.
    pub(crate) samples: Option<mpsc::SyncSender<CoreSample>>,
    pub(crate) pools: PoolSettings,
    pub(crate) runtime: RuntimeSettings,
    /// Where the core posts its figures for `/metrics`.
    pub(crate) board: Arc<crate::board::FiguresBoard>,
}

/// An apply this core prepared and waits to commit or abort.
struct Pending {
    version: u64,
    prepared: apply::Prepared,
    registry: Option<u64>,
}

/// The core's life: join the mesh, start the background tasks, run the
/// control loop until the data plane stops, drain.
pub(crate) async fn core_main(link: CoreLink, mesh: Option<MeshBuilder<MeshMsg, Full>>) {
    let CoreLink {
        index,
        reports,
        control,
        stop,
        heartbeats,
        stats_interval,
        samples,
        pools,
        runtime,
        board,
    } = link;
    let (senders, receivers) = match mesh {
        Some(m) => match m.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(_) => {
                let _ = reports.send(CoreReport::Failed {
                    error: format!("core {index}: cannot join the channel mesh"),
                });
                return;
            }
        },
        None => (None, None),
    };
    let core = Rc::new(Core::new(index, senders, pools, runtime, board));
    let _ = reports.send(CoreReport::Joined {
        core: index,
        mesh_id: core.mesh_id(),
    });
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
    glommio::spawn_local(crate::mqtt::run_sweeper(Rc::clone(&core))).detach();
    if !stats_interval.is_zero() {
        let core = Rc::clone(&core);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(stats_interval).await;
                info!(target: "shoal::stats", "{}", core.figures());
            }
        })
        .detach();
    }
    {
        let core = Rc::clone(&core);
        glommio::spawn_local(async move {
            // One sample at once (the figures exist from the start), then
            // one per period: to the figures board always, to the control
            // client when there is one.
            loop {
                let figures = core.take_figures();
                core.post_figures(figures.clone());
                if let Some(samples) = &samples {
                    let sample = CoreSample {
                        figures,
                        registry_devices: core.registry.borrow().len() as u64,
                    };
                    // A full channel drops the sample: a core never waits.
                    let _ = samples.try_send(sample);
                }
                glommio::timer::sleep(SAMPLE_PERIOD).await;
            }
        })
        .detach();
    }
    glommio::spawn_local(crate::http::run_mailboxes(Rc::clone(&core))).detach();
    glommio::spawn_local(Rc::clone(&core).run_media_writes()).detach();
    let mut pending: Option<Pending> = None;
    let mut applied = apply::Applied::default();
    while !stop.load(Ordering::Relaxed) {
        if let Some(h) = heartbeats.get(index) {
            h.fetch_add(1, Ordering::Relaxed);
        }
        while let Ok(message) = control.try_recv() {
            let staged_devices = matches!(message, CoreControl::StageDevices { .. });
            on_control(&core, &reports, &mut pending, &mut applied, message);
            if staged_devices {
                // Staging a large part takes a while: let connections run.
                futures_lite::future::yield_now().await;
            }
        }
        glommio::timer::sleep(CONTROL_POLL).await;
    }
    // Nothing is applied while draining; senders learn it at once.
    drop(control);
    drain(&core).await;
}

/// Handles one control message from the main thread.
fn on_control(
    core: &Rc<Core>,
    reports: &mpsc::Sender<CoreReport>,
    pending: &mut Option<Pending>,
    applied: &mut apply::Applied,
    message: CoreControl,
) {
    let index = core.index;
    match message {
        CoreControl::Prepare { plan, registry } => {
            if let Some(stale) = pending.take() {
                abort(core, stale);
            }
            let result = prepare(core, &plan, registry.as_ref(), applied, pending);
            let _ = reports.send(CoreReport::Prepared {
                version: plan.version,
                result: result.map_err(|e| format!("core {index}: {e}")),
            });
        }
        CoreControl::Commit => {
            if let Some(Pending {
                version,
                prepared,
                registry,
            }) = pending.take()
            {
                apply::commit(core, prepared, applied);
                if let Some(ticket) = registry {
                    let removed = core.registry.borrow_mut().commit(ticket);
                    match removed {
                        Ok(removed) => core.close_removed_devices(removed),
                        Err(e) => error!("registry change not fully applied: {e}"),
                    }
                }
                let _ = reports.send(CoreReport::Committed { version });
            }
        }
        CoreControl::Abort => {
            if let Some(stale) = pending.take() {
                abort(core, stale);
            }
        }
        CoreControl::BeginDevices { ticket, replace } => {
            core.registry.borrow_mut().begin(ticket, replace);
        }
        CoreControl::StageDevices { ticket, ops } => {
            core.registry.borrow_mut().stage(ticket, ops);
        }
        CoreControl::DiscardDevices { ticket } => {
            core.registry.borrow_mut().discard(ticket);
        }
        CoreControl::Kick { request, device } => {
            let connections = core.close_device(&device, CloseReason::Kicked);
            let _ = reports.send(CoreReport::Kicked {
                request,
                connections,
            });
        }
        CoreControl::KickStream { request, stream } => {
            let ended = core.streams.kick(&stream);
            let _ = reports.send(CoreReport::Kicked {
                request,
                connections: u32::from(ended),
            });
        }
    }
}

/// Phase one on this core: listeners and routes, then the registry.
fn prepare(
    core: &Rc<Core>,
    plan: &apply::ApplyPlan,
    registry: Option<&RegistryCommit>,
    applied: &apply::Applied,
    pending: &mut Option<Pending>,
) -> Result<usize, String> {
    let prepared = match apply::prepare(core, plan, applied) {
        Ok(p) => p,
        Err(e) => {
            if let Some(r) = registry {
                core.registry.borrow_mut().abort(r.ticket);
            }
            return Err(e);
        }
    };
    let devices = match registry {
        Some(r) => match core.registry.borrow_mut().prepare(r.ticket, &r.products) {
            Ok(n) => n,
            Err(e) => {
                prepared.abort();
                core.registry.borrow_mut().abort(r.ticket);
                return Err(format!("registry: {e}"));
            }
        },
        None => core.registry.borrow().len(),
    };
    *pending = Some(Pending {
        version: plan.version,
        prepared,
        registry: registry.map(|r| r.ticket),
    });
    Ok(devices)
}

fn abort(core: &Core, pending: Pending) {
    pending.prepared.abort();
    if let Some(ticket) = pending.registry {
        core.registry.borrow_mut().abort(ticket);
    }
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
