//! Message deduplication (RFC 7252 §4.5): remembers the CON and NON
//! messages of each peer by message id, and the answer sent to each CON, so
//! that a retransmitted CON gets the same answer again without being
//! processed twice.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use super::header::MessageType;
use super::{EXCHANGE_LIFETIME_MS, NON_LIFETIME_MS};

/// Limits of a [`Deduplicator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long a CON is remembered (default EXCHANGE_LIFETIME, 247 s).
    pub exchange_lifetime_ms: u64,
    /// How long a NON is remembered (default NON_LIFETIME, 145 s).
    pub non_lifetime_ms: u64,
    /// Most messages remembered per peer (default 64); the peer's oldest is
    /// forgotten to make room.
    pub max_per_peer: usize,
    /// Most messages remembered in all (default 65 536); the oldest of all
    /// peers is forgotten to make room.
    pub max_entries: usize,
    /// Largest answer kept for replay (default 1152 bytes, the message size
    /// RFC 7252 §4.6 recommends); a larger one is not kept and a duplicate
    /// then gets no answer.
    pub max_response_bytes: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            exchange_lifetime_ms: EXCHANGE_LIFETIME_MS,
            non_lifetime_ms: NON_LIFETIME_MS,
            max_per_peer: 64,
            max_entries: 65_536,
            max_response_bytes: 1152,
        }
    }
}

/// Counters of a [`Deduplicator`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupFigures {
    /// Messages remembered now.
    pub entries: usize,
    /// Duplicates recognised.
    pub duplicates: u64,
    /// Messages forgotten early because their peer had `max_per_peer`.
    pub evicted_per_peer: u64,
    /// Messages forgotten early because the table had `max_entries`.
    pub evicted_global: u64,
    /// Messages forgotten at the end of their lifetime.
    pub expired: u64,
    /// Answers over `max_response_bytes`, not kept.
    pub responses_not_kept: u64,
}

/// What [`Deduplicator::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not seen before (now remembered): process it.
    New,
    /// A duplicate: do not process it again. Send `response` again if there
    /// is one (the ACK, piggybacked response or RST given to the CON);
    /// otherwise (a NON, or a CON still being processed, or an answer too
    /// large to keep) drop it.
    Duplicate {
        /// The answer recorded for the first copy.
        response: Option<&'a [u8]>,
    },
}

#[derive(Debug)]
struct Entry {
    message_id: u16,
    seq: u64,
    expires_ms: u64,
    response: Option<Box<[u8]>>,
}

#[derive(Debug)]
struct Marker<P> {
    peer: P,
    seq: u64,
    seen_ms: u64,
}

/// The deduplication window of every peer on one core.
///
/// `P` is whatever identifies a peer for the caller (a socket address, a
/// session id). Memory is bounded by `max_entries` entries of at most
/// `max_response_bytes` each: one queue in arrival order holds a marker per
/// remembered message, and is never longer than `max_entries`; when it is
/// full the oldest marker goes, and its message with it if still
/// remembered. Time is the caller's `now_ms` (a monotonic clock in
/// milliseconds).
#[derive(Debug)]
pub struct Deduplicator<P> {
    config: DedupConfig,
    peers: HashMap<P, VecDeque<Entry>>,
    order: VecDeque<Marker<P>>,
    next_seq: u64,
    now_ms: u64,
    figures: DedupFigures,
}

impl<P: Eq + Hash + Clone> Deduplicator<P> {
    /// An empty window (`max_per_peer` and `max_entries` of 0 count as 1).
    pub fn new(mut config: DedupConfig) -> Self {
        config.max_per_peer = config.max_per_peer.max(1);
        config.max_entries = config.max_entries.max(1);
        Self {
            config,
            peers: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            now_ms: 0,
            figures: DedupFigures::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Counters and gauges.
    pub fn figures(&self) -> DedupFigures {
        self.figures
    }

    /// Checks a CON or NON from `peer` and remembers it if it is new. ACK
    /// and RST are not deduplicated here (they go to the
    /// [`Retransmitter`](super::Retransmitter)): always [`Seen::New`].
    pub fn check(
        &mut self,
        now_ms: u64,
        peer: &P,
        mtype: MessageType,
        message_id: u16,
    ) -> Seen<'_> {
        let lifetime = match mtype {
            MessageType::Confirmable => self.config.exchange_lifetime_ms,
            MessageType::NonConfirmable => self.config.non_lifetime_ms,
            MessageType::Acknowledgement | MessageType::Reset => return Seen::New,
        };
        self.expire(now_ms);
        let now_ms = self.now_ms;
        let found = self.peers.get(peer).and_then(|window| {
            window
                .iter()
                .rposition(|entry| entry.message_id == message_id && entry.expires_ms > now_ms)
        });
        if let Some(at) = found {
            self.figures.duplicates += 1;
            let response = self
                .peers
                .get(peer)
                .and_then(|window| window.get(at))
                .and_then(|entry| entry.response.as_deref());
            return Seen::Duplicate { response };
        }

        // Forget what a new entry pushes out: an older entry with the same
        // id (expired), the peer's oldest, the oldest of all.
        if let Some(window) = self.peers.get_mut(peer) {
            if let Some(at) = window
                .iter()
                .position(|entry| entry.message_id == message_id)
            {
                window.remove(at);
                self.figures.entries -= 1;
                self.figures.expired += 1;
            }
            if window.len() >= self.config.max_per_peer && window.pop_front().is_some() {
                self.figures.entries -= 1;
                self.figures.evicted_per_peer += 1;
            }
        }
        while self.order.len() >= self.config.max_entries {
            let Some(marker) = self.order.pop_front() else {
                break;
            };
            if self.forget(&marker) {
                self.figures.evicted_global += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back(Marker {
            peer: peer.clone(),
            seq,
            seen_ms: now_ms,
        });
        self.peers
            .entry(peer.clone())
            .or_default()
            .push_back(Entry {
                message_id,
                seq,
                expires_ms: now_ms.saturating_add(lifetime),
                response: None,
            });
        self.figures.entries += 1;
        Seen::New
    }

    /// Records the answer sent to a CON checked before (an ACK with or
    /// without a piggybacked response, or an RST), for replay to its
    /// duplicates. Returns whether it was kept: not when the message is no
    /// longer remembered or the answer is over `max_response_bytes`.
    pub fn record_response(&mut self, peer: &P, message_id: u16, response: &[u8]) -> bool {
        let Some(entry) = self
            .peers
            .get_mut(peer)
            .and_then(|window| window.iter_mut().rev().find(|e| e.message_id == message_id))
        else {
            return false;
        };
        if response.len() > self.config.max_response_bytes {
            self.figures.responses_not_kept += 1;
            entry.response = None;
            return false;
        }
        entry.response = Some(response.into());
        true
    }

    /// Forgets the messages at the end of their lifetime. [`check`](Self::check)
    /// calls it; call it too when a core is idle, to free memory.
    pub fn expire(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let longest = self
            .config
            .exchange_lifetime_ms
            .max(self.config.non_lifetime_ms);
        while let Some(marker) = self.order.front() {
            if marker.seen_ms.saturating_add(longest) > self.now_ms {
                break;
            }
            let Some(marker) = self.order.pop_front() else {
                break;
            };
            if self.forget(&marker) {
                self.figures.expired += 1;
            }
        }
    }

    /// Forgets everything about `peer`; returns how many messages.
    pub fn remove_peer(&mut self, peer: &P) -> usize {
        let removed = self.peers.remove(peer).map_or(0, |window| window.len());
        self.figures.entries -= removed;
        removed
    }

    /// Removes the entry of a marker if it is still there.
    fn forget(&mut self, marker: &Marker<P>) -> bool {
        let Some(window) = self.peers.get_mut(&marker.peer) else {
            return false;
        };
        let Some(at) = window.iter().position(|entry| entry.seq == marker.seq) else {
            return false;
        };
        window.remove(at);
        if window.is_empty() {
            self.peers.remove(&marker.peer);
        }
        self.figures.entries -= 1;
        true
    }
}
