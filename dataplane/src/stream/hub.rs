//! The stream hub of one core: the streams it publishes or mirrors, their
//! GOP caches and viewers, and what it tells the other cores.
//!
//! A stream's publisher runs on one core (its origin). Every core learns
//! which streams are live where ([`MeshMsg::StreamLive`]); a core that has
//! viewers of a stream says so ([`MeshMsg::StreamViewers`]) and from then
//! on the origin sends it every tag once ([`MeshMsg::StreamTag`]), starting
//! with its GOP cache, so the mirror on that core can start new viewers on
//! a keyframe at once. Only one publisher per stream: the stream's owner
//! core (a hash of its name) grants it ([`MeshMsg::StreamClaim`]).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use shoal_protocols::figures::StreamFigures;
use tracing::{info, warn};

use shoal_protocols::config::{stream_rule_for, ListenerAuth, StreamRule};

use super::gop::GopCache;
use super::tag::{MediaTag, TagRole};
use super::viewer::{Offered, Viewer, ViewerEnd};
use crate::core::Core;
use crate::message::MeshMsg;
use crate::signal::{Gate, LocalSignal};

/// How long a publisher waits for the stream's owner core to answer.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// The publisher of a stream, on its origin core.
#[derive(Debug)]
pub(crate) struct Publisher {
    pub(crate) peer: SocketAddr,
    pub(crate) since: Instant,
    /// Raised to end the publishing connection (`shoalctl stream kick`).
    pub(crate) kicked: Rc<LocalSignal>,
    pub(crate) video_codec: RefCell<String>,
    pub(crate) audio_codec: RefCell<String>,
    pub(crate) width: Cell<u32>,
    pub(crate) height: Cell<u32>,
}

/// Bytes per second over the last few seconds.
#[derive(Debug, Default)]
struct RateMeter {
    /// (second since the stream started, bytes in it).
    buckets: VecDeque<(u64, u64)>,
}

impl RateMeter {
    const SECONDS: u64 = 5;

    fn add(&mut self, second: u64, bytes: u64) {
        match self.buckets.back_mut() {
            Some((s, b)) if *s == second => *b += bytes,
            _ => {
                self.buckets.push_back((second, bytes));
                while self.buckets.len() as u64 > Self::SECONDS + 1 {
                    self.buckets.pop_front();
                }
            }
        }
    }

    /// Mean bytes/s over the last whole seconds before `now_second`.
    fn bytes_per_second(&self, now_second: u64) -> u64 {
        let from = now_second.saturating_sub(Self::SECONDS);
        let (sum, seconds) = self
            .buckets
            .iter()
            .filter(|(s, _)| *s >= from && *s < now_second)
            .fold((0, 0), |(sum, n), (_, b)| (sum + b, n + 1));
        sum.checked_div(seconds).unwrap_or(0)
    }
}

/// A stream on this core: published here, or mirrored for viewers here.
#[derive(Debug)]
pub(crate) struct LocalStream {
    pub(crate) name: Rc<str>,
    pub(crate) publisher: RefCell<Option<Publisher>>,
    pub(crate) gop: RefCell<GopCache>,
    viewers: RefCell<Vec<Rc<Viewer>>>,
    started: Instant,
    rate: RefCell<RateMeter>,
    tags_in: Cell<u64>,
    bytes_in: Cell<u64>,
    skipped: Cell<u64>,
    slow_disconnects: Cell<u64>,
}

impl LocalStream {
    fn new(name: Rc<str>) -> Self {
        Self {
            name,
            publisher: RefCell::new(None),
            gop: RefCell::new(GopCache::default()),
            viewers: RefCell::new(Vec::new()),
            started: Instant::now(),
            rate: RefCell::new(RateMeter::default()),
            tags_in: Cell::new(0),
            bytes_in: Cell::new(0),
            skipped: Cell::new(0),
            slow_disconnects: Cell::new(0),
        }
    }

    fn is_origin(&self) -> bool {
        self.publisher.borrow().is_some()
    }

    /// Caches `tag` and offers it to every viewer here.
    fn take(&self, core: &Core, tag: &Rc<MediaTag>) {
        let settings = core.settings.borrow().streams.clone();
        self.tags_in.set(self.tags_in.get() + 1);
        self.bytes_in
            .set(self.bytes_in.get() + tag.data_len() as u64);
        self.rate
            .borrow_mut()
            .add(self.started.elapsed().as_secs(), tag.data_len() as u64);
        let mut gop = self.gop.borrow_mut();
        gop.push(tag, settings.gop_cache_bytes as usize);
        let mut ended = false;
        for viewer in self.viewers.borrow().iter() {
            match viewer.offer(tag, &gop, &settings) {
                Offered::Sent | Offered::Dropped => {}
                Offered::Skipped => {
                    self.skipped.set(self.skipped.get() + 1);
                    core.stats.stream_skipped_tags.inc();
                }
                Offered::Ended => ended = true,
            }
        }
        drop(gop);
        if ended {
            self.sweep_ended(core);
        }
    }

    /// Takes ended viewers off (their tasks close them).
    fn sweep_ended(&self, core: &Core) {
        self.viewers.borrow_mut().retain(|v| match v.ended() {
            None => true,
            Some(why) => {
                if why == ViewerEnd::TooSlow {
                    self.slow_disconnects.set(self.slow_disconnects.get() + 1);
                    core.stats.stream_slow_disconnects.inc();
                }
                false
            }
        });
    }

    fn figures(&self, core: &Core) -> StreamFigures {
        let publisher = self.publisher.borrow();
        let now_second = self.started.elapsed().as_secs();
        StreamFigures {
            name: self.name.to_string(),
            core: u16::try_from(core.index).unwrap_or(u16::MAX),
            publisher: publisher.as_ref().map(|p| p.peer.to_string()),
            publishing_secs: publisher
                .as_ref()
                .map_or(0, |p| p.since.elapsed().as_secs()),
            video_codec: publisher
                .as_ref()
                .map(|p| p.video_codec.borrow().clone())
                .unwrap_or_default(),
            audio_codec: publisher
                .as_ref()
                .map(|p| p.audio_codec.borrow().clone())
                .unwrap_or_default(),
            width: publisher.as_ref().map_or(0, |p| p.width.get()),
            height: publisher.as_ref().map_or(0, |p| p.height.get()),
            bitrate_kbps: self.rate.borrow().bytes_per_second(now_second) * 8 / 1000,
            tags_in: self.tags_in.get(),
            bytes_in: self.bytes_in.get(),
            viewers: self.viewers.borrow().len() as u64,
            skipped_tags: self.skipped.get(),
            slow_disconnects: self.slow_disconnects.get(),
            gop_cache_bytes: self.gop.borrow().bytes() as u64,
        }
    }
}

/// A publish claim waiting for the owner core's answer.
#[derive(Debug, Default)]
struct ClaimSlot {
    answer: Cell<Option<bool>>,
    gate: Gate,
}

/// Why a publisher was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishRefusal {
    /// Someone publishes it already.
    InUse,
    /// `max_streams` are live on this core's view.
    TooMany,
    /// The owner core did not answer.
    NoAnswer,
}

/// One core's streams.
#[derive(Debug, Default)]
pub(crate) struct StreamHub {
    streams: RefCell<HashMap<Rc<str>, Rc<LocalStream>>>,
    /// Streams live on any core: name → the origin's mesh id.
    live: RefCell<HashMap<Rc<str>, usize>>,
    /// Per stream: which peers have viewers of it.
    peer_viewers: RefCell<HashMap<Rc<str>, Vec<bool>>>,
    /// On a stream's owner core: streams with a publisher (→ its core).
    owned: RefCell<HashMap<Rc<str>, usize>>,
    claims: RefCell<HashMap<u64, Rc<ClaimSlot>>>,
    next_claim: Cell<u64>,
    /// Opened when a stream goes live anywhere (waiting viewers look).
    went_live: Gate,
    /// Who may publish and play what (`[[stream]]`).
    rules: RefCell<Rc<Vec<StreamRule>>>,
}

impl StreamHub {
    /// A config was committed: new rules (live streams keep going).
    pub(crate) fn configure(&self, rules: Vec<StreamRule>) {
        *self.rules.borrow_mut() = Rc::new(rules);
    }

    /// Whether viewers may play `stream` (`app/name`) through a listener
    /// with `auth`; else why not.
    pub(crate) fn may_play(&self, stream: &str, auth: ListenerAuth) -> Result<(), String> {
        let (app, name) = stream.split_once('/').unwrap_or((stream, ""));
        match stream_rule_for(&self.rules.borrow(), app, name) {
            Some(rule) if rule.allow_play => Ok(()),
            Some(rule) => Err(format!(
                "stream rule {:?} does not allow playing",
                rule.name
            )),
            None if auth == ListenerAuth::None => Ok(()),
            None => Err(format!("no stream rule covers {stream}")),
        }
    }

    /// Whether `stream` may be published with `key` (from the publish
    /// name's `?key=`) through a listener with `auth`; else why not.
    pub(crate) fn may_publish(
        &self,
        stream: &str,
        key: Option<&str>,
        auth: ListenerAuth,
    ) -> Result<(), String> {
        let (app, name) = stream.split_once('/').unwrap_or((stream, ""));
        match stream_rule_for(&self.rules.borrow(), app, name) {
            Some(rule) => match &rule.publish_key {
                None => Ok(()),
                Some(wanted)
                    if key.is_some_and(|k| constant_time_eq(k.as_bytes(), wanted.as_bytes())) =>
                {
                    Ok(())
                }
                Some(_) if key.is_none() => {
                    Err(format!("stream {stream} needs a publish key (?key=)"))
                }
                Some(_) => Err(format!("wrong publish key for stream {stream}")),
            },
            None if auth == ListenerAuth::None => Ok(()),
            None => Err(format!("no stream rule covers {stream}")),
        }
    }

    /// The core that grants publishing `name`.
    fn owner_of(core: &Core, name: &str) -> usize {
        // FNV-1a: stable across processes and cores.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % core.shards().max(1) as u64) as usize
    }

    /// The stream published or mirrored here, if any.
    pub(crate) fn local(&self, name: &str) -> Option<Rc<LocalStream>> {
        self.streams.borrow().get(name).cloned()
    }

    /// Ends the publisher of `name` if it publishes to this core (raises
    /// its `kicked` signal; its RTMP connection closes): `shoalctl stream
    /// kick`. Whether this core had the publisher.
    pub(crate) fn kick(&self, name: &str) -> bool {
        let Some(stream) = self.local(name) else {
            return false;
        };
        let publisher = stream.publisher.borrow();
        let Some(p) = publisher.as_ref() else {
            return false;
        };
        p.kicked.raise();
        info!(stream = %name, peer = %p.peer, "publisher kicked");
        true
    }

    /// Whether `name` has a publisher on some core.
    pub(crate) fn is_live(&self, name: &str) -> bool {
        self.live.borrow().contains_key(name)
    }

    /// Live streams this core knows of.
    pub(crate) fn live_count(&self) -> usize {
        self.live.borrow().len()
    }

    /// Asks the owner core for the right to publish `name`.
    pub(crate) async fn claim(&self, core: &Rc<Core>, name: &str) -> Result<(), PublishRefusal> {
        let max = core.settings.borrow().streams.max_streams as usize;
        if self.live_count() >= max {
            return Err(PublishRefusal::TooMany);
        }
        let owner = Self::owner_of(core, name);
        if owner == core.mesh_id() {
            return if self.grant(name, core.mesh_id()) {
                Ok(())
            } else {
                Err(PublishRefusal::InUse)
            };
        }
        let claim = self.next_claim.get() + 1;
        self.next_claim.set(claim);
        let slot = Rc::new(ClaimSlot::default());
        slot.gate.close();
        self.claims.borrow_mut().insert(claim, Rc::clone(&slot));
        core.send_mesh(
            owner,
            MeshMsg::StreamClaim {
                claim,
                stream: name.into(),
            },
        );
        let wait = async {
            slot.gate.pass().await;
        };
        let timeout = async {
            glommio::timer::sleep(CLAIM_TIMEOUT).await;
        };
        wait.or(timeout).await;
        self.claims.borrow_mut().remove(&claim);
        match slot.answer.get() {
            Some(true) => Ok(()),
            Some(false) => Err(PublishRefusal::InUse),
            None => Err(PublishRefusal::NoAnswer),
        }
    }

    /// On the owner core: records `core_id` as `name`'s publisher unless
    /// another one is.
    fn grant(&self, name: &str, core_id: usize) -> bool {
        let mut owned = self.owned.borrow_mut();
        if owned.contains_key(name) {
            return false;
        }
        owned.insert(name.into(), core_id);
        true
    }

    /// Gives up a granted claim.
    pub(crate) fn release(&self, core: &Core, name: &str) {
        let owner = Self::owner_of(core, name);
        if owner == core.mesh_id() {
            self.owned.borrow_mut().remove(name);
        } else {
            core.send_mesh(
                owner,
                MeshMsg::StreamRelease {
                    stream: name.into(),
                },
            );
        }
    }

    /// A granted publisher starts: the stream goes live everywhere.
    pub(crate) fn start_publishing(
        &self,
        core: &Core,
        name: &str,
        publisher: Publisher,
    ) -> Rc<LocalStream> {
        let name: Rc<str> = name.into();
        let stream = self
            .streams
            .borrow_mut()
            .entry(Rc::clone(&name))
            .or_insert_with(|| Rc::new(LocalStream::new(Rc::clone(&name))))
            .clone();
        *stream.publisher.borrow_mut() = Some(publisher);
        *stream.gop.borrow_mut() = GopCache::default();
        self.live
            .borrow_mut()
            .insert(Rc::clone(&name), core.mesh_id());
        self.went_live.open();
        core.broadcast(|| {
            Some(MeshMsg::StreamLive {
                stream: name.as_ref().into(),
                live: true,
            })
        });
        core.stats.streams_published.inc();
        info!(stream = %name, "stream live");
        stream
    }

    /// One tag from the publisher here: cached, offered to viewers here,
    /// sent once to each core with viewers.
    pub(crate) fn publish(&self, core: &Core, stream: &LocalStream, tag: MediaTag) {
        let tag = Rc::new(tag);
        if let Some(p) = stream.publisher.borrow().as_ref() {
            note_codecs(p, &tag);
        }
        stream.take(core, &tag);
        // Sending touches the mesh only, never this table.
        let table = self.peer_viewers.borrow();
        let Some(peers) = table.get(&stream.name) else {
            return;
        };
        for (peer, _) in peers.iter().enumerate().filter(|(_, has)| **has) {
            self.send_tag(core, peer, &stream.name, &tag);
        }
    }

    fn send_tag(&self, core: &Core, peer: usize, name: &str, tag: &MediaTag) {
        let cross = tag.detach(&core.pool);
        core.send_mesh(
            peer,
            MeshMsg::StreamTag {
                stream: name.into(),
                tag: cross,
            },
        );
    }

    /// The publisher here left: viewers everywhere get a clean end.
    pub(crate) fn stop_publishing(&self, core: &Core, stream: &LocalStream) {
        stream.publisher.borrow_mut().take();
        self.live.borrow_mut().remove(&stream.name);
        core.broadcast(|| {
            Some(MeshMsg::StreamLive {
                stream: stream.name.as_ref().into(),
                live: false,
            })
        });
        self.release(core, &stream.name);
        self.end_local(&stream.name);
        info!(stream = %stream.name, "stream ended");
    }

    /// Ends this core's viewers of `name` and drops its cache.
    fn end_local(&self, name: &str) {
        let Some(stream) = self.streams.borrow_mut().remove(name) else {
            return;
        };
        for viewer in stream.viewers.borrow_mut().drain(..) {
            viewer.end(ViewerEnd::Unpublished);
        }
    }

    /// Adds a viewer of the live stream `name`; false when it is not live.
    pub(crate) fn add_viewer(&self, core: &Core, name: &str, viewer: &Rc<Viewer>) -> bool {
        if !self.is_live(name) {
            return false;
        }
        let name: Rc<str> = name.into();
        let (stream, first_here) = {
            let mut streams = self.streams.borrow_mut();
            match streams.get(&name) {
                Some(s) => (Rc::clone(s), false),
                None => {
                    let s = Rc::new(LocalStream::new(Rc::clone(&name)));
                    streams.insert(Rc::clone(&name), Rc::clone(&s));
                    (s, true)
                }
            }
        };
        stream.viewers.borrow_mut().push(Rc::clone(viewer));
        viewer.start(&stream.gop.borrow());
        core.stats.stream_viewers_added.inc();
        if first_here && !stream.is_origin() {
            self.announce_viewers(core, &name, true);
        }
        true
    }

    /// Takes a viewer off (its connection ended).
    pub(crate) fn remove_viewer(&self, core: &Core, name: &str, viewer: &Rc<Viewer>) {
        let Some(stream) = self.local(name) else {
            return;
        };
        let before = stream.viewers.borrow().len();
        stream
            .viewers
            .borrow_mut()
            .retain(|v| !Rc::ptr_eq(v, viewer));
        let was_listed = stream.viewers.borrow().len() < before;
        // A viewer `sweep_ended` took off was counted there.
        if was_listed && viewer.ended() == Some(ViewerEnd::TooSlow) {
            stream
                .slow_disconnects
                .set(stream.slow_disconnects.get() + 1);
            core.stats.stream_slow_disconnects.inc();
        }
        if stream.viewers.borrow().is_empty() && !stream.is_origin() {
            self.streams.borrow_mut().remove(name);
            self.announce_viewers(core, name, false);
        }
    }

    fn announce_viewers(&self, core: &Core, name: &str, present: bool) {
        core.broadcast(|| {
            Some(MeshMsg::StreamViewers {
                stream: name.into(),
                present,
            })
        });
    }

    /// Waits until a stream goes live somewhere, or `timeout`.
    pub(crate) async fn wait_live(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_live(name) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.went_live.close();
            let wait = async {
                self.went_live.pass().await;
            };
            let timer = async {
                glommio::timer::sleep(left).await;
            };
            wait.or(timer).await;
        }
    }

    /// What a peer core told this one.
    pub(crate) fn on_mesh(&self, core: &Core, peer: usize, msg: MeshMsg) {
        match msg {
            MeshMsg::StreamLive { stream, live } => {
                let name: Rc<str> = stream.into();
                if live {
                    self.live.borrow_mut().insert(name, peer);
                    self.went_live.open();
                } else {
                    let was = self.live.borrow().get(&name).copied();
                    if was == Some(peer) {
                        self.live.borrow_mut().remove(&name);
                    }
                    if self.local(&name).is_some_and(|s| !s.is_origin()) {
                        self.end_local(&name);
                    }
                }
            }
            MeshMsg::StreamViewers { stream, present } => {
                let name: Rc<str> = stream.into();
                let shards = core.shards();
                {
                    let mut table = self.peer_viewers.borrow_mut();
                    let entry = table
                        .entry(Rc::clone(&name))
                        .or_insert_with(|| vec![false; shards]);
                    if let Some(slot) = entry.get_mut(peer) {
                        *slot = present;
                    }
                    if entry.iter().all(|has| !has) {
                        table.remove(&name);
                    }
                }
                if present {
                    // Start the new mirror on the cache: it can serve a
                    // keyframe at once.
                    if let Some(stream) = self.local(&name).filter(|s| s.is_origin()) {
                        let gop = stream.gop.borrow();
                        for tag in gop.headers().chain(gop.gop().iter()) {
                            self.send_tag(core, peer, &name, tag);
                        }
                    }
                }
            }
            MeshMsg::StreamTag { stream, tag } => {
                core.stats.mesh_received.inc();
                let Some(local) = self.local(&stream).filter(|s| !s.is_origin()) else {
                    return;
                };
                match tag.adopt(&core.pool) {
                    Some(tag) => local.take(core, &tag),
                    None => core.stats.mesh_drops.inc(),
                }
            }
            MeshMsg::StreamClaim { claim, stream } => {
                let granted = self.grant(&stream, peer);
                core.send_mesh(peer, MeshMsg::StreamClaimed { claim, granted });
            }
            MeshMsg::StreamClaimed { claim, granted } => {
                if let Some(slot) = self.claims.borrow().get(&claim) {
                    slot.answer.set(Some(granted));
                    slot.gate.open();
                }
            }
            MeshMsg::StreamRelease { stream } => {
                let mut owned = self.owned.borrow_mut();
                if owned.get(stream.as_ref()) == Some(&peer) {
                    owned.remove(stream.as_ref());
                }
            }
            other => warn!("stream hub got a message that is not its own: {other:?}"),
        }
    }

    /// Figures of every stream here.
    pub(crate) fn figures(&self, core: &Core) -> Vec<StreamFigures> {
        let mut out: Vec<StreamFigures> = self
            .streams
            .borrow()
            .values()
            .map(|s| s.figures(core))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Codec names and picture size from the publisher's tags, for figures.
fn note_codecs(p: &Publisher, tag: &MediaTag) {
    use shoal_protocols::flv::{scan_metadata, AudioTagInfo, VideoTagInfo};
    match tag.role {
        TagRole::VideoHeader => {
            if let Ok(info) = VideoTagInfo::parse(tag.data().as_slice()) {
                *p.video_codec.borrow_mut() = format!("{:?}", info.codec).to_lowercase();
            }
        }
        TagRole::AudioHeader => {
            if let Ok(info) = AudioTagInfo::parse(tag.data().as_slice()) {
                *p.audio_codec.borrow_mut() = format!("{:?}", info.codec).to_lowercase();
            }
        }
        TagRole::Metadata => {
            if let Ok(meta) = scan_metadata(tag.data().as_slice()) {
                p.width.set(meta.width.unwrap_or(0.0) as u32);
                p.height.set(meta.height.unwrap_or(0.0) as u32);
            }
        }
        _ => {}
    }
}

/// Compares secrets without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
