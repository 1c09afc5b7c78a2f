//! The data planes this control plane knows: how to write to each, where
//! each stands (snapshot sent, in sync, snapshot refused, gone), their
//! answers and their latest figures.
//!
//! Each data-plane connection has a reader thread that files what the data
//! plane says here ([`Planes::record`]); an apply writes to the planes'
//! links and waits on [`Planes`]' condition variable for their answers.
//! Entries stay after a plane disconnects so `status` can show it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shoal_protocols::control::{
    DataPlaneFigures, DataPlaneStatus, FromDataPlane, Hello, PeerRole, PlaneFigures,
};

/// Answers kept per plane (an apply waits for one version at a time).
const ANSWERS_KEPT: usize = 16;
/// Disconnected planes remembered for `status`.
const GONE_PLANES_KEPT: usize = 64;

/// The writing side of a data-plane connection. Frames are written whole
/// under a lock, so a snapshot, deltas and kicks never interleave.
#[derive(Debug)]
pub(crate) struct PlaneLink {
    stream: Mutex<UnixStream>,
    closed: AtomicBool,
}

impl PlaneLink {
    /// A link over `stream` whose writes give up after `write_timeout`.
    pub(crate) fn new(stream: UnixStream, write_timeout: Duration) -> io::Result<Self> {
        stream.set_write_timeout(Some(write_timeout.max(Duration::from_millis(1))))?;
        Ok(Self {
            stream: Mutex::new(stream),
            closed: AtomicBool::new(false),
        })
    }

    /// Writes one encoded frame.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "link closed"));
        }
        let mut stream = lock(&self.stream);
        let result = stream.write_all(frame).and_then(|()| stream.flush());
        if result.is_err() {
            self.closed.store(true, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
        }
        result
    }

    /// Closes the connection; its reader sees the end and unregisters.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = lock(&self.stream).shutdown(Shutdown::Both);
    }
}

/// Locks a mutex, carrying on after a panic elsewhere (the data it guards
/// stays consistent: every update is a single assignment or push).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Names one data-plane connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PlaneId(u64);

/// Where a data plane stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncState {
    /// The snapshot of this version was sent; its answer has not come.
    Snapshot(u64),
    /// It runs the desired state of this version (or the same content
    /// under an older label, after a refused push was undone).
    InSync(u64),
    /// It refused the snapshot of this version; it gets a new snapshot
    /// after the next accepted change.
    Refused(u64),
    /// Disconnected.
    Gone,
}

/// What a plane answered to one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Applied.
    Ack,
    /// Refused, with its reason.
    Nack(String),
    /// No answer in time, or the connection ended: why.
    Silent(String),
    /// It refused its snapshot meanwhile, so it was not running the state
    /// the push starts from; it gets a fresh snapshot instead.
    Excluded,
}

/// One plane's answer to a push.
#[derive(Debug, Clone)]
pub(crate) struct PlaneAnswer {
    /// The plane.
    pub(crate) id: PlaneId,
    /// Its node id.
    pub(crate) node: String,
    /// What it said.
    pub(crate) answer: Answer,
}

#[derive(Debug)]
struct PlaneEntry {
    id: PlaneId,
    node: String,
    software_version: String,
    cores: u16,
    connected_at: Instant,
    link: Arc<PlaneLink>,
    sync: SyncState,
    applied_version: u64,
    last_error: Option<String>,
    figures: PlaneFigures,
    figures_at: Option<Instant>,
    answers: VecDeque<(u64, Option<String>)>,
    /// Answers to kicks: (request, connections closed or publishers
    /// ended).
    kicked: VecDeque<(u64, u32)>,
}

impl PlaneEntry {
    fn connected(&self) -> bool {
        self.sync != SyncState::Gone
    }

    fn figures_age_ms(&self) -> u64 {
        let since = self.figures_at.unwrap_or(self.connected_at);
        u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Every known data plane.
#[derive(Debug, Default)]
pub(crate) struct Planes {
    table: Mutex<Vec<PlaneEntry>>,
    changed: Condvar,
    next_id: std::sync::atomic::AtomicU64,
}

impl Planes {
    fn table(&self) -> MutexGuard<'_, Vec<PlaneEntry>> {
        lock(&self.table)
    }

    /// Adds a connected plane to which the snapshot of `snapshot_version`
    /// is about to be sent. Older disconnected entries of the same node
    /// are forgotten.
    pub(crate) fn register(
        &self,
        hello: &Hello,
        link: Arc<PlaneLink>,
        snapshot_version: u64,
    ) -> PlaneId {
        let id = PlaneId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (cores, applied_version) = match hello.role {
            PeerRole::DataPlane {
                cores,
                last_applied_version,
            } => (cores, last_applied_version),
            _ => (0, 0),
        };
        let mut table = self.table();
        table.retain(|e| e.connected() || e.node != hello.node);
        let gone = table.iter().filter(|e| !e.connected()).count();
        if gone >= GONE_PLANES_KEPT {
            if let Some(oldest) = table.iter().position(|e| !e.connected()) {
                table.remove(oldest);
            }
        }
        table.push(PlaneEntry {
            id,
            node: hello.node.clone(),
            software_version: hello.software_version.clone(),
            cores,
            connected_at: Instant::now(),
            link,
            sync: SyncState::Snapshot(snapshot_version),
            applied_version,
            last_error: None,
            figures: PlaneFigures::default(),
            figures_at: None,
            answers: VecDeque::new(),
            kicked: VecDeque::new(),
        });
        id
    }

    /// Marks a plane disconnected.
    pub(crate) fn disconnected(&self, id: PlaneId) {
        let mut table = self.table();
        if let Some(e) = table.iter_mut().find(|e| e.id == id) {
            e.sync = SyncState::Gone;
        }
        self.changed.notify_all();
    }

    /// Closes a plane's connection now (it resyncs when it dials again).
    pub(crate) fn drop_plane(&self, id: PlaneId) {
        let link = self
            .table()
            .iter()
            .find(|e| e.id == id)
            .map(|e| Arc::clone(&e.link));
        if let Some(link) = link {
            link.close();
        }
        self.disconnected(id);
    }

    /// Files a message from a plane. Returns the plane's sync state
    /// before and after it.
    pub(crate) fn record(
        &self,
        id: PlaneId,
        message: FromDataPlane,
    ) -> Option<(SyncState, SyncState)> {
        let mut table = self.table();
        let entry = table.iter_mut().find(|e| e.id == id)?;
        let before = entry.sync;
        match message {
            FromDataPlane::Ack { version } => {
                entry.applied_version = version;
                entry.last_error = None;
                if entry.sync == SyncState::Snapshot(version) {
                    entry.sync = SyncState::InSync(version);
                }
                push_bounded(&mut entry.answers, (version, None));
            }
            FromDataPlane::Nack { version, error } => {
                if entry.sync == SyncState::Snapshot(version) {
                    entry.sync = SyncState::Refused(version);
                }
                entry.last_error = Some(error.clone());
                push_bounded(&mut entry.answers, (version, Some(error)));
            }
            FromDataPlane::Figures(figures) => {
                entry.figures = figures;
                entry.figures_at = Some(Instant::now());
            }
            FromDataPlane::Kicked {
                request,
                connections,
            } => push_bounded(&mut entry.kicked, (request, connections)),
            FromDataPlane::StreamKicked {
                request,
                publishers,
            } => push_bounded(&mut entry.kicked, (request, publishers)),
            _ => {}
        }
        let after = entry.sync;
        self.changed.notify_all();
        Some((before, after))
    }

    /// Planes that run the current desired state or were sent its
    /// snapshot: those a change is pushed to.
    pub(crate) fn targets(&self) -> Vec<PlaneId> {
        self.table()
            .iter()
            .filter(|e| matches!(e.sync, SyncState::Snapshot(_) | SyncState::InSync(_)))
            .map(|e| e.id)
            .collect()
    }

    /// Connected planes that refused their snapshot, with their links.
    pub(crate) fn refused(&self) -> Vec<(PlaneId, String, Arc<PlaneLink>)> {
        self.table()
            .iter()
            .filter(|e| matches!(e.sync, SyncState::Refused(_)))
            .map(|e| (e.id, e.node.clone(), Arc::clone(&e.link)))
            .collect()
    }

    /// Sets where planes stand.
    pub(crate) fn set_sync(&self, ids: &[PlaneId], sync: SyncState) {
        let mut table = self.table();
        for e in table.iter_mut().filter(|e| ids.contains(&e.id)) {
            if e.connected() {
                e.sync = sync;
            }
        }
    }

    /// Sends `frame` (a delta of `version`) to `targets` and waits up to
    /// `timeout` for each one's answer.
    pub(crate) fn push(
        &self,
        targets: &[PlaneId],
        version: u64,
        frame: &[u8],
        timeout: Duration,
    ) -> Vec<PlaneAnswer> {
        let deadline = Instant::now() + timeout;
        let links: Vec<(PlaneId, Option<Arc<PlaneLink>>)> = {
            let table = self.table();
            targets
                .iter()
                .map(|id| {
                    let link = table.iter().find(|e| e.id == *id && e.connected());
                    (*id, link.map(|e| Arc::clone(&e.link)))
                })
                .collect()
        };
        let mut unsent = Vec::new();
        for (id, link) in &links {
            let sent = link.as_ref().map(|l| l.send(frame));
            match sent {
                Some(Ok(())) => {}
                Some(Err(e)) => unsent.push((*id, format!("cannot send: {e}"))),
                None => unsent.push((*id, "disconnected".to_owned())),
            }
        }
        let mut table = self.table();
        loop {
            let answers: Vec<Option<PlaneAnswer>> = targets
                .iter()
                .map(|id| {
                    if let Some((_, why)) = unsent.iter().find(|(u, _)| u == id) {
                        let node = table.iter().find(|e| e.id == *id).map(|e| e.node.clone());
                        return Some(PlaneAnswer {
                            id: *id,
                            node: node.unwrap_or_default(),
                            answer: Answer::Silent(why.clone()),
                        });
                    }
                    answer_of(&table, *id, version)
                })
                .collect();
            let now = Instant::now();
            if answers.iter().all(Option::is_some) || now >= deadline {
                return targets
                    .iter()
                    .zip(answers)
                    .map(|(id, a)| {
                        a.unwrap_or_else(|| PlaneAnswer {
                            id: *id,
                            node: table
                                .iter()
                                .find(|e| e.id == *id)
                                .map(|e| e.node.clone())
                                .unwrap_or_default(),
                            answer: Answer::Silent(format!(
                                "no answer within {}",
                                humantime::format_duration(timeout)
                            )),
                        })
                    })
                    .collect();
            }
            table = self
                .changed
                .wait_timeout(table, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends a kick (`frame`, request number `request`) to every connected
    /// plane and sums what they ended (connections of a device, or
    /// publishers of a stream), waiting up to `timeout`.
    pub(crate) fn kick(&self, request: u64, frame: &[u8], timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        let links: Vec<(PlaneId, Arc<PlaneLink>)> = self
            .table()
            .iter()
            .filter(|e| e.connected())
            .map(|e| (e.id, Arc::clone(&e.link)))
            .collect();
        let asked: Vec<PlaneId> = links
            .iter()
            .filter(|(_, link)| link.send(frame).is_ok())
            .map(|(id, _)| *id)
            .collect();
        let mut table = self.table();
        loop {
            let mut total = 0u32;
            let mut waiting = false;
            for id in &asked {
                let Some(e) = table.iter().find(|e| e.id == *id) else {
                    continue;
                };
                match e.kicked.iter().find(|(r, _)| *r == request) {
                    Some((_, n)) => total = total.saturating_add(*n),
                    None if e.connected() => waiting = true,
                    None => {}
                }
            }
            let now = Instant::now();
            if !waiting || now >= deadline {
                return total;
            }
            table = self
                .changed
                .wait_timeout(table, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Every known plane, for `status`.
    pub(crate) fn statuses(&self) -> Vec<DataPlaneStatus> {
        self.table()
            .iter()
            .map(|e| DataPlaneStatus {
                node: e.node.clone(),
                software_version: e.software_version.clone(),
                connected: e.connected(),
                cores: e.cores,
                applied_version: e.applied_version,
                last_error: e.last_error.clone(),
                figures: e.figures.clone(),
                figures_age_ms: e.figures_age_ms(),
            })
            .collect()
    }

    /// Every known plane's latest figures.
    pub(crate) fn figures(&self) -> Vec<DataPlaneFigures> {
        self.table()
            .iter()
            .map(|e| DataPlaneFigures {
                node: e.node.clone(),
                connected: e.connected(),
                figures: e.figures.clone(),
                figures_age_ms: e.figures_age_ms(),
            })
            .collect()
    }

    /// Closes every connection (at shutdown).
    pub(crate) fn close_all(&self) {
        for e in self.table().iter() {
            e.link.close();
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= ANSWERS_KEPT {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn answer_of(table: &[PlaneEntry], id: PlaneId, version: u64) -> Option<PlaneAnswer> {
    let Some(e) = table.iter().find(|e| e.id == id) else {
        return Some(PlaneAnswer {
            id,
            node: String::new(),
            answer: Answer::Silent("disconnected".to_owned()),
        });
    };
    let answer = if matches!(e.sync, SyncState::Refused(_)) {
        Answer::Excluded
    } else {
        match e.answers.iter().rev().find(|(v, _)| *v == version) {
            Some((_, None)) => Answer::Ack,
            Some((_, Some(error))) => Answer::Nack(error.clone()),
            None if e.sync == SyncState::Gone => {
                Answer::Silent("disconnected before answering".to_owned())
            }
            None => return None,
        }
    };
    Some(PlaneAnswer {
        id,
        node: e.node.clone(),
        answer,
    })
}
