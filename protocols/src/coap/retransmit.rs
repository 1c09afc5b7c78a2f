//! Reliability of the CON messages Shoal sends (RFC 7252 §4.2, §4.7):
//! retransmission with exponential back-off until an ACK or RST, a bound on
//! outstanding CONs per peer (NSTART), and message ids.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use super::header::{MessageType, Token};
use super::message::decode;
use super::{CoapError, ACK_RANDOM_FACTOR, ACK_TIMEOUT_MS, MAX_RETRANSMIT, NSTART};

/// Transmission parameters of a [`Retransmitter`] (RFC 7252 §4.8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetransmitConfig {
    /// ACK_TIMEOUT (default 2 s): the first timeout is between this and
    /// this × `ack_random_factor`.
    pub ack_timeout_ms: u64,
    /// ACK_RANDOM_FACTOR (default 1.5; values below 1 count as 1).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT (default 4): retransmissions before giving up.
    pub max_retransmit: u8,
    /// NSTART (default 1): most CONs outstanding to one peer; more are
    /// refused with [`CoapError::PeerBusy`] (queue them, or send NON).
    pub nstart: usize,
    /// Most CONs outstanding in all (default 4096); more are refused with
    /// [`CoapError::RetransmitFull`].
    pub max_outstanding: usize,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            ack_timeout_ms: ACK_TIMEOUT_MS,
            ack_random_factor: ACK_RANDOM_FACTOR,
            max_retransmit: MAX_RETRANSMIT,
            nstart: NSTART,
            max_outstanding: 4096,
        }
    }
}

impl RetransmitConfig {
    /// The first timeout for a random fraction in `[0, 1]` (clamped; NaN
    /// counts as 0): ACK_TIMEOUT × (1 + fraction × (ACK_RANDOM_FACTOR − 1)).
    pub fn initial_timeout_ms(&self, random_fraction: f64) -> u64 {
        let fraction = if random_fraction.is_nan() {
            0.0
        } else {
            random_fraction.clamp(0.0, 1.0)
        };
        let spread = (self.ack_random_factor - 1.0).max(0.0);
        let timeout = self.ack_timeout_ms as f64 * (1.0 + fraction * spread);
        timeout as u64
    }
}

/// Counters of a [`Retransmitter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetransmitFigures {
    /// CONs outstanding now.
    pub outstanding: usize,
    /// CONs taken by [`Retransmitter::send`].
    pub sent: u64,
    /// Retransmissions handed out by [`Retransmitter::poll`].
    pub retransmitted: u64,
    /// CONs acknowledged.
    pub acked: u64,
    /// CONs answered with RST.
    pub reset: u64,
    /// CONs given up after MAX_RETRANSMIT retransmissions.
    pub gave_up: u64,
    /// Sends refused (NSTART reached, table full, id in use).
    pub refused: u64,
}

/// What [`Retransmitter::poll`] asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetransmitEvent<'a, P> {
    /// Send these bytes to the peer again.
    Retransmit {
        /// The peer.
        peer: &'a P,
        /// The message id.
        message_id: u16,
        /// The message, as it was given to [`Retransmitter::send`].
        bytes: &'a [u8],
        /// How many times it has been retransmitted now (1 to MAX_RETRANSMIT).
        attempt: u8,
    },
    /// No ACK came: the message is dropped. An observer (RFC 7641 §4.5) may
    /// be removed, the peer considered gone.
    GaveUp {
        /// The peer.
        peer: P,
        /// The message id.
        message_id: u16,
        /// The message's token (identifies an observation).
        token: Token,
    },
}

#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    token: Token,
    retransmits: u8,
    timeout_ms: u64,
    generation: u64,
}

/// A timer in the heap; stale when its generation is not the pending
/// message's any more.
#[derive(Debug)]
struct Timer<P> {
    deadline_ms: u64,
    generation: u64,
    peer: P,
    message_id: u16,
}

impl<P> PartialEq for Timer<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline_ms, self.generation) == (other.deadline_ms, other.generation)
    }
}

impl<P> Eq for Timer<P> {}

impl<P> PartialOrd for Timer<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for Timer<P> {
    /// Earliest deadline first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline_ms, other.generation).cmp(&(self.deadline_ms, self.generation))
    }
}

/// Retransmits the CONs Shoal sends (notifications, separate responses)
/// until they are acknowledged, reset, or given up.
///
/// Hand every CON to [`send`](Self::send) as it goes out, every empty ACK
/// and RST received to [`on_ack`](Self::on_ack) / [`on_rst`](Self::on_rst)
/// (a piggybacked ACK too, for CON requests Shoal sends), and call
/// [`poll`](Self::poll) when [`poll_timeout`](Self::poll_timeout) is due.
/// Randomness is the caller's: a fraction in `[0, 1]` per message.
#[derive(Debug)]
pub struct Retransmitter<P> {
    config: RetransmitConfig,
    pending: HashMap<(P, u16), Pending>,
    per_peer: HashMap<P, usize>,
    timers: BinaryHeap<Timer<P>>,
    next_generation: u64,
    figures: RetransmitFigures,
}

impl<P: Eq + Hash + Clone> Retransmitter<P> {
    /// An empty retransmitter (an `nstart` of 0 counts as 1).
    pub fn new(mut config: RetransmitConfig) -> Self {
        config.nstart = config.nstart.max(1);
        Self {
            config,
            pending: HashMap::new(),
            per_peer: HashMap::new(),
            timers: BinaryHeap::new(),
            next_generation: 0,
            figures: RetransmitFigures::default(),
        }
    }

    /// The parameters in force.
    pub fn config(&self) -> &RetransmitConfig {
        &self.config
    }

    /// Counters and gauges.
    pub fn figures(&self) -> RetransmitFigures {
        RetransmitFigures {
            outstanding: self.pending.len(),
            ..self.figures
        }
    }

    /// CONs outstanding to `peer`.
    pub fn outstanding(&self, peer: &P) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Whether another CON may be sent to `peer` now (NSTART and the table
    /// bound).
    pub fn can_send(&self, peer: &P) -> bool {
        self.outstanding(peer) < self.config.nstart
            && self.pending.len() < self.config.max_outstanding
    }

    /// Takes a CON that is being sent to `peer` at `now_ms` (the caller
    /// sends it itself) and keeps a copy for retransmission; returns its
    /// message id. Refused: not a CON message ([`CoapError::NotConfirmable`]),
    /// NSTART reached ([`CoapError::PeerBusy`]), the table full
    /// ([`CoapError::RetransmitFull`]), its id already outstanding
    /// ([`CoapError::MessageIdInUse`]).
    pub fn send(
        &mut self,
        now_ms: u64,
        peer: &P,
        message: &[u8],
        random_fraction: f64,
    ) -> Result<u16, CoapError> {
        let decoded = match decode(message) {
            Ok(decoded) if decoded.mtype == MessageType::Confirmable => decoded,
            _ => return Err(CoapError::NotConfirmable),
        };
        let outstanding = self.outstanding(peer);
        let refusal = if outstanding >= self.config.nstart {
            Some(CoapError::PeerBusy { outstanding })
        } else if self.pending.len() >= self.config.max_outstanding {
            Some(CoapError::RetransmitFull {
                limit: self.config.max_outstanding,
            })
        } else if self
            .pending
            .contains_key(&(peer.clone(), decoded.message_id))
        {
            Some(CoapError::MessageIdInUse {
                message_id: decoded.message_id,
            })
        } else {
            None
        };
        if let Some(error) = refusal {
            self.figures.refused += 1;
            return Err(error);
        }
        let timeout_ms = self.config.initial_timeout_ms(random_fraction);
        let generation = self.generation();
        self.timers.push(Timer {
            deadline_ms: now_ms.saturating_add(timeout_ms),
            generation,
            peer: peer.clone(),
            message_id: decoded.message_id,
        });
        self.pending.insert(
            (peer.clone(), decoded.message_id),
            Pending {
                bytes: message.to_vec(),
                token: decoded.token,
                retransmits: 0,
                timeout_ms,
                generation,
            },
        );
        *self.per_peer.entry(peer.clone()).or_default() += 1;
        self.figures.sent += 1;
        Ok(decoded.message_id)
    }

    /// An ACK for `message_id` came from `peer`: stop retransmitting.
    /// Returns the message's token, `None` if it was not outstanding (a
    /// duplicate or late ACK, to ignore).
    pub fn on_ack(&mut self, peer: &P, message_id: u16) -> Option<Token> {
        let token = self.remove(peer, message_id)?;
        self.figures.acked += 1;
        Some(token)
    }

    /// An RST for `message_id` came from `peer`: stop retransmitting; the
    /// peer rejected the message (for a notification: the observation is
    /// cancelled, RFC 7641 §3.6). Returns the token, `None` if it was not
    /// outstanding.
    pub fn on_rst(&mut self, peer: &P, message_id: u16) -> Option<Token> {
        let token = self.remove(peer, message_id)?;
        self.figures.reset += 1;
        Some(token)
    }

    /// The next retransmission or give-up due at `now_ms`, `None` when
    /// nothing is due. Call it until it returns `None`.
    pub fn poll(&mut self, now_ms: u64) -> Option<RetransmitEvent<'_, P>> {
        loop {
            if self.timers.peek()?.deadline_ms > now_ms {
                return None;
            }
            let timer = self.timers.pop()?;
            let key = (timer.peer, timer.message_id);
            let max_retransmit = self.config.max_retransmit;
            let Some(pending) = self.pending.get_mut(&key) else {
                continue;
            };
            if pending.generation != timer.generation {
                continue;
            }
            if pending.retransmits >= max_retransmit {
                let token = pending.token;
                self.remove(&key.0, key.1);
                self.figures.gave_up += 1;
                return Some(RetransmitEvent::GaveUp {
                    peer: key.0,
                    message_id: key.1,
                    token,
                });
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            pending.retransmits += 1;
            pending.timeout_ms = pending.timeout_ms.saturating_mul(2);
            pending.generation = generation;
            self.timers.push(Timer {
                deadline_ms: now_ms.saturating_add(pending.timeout_ms),
                generation,
                peer: key.0.clone(),
                message_id: key.1,
            });
            self.figures.retransmitted += 1;
            let (stored_key, pending) = self.pending.get_key_value(&key)?;
            return Some(RetransmitEvent::Retransmit {
                peer: &stored_key.0,
                message_id: stored_key.1,
                bytes: &pending.bytes,
                attempt: pending.retransmits,
            });
        }
    }

    /// When [`poll`](Self::poll) should be called next (milliseconds, the
    /// caller's clock), `None` when nothing is outstanding. May be early
    /// (a timer of a message acknowledged since), never late.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek().map(|timer| timer.deadline_ms)
    }

    /// Drops every CON outstanding to `peer`; returns how many.
    pub fn remove_peer(&mut self, peer: &P) -> usize {
        let before = self.pending.len();
        self.pending.retain(|(p, _), _| p != peer);
        self.per_peer.remove(peer);
        self.compact_timers();
        before - self.pending.len()
    }

    #[cfg(test)]
    pub(super) fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    fn remove(&mut self, peer: &P, message_id: u16) -> Option<Token> {
        let pending = self.pending.remove(&(peer.clone(), message_id))?;
        if let Some(count) = self.per_peer.get_mut(peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_peer.remove(peer);
            }
        }
        self.compact_timers();
        Some(pending.token)
    }

    /// Timers of removed messages stay in the heap until due; rebuild it
    /// when they outnumber the live ones, so it stays bounded.
    fn compact_timers(&mut self) {
        if self.timers.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.timers.retain(|timer| {
                pending
                    .get(&(timer.peer.clone(), timer.message_id))
                    .is_some_and(|p| p.generation == timer.generation)
            });
        }
    }
}

/// Message ids for one peer (RFC 7252 §4.4): a counter from a random
/// start. Keep one per peer; an id comes back after 65 536 messages, so a
/// peer must not be sent more than that within EXCHANGE_LIFETIME (about
/// 265 messages a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageIdCounter(u16);

impl MessageIdCounter {
    /// A counter starting at `start` (pass a random number).
    pub fn new(start: u16) -> Self {
        Self(start)
    }

    /// The next id.
    pub fn next_id(&mut self) -> u16 {
        let id = self.0;
        self.0 = self.0.wrapping_add(1);
        id
    }
}
