//! The last applied desired state, on disk in the state directory, so the
//! data plane restarts without the control plane.
//!
//! - `snapshot.bin`: the frames of the last applied snapshot, byte for byte
//!   as they came. They are written to `snapshot.bin.tmp` while the parts
//!   arrive; once the snapshot is applied the file is fsynced and renamed
//!   over `snapshot.bin`, and `deltas.log` is removed.
//! - `deltas.log`: every delta applied since, one frame each, appended and
//!   fsynced before the delta is acknowledged.
//!
//! At start the snapshot is read, then the deltas in order (those not
//! newer than the snapshot are skipped: a crash between the rename and the
//! removal leaves them behind). A frame torn by a crash at the end of
//! `deltas.log` is ignored with a warning. Anything else that does not
//! read back is a corrupt cache: the data plane warns and starts from its
//! config file.
//!
//! `deltas.log` is not compacted: it is replaced by the next snapshot, and
//! the control plane sends one on every connection. When it grows past
//! the snapshot's size (and 64 MiB) a warning says so once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use shoal_protocols::control::{wire, ToDataPlane};
use tracing::warn;

use super::frames::{read_file_frame, FileFrameError, RawFrame};
use super::state::DesiredState;
use super::PlaneDriver;
use crate::registry::DeviceOp;

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP_FILE: &str = "snapshot.bin.tmp";
const DELTAS_FILE: &str = "deltas.log";

/// Past this size (and the snapshot's) `deltas.log` earns a warning.
const DELTAS_WARN_BYTES: u64 = 64 * 1024 * 1024;

/// Device changes handed to the cores per message while a cache loads.
const STAGE_BATCH: usize = 8192;

/// The writer side of the cache (the control client's thread).
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    snapshot_tmp: Option<File>,
    snapshot_tmp_bytes: u64,
    snapshot_bytes: u64,
    deltas: Option<File>,
    deltas_bytes: u64,
    /// A delta could not be written whole and could not be cut off again:
    /// nothing more is appended until the next snapshot.
    deltas_broken: bool,
    warned_growth: bool,
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Cache {
    /// Opens (and creates) the state directory.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir).map_err(|e| annotate(e, "cannot create state directory", dir))?;
        let size = |name: &str| fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        Ok(Self {
            dir: dir.to_path_buf(),
            snapshot_tmp: None,
            snapshot_tmp_bytes: 0,
            snapshot_bytes: size(SNAPSHOT_FILE),
            deltas: None,
            deltas_bytes: size(DELTAS_FILE),
            deltas_broken: false,
            warned_growth: false,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts writing a new snapshot beside the applied one.
    pub(crate) fn begin_snapshot(&mut self) -> io::Result<()> {
        let path = self.path(SNAPSHOT_TMP_FILE);
        let file = File::create(&path).map_err(|e| annotate(e, "cannot create", &path))?;
        self.snapshot_tmp = Some(file);
        self.snapshot_tmp_bytes = 0;
        Ok(())
    }

    /// Appends a part of the snapshot being received.
    pub(crate) fn write_snapshot_part(&mut self, frame: &RawFrame) -> io::Result<()> {
        let path = self.path(SNAPSHOT_TMP_FILE);
        let Some(file) = self.snapshot_tmp.as_mut() else {
            return Err(io::Error::other("no snapshot is being written"));
        };
        file.write_all(&frame.0)
            .map_err(|e| annotate(e, "cannot write", &path))?;
        self.snapshot_tmp_bytes += frame.0.len() as u64;
        Ok(())
    }

    /// Makes the snapshot written so far the cached state (it was applied):
    /// fsync, rename over the old one, drop the deltas of the old one.
    pub(crate) fn commit_snapshot(&mut self) -> io::Result<()> {
        let tmp = self.path(SNAPSHOT_TMP_FILE);
        let Some(file) = self.snapshot_tmp.take() else {
            return Err(io::Error::other("no snapshot is being written"));
        };
        file.sync_all()
            .map_err(|e| annotate(e, "cannot fsync", &tmp))?;
        drop(file);
        let path = self.path(SNAPSHOT_FILE);
        fs::rename(&tmp, &path).map_err(|e| annotate(e, "cannot rename to", &path))?;
        self.snapshot_bytes = self.snapshot_tmp_bytes;
        self.deltas = None;
        let deltas = self.path(DELTAS_FILE);
        match fs::remove_file(&deltas) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(annotate(e, "cannot remove", &deltas)),
        }
        self.deltas_bytes = 0;
        self.deltas_broken = false;
        self.warned_growth = false;
        self.sync_dir()
    }

    /// Forgets the snapshot being written (it was refused or cut short).
    pub(crate) fn abandon_snapshot(&mut self) {
        if self.snapshot_tmp.take().is_some() {
            let _ = fs::remove_file(self.path(SNAPSHOT_TMP_FILE));
        }
    }

    /// Appends an applied delta and fsyncs it. A write that fails is cut
    /// off again, so the log never holds half a frame before a whole one.
    pub(crate) fn append_delta(&mut self, frame: &RawFrame) -> io::Result<()> {
        let path = self.path(DELTAS_FILE);
        if self.deltas_broken {
            return Err(io::Error::other(format!(
                "{} is not appended to until the next snapshot after an earlier failed write",
                path.display()
            )));
        }
        if !self.path(SNAPSHOT_FILE).exists() {
            return Err(io::Error::other(format!(
                "no snapshot is cached in {} to apply deltas to",
                self.dir.display()
            )));
        }
        if self.deltas.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| annotate(e, "cannot open", &path))?;
            self.deltas_bytes = file.metadata().map_or(0, |m| m.len());
            self.deltas = Some(file);
        }
        let Some(file) = self.deltas.as_mut() else {
            return Err(io::Error::other("deltas.log is not open"));
        };
        let written = file.write_all(&frame.0).and_then(|()| file.sync_data());
        if let Err(e) = written {
            if file.set_len(self.deltas_bytes).is_err() {
                self.deltas_broken = true;
            }
            return Err(annotate(e, "cannot append to", &path));
        }
        self.deltas_bytes += frame.0.len() as u64;
        if !self.warned_growth && self.deltas_bytes > self.snapshot_bytes.max(DELTAS_WARN_BYTES) {
            self.warned_growth = true;
            warn!(
                deltas_bytes = self.deltas_bytes,
                snapshot_bytes = self.snapshot_bytes,
                "{} is larger than the cached snapshot; it is kept until the next snapshot \
                 (the control plane sends one when the data plane reconnects)",
                path.display()
            );
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| annotate(e, "cannot fsync", &self.dir))
    }
}

/// A cache read back.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Listeners, products, routes and streams at `version`.
    pub(crate) state: DesiredState,
    /// The version the cache holds.
    pub(crate) version: u64,
    /// Deltas replayed after the snapshot.
    pub(crate) deltas: usize,
}

/// Reads the cache in `dir`: `Ok(None)` when there is none. The device
/// changes go to the cores through `driver`, staged under `ticket` (a
/// whole new registry); the caller applies them with the returned state,
/// or discards them.
pub(crate) fn load(
    dir: &Path,
    driver: &mut impl PlaneDriver,
    ticket: u64,
) -> Result<Option<Loaded>, String> {
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let file = match File::open(&snapshot_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", snapshot_path.display())),
    };
    driver.begin_devices(ticket, true)?;
    let mut state = DesiredState::default();
    let mut batch: Vec<DeviceOp> = Vec::new();
    let version = read_snapshot(file, &snapshot_path, |resource| {
        if let Some(op) = state.add_from_snapshot(resource)? {
            batch.push(op);
            if batch.len() >= STAGE_BATCH {
                flush(&mut batch, driver, ticket)?;
            }
        }
        Ok(())
    })?;
    flush(&mut batch, driver, ticket)?;

    let deltas_path = dir.join(DELTAS_FILE);
    let file = match File::open(&deltas_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot open {}: {e}", deltas_path.display())),
    };
    let mut version = version;
    let mut deltas = 0;
    if let Some(file) = file {
        let mut reader = BufReader::new(file);
        loop {
            let frame = match read_file_frame(&mut reader, wire::DEFAULT_MAX_FRAME_BYTES) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(FileFrameError::Torn) => {
                    warn!(
                        "{}: the last delta was cut short (a crash while writing it); it is ignored",
                        deltas_path.display()
                    );
                    break;
                }
                Err(e) => return Err(format!("{}: {e}", deltas_path.display())),
            };
            let message = wire::decode_body::<ToDataPlane>(frame.body())
                .map_err(|e| format!("{}: {e}", deltas_path.display()))?;
            let ToDataPlane::Delta {
                version: delta_version,
                changes,
            } = message
            else {
                return Err(format!(
                    "{}: holds something other than a delta",
                    deltas_path.display()
                ));
            };
            if delta_version <= version {
                continue;
            }
            for change in changes {
                if let Some(op) = state
                    .apply_change(change)
                    .map_err(|e| format!("{}: delta {delta_version}: {e}", deltas_path.display()))?
                {
                    batch.push(op);
                }
            }
            flush(&mut batch, driver, ticket)?;
            version = delta_version;
            deltas += 1;
        }
    }
    Ok(Some(Loaded {
        state,
        version,
        deltas,
    }))
}

/// Hands the device changes collected so far to the cores.
fn flush(
    batch: &mut Vec<DeviceOp>,
    driver: &mut impl PlaneDriver,
    ticket: u64,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    driver.stage_devices(ticket, std::mem::take(batch))
}

/// Reads the snapshot frames of `file`, handing each resource to `take`;
/// returns the snapshot's version.
fn read_snapshot(
    file: File,
    path: &Path,
    mut take: impl FnMut(shoal_protocols::control::Resource) -> Result<(), String>,
) -> Result<u64, String> {
    let mut reader = BufReader::new(file);
    let mut expected_part = 0u32;
    let mut snapshot_version = None;
    loop {
        let frame = match read_file_frame(&mut reader, wire::DEFAULT_MAX_FRAME_BYTES) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(format!(
                    "{}: the snapshot ends before its last part",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let message = wire::decode_body::<ToDataPlane>(frame.body())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let ToDataPlane::Snapshot {
            version,
            part,
            last,
            resources,
        } = message
        else {
            return Err(format!(
                "{}: holds something other than a snapshot",
                path.display()
            ));
        };
        if part != expected_part || snapshot_version.is_some_and(|v| v != version) {
            return Err(format!(
                "{}: part {part} of version {version} where part {expected_part} was expected",
                path.display()
            ));
        }
        snapshot_version = Some(version);
        for resource in resources {
            take(resource)?;
        }
        if last {
            return Ok(version);
        }
        expected_part += 1;
    }
}
