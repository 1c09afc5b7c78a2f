//! Observing resources (RFC 7641): the Observe option in requests and
//! notifications, sequence numbers and their freshness, and a registry of
//! observers keyed by the caller's peer id and the token.

use std::collections::HashMap;
use std::hash::Hash;

use super::header::{Code, Token};
use super::message::Message;
use super::CoapError;

/// Observe values are 24-bit.
pub const OBSERVE_MASK: u32 = 0x00FF_FFFF;

/// After this long a notification is fresher than the last one whatever
/// their sequence numbers (RFC 7641 §3.4).
pub const OBSERVE_FRESHNESS_MS: u64 = 128_000;

/// What a GET (or FETCH) asks with its Observe option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveRequest {
    /// Observe 0: add (or refresh) the client to the observers.
    Register,
    /// Observe 1: remove it.
    Deregister,
}

impl Message<'_> {
    /// The registration or deregistration a GET or FETCH asks for with its
    /// Observe option; `None` for other methods, no option, or a value other
    /// than 0 and 1 (then it is a plain request).
    pub fn observe_request(&self) -> Option<ObserveRequest> {
        if self.code != Code::GET && self.code != Code::FETCH {
            return None;
        }
        match self.observe()? {
            0 => Some(ObserveRequest::Register),
            1 => Some(ObserveRequest::Deregister),
            _ => None,
        }
    }
}

/// Whether a notification numbered `new` received at `new_ms` is fresher
/// than one numbered `old` received at `old_ms` (RFC 7641 §3.4): its number
/// is ahead by less than 2^23 in 24-bit serial arithmetic, or more than 128
/// seconds passed. Values are taken modulo 2^24.
pub fn is_fresher(old: u32, old_ms: u64, new: u32, new_ms: u64) -> bool {
    let (v1, v2) = (old & OBSERVE_MASK, new & OBSERVE_MASK);
    let ahead = (v1 < v2 && v2 - v1 < 1 << 23) || (v1 > v2 && v1 - v2 > 1 << 23);
    ahead || new_ms > old_ms.saturating_add(OBSERVE_FRESHNESS_MS)
}

/// The Observe value of the next notification after `previous`, at
/// `now_ms`: the clock's low 24 bits of milliseconds when that is ahead of
/// `previous` (so values also grow across re-registrations), `previous + 1`
/// otherwise. Each value is fresher than the one before (RFC 7641 §4.4).
pub fn next_observe_value(previous: Option<u32>, now_ms: u64) -> u32 {
    let clock = (now_ms & u64::from(OBSERVE_MASK)) as u32;
    match previous {
        None => clock,
        Some(previous) if is_fresher(previous, 0, clock, 0) => clock,
        Some(previous) => previous.wrapping_add(1) & OBSERVE_MASK,
    }
}

/// Limits of an [`ObserverRegistry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Most observations in all (default 65 536).
    pub max_observers: usize,
    /// Most observations per peer (default 16).
    pub max_per_peer: usize,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            max_observers: 65_536,
            max_per_peer: 16,
        }
    }
}

/// Whether [`ObserverRegistry::register`] added an observer or refreshed
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new observer; send the response with this Observe value.
    Added {
        /// The Observe value of the registration's response.
        observe: u32,
    },
    /// The same peer and token were registered already (RFC 7641 §4.1:
    /// replaced, not added); send the response with this Observe value.
    Replaced {
        /// The Observe value of the registration's response.
        observe: u32,
    },
}

impl Registered {
    /// The Observe value to put in the registration's response.
    pub fn observe(self) -> u32 {
        match self {
            Self::Added { observe } | Self::Replaced { observe } => observe,
        }
    }
}

#[derive(Debug)]
struct Observation<R> {
    resource: R,
    last_value: u32,
}

/// Who observes what: observations keyed by the caller's peer id `P` and
/// the token, each on a resource `R` of the caller's (a device id, a path).
/// Transport-agnostic; bounded globally and per peer (a registration beyond
/// a bound is refused with [`CoapError::ObserversFull`]: answer the GET
/// without Observe, RFC 7641 §4.1).
#[derive(Debug)]
pub struct ObserverRegistry<P, R> {
    config: ObserveConfig,
    observations: HashMap<(P, Token), Observation<R>>,
    by_resource: HashMap<R, Vec<(P, Token)>>,
    per_peer: HashMap<P, usize>,
}

impl<P: Eq + Hash + Clone, R: Eq + Hash + Clone> ObserverRegistry<P, R> {
    /// An empty registry.
    pub fn new(config: ObserveConfig) -> Self {
        Self {
            config,
            observations: HashMap::new(),
            by_resource: HashMap::new(),
            per_peer: HashMap::new(),
        }
    }

    /// Observations now.
    pub fn len(&self) -> usize {
        self.observations.len()
    }

    /// Whether there is no observation.
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }

    /// Registers `peer` with `token` as an observer of `resource` at
    /// `now_ms` (a GET with Observe 0). Same peer and token again: replaced
    /// (possibly moved to another resource).
    pub fn register(
        &mut self,
        now_ms: u64,
        peer: &P,
        token: Token,
        resource: R,
    ) -> Result<Registered, CoapError> {
        let key = (peer.clone(), token);
        if let Some(old) = self.observations.get(&key) {
            let previous = old.last_value;
            let old_resource = old.resource.clone();
            if old_resource != resource {
                self.unindex(&old_resource, &key);
                self.by_resource
                    .entry(resource.clone())
                    .or_default()
                    .push(key.clone());
            }
            let observe = next_observe_value(Some(previous), now_ms);
            if let Some(observation) = self.observations.get_mut(&key) {
                observation.resource = resource;
                observation.last_value = observe;
            }
            return Ok(Registered::Replaced { observe });
        }
        let of_peer = self.per_peer.get(peer).copied().unwrap_or(0);
        if self.observations.len() >= self.config.max_observers
            || of_peer >= self.config.max_per_peer
        {
            return Err(CoapError::ObserversFull {
                limit: if of_peer >= self.config.max_per_peer {
                    self.config.max_per_peer
                } else {
                    self.config.max_observers
                },
            });
        }
        let observe = next_observe_value(None, now_ms);
        self.by_resource
            .entry(resource.clone())
            .or_default()
            .push(key.clone());
        self.observations.insert(
            key,
            Observation {
                resource,
                last_value: observe,
            },
        );
        *self.per_peer.entry(peer.clone()).or_default() += 1;
        Ok(Registered::Added { observe })
    }

    /// Removes an observation (a GET with Observe 1, an RST to a
    /// notification, a notification given up); returns its resource.
    pub fn deregister(&mut self, peer: &P, token: Token) -> Option<R> {
        let key = (peer.clone(), token);
        let observation = self.observations.remove(&key)?;
        self.unindex(&observation.resource, &key);
        if let Some(count) = self.per_peer.get_mut(peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_peer.remove(peer);
            }
        }
        Some(observation.resource)
    }

    /// Removes every observation of `peer`; returns how many.
    pub fn remove_peer(&mut self, peer: &P) -> usize {
        let tokens: Vec<Token> = self
            .observations
            .keys()
            .filter(|(p, _)| p == peer)
            .map(|(_, token)| *token)
            .collect();
        for token in &tokens {
            self.deregister(peer, *token);
        }
        tokens.len()
    }

    /// The resource `peer` observes with `token`.
    pub fn resource(&self, peer: &P, token: Token) -> Option<&R> {
        self.observations
            .get(&(peer.clone(), token))
            .map(|observation| &observation.resource)
    }

    /// The observers of `resource` (peer and token), in registration order.
    pub fn observers(&self, resource: &R) -> impl Iterator<Item = (&P, Token)> + '_ {
        self.by_resource
            .get(resource)
            .into_iter()
            .flatten()
            .map(|(peer, token)| (peer, *token))
    }

    /// The Observe value of the next notification to `peer` for `token` at
    /// `now_ms` (see [`next_observe_value`]), `None` if there is no such
    /// observation.
    pub fn next_notification(&mut self, now_ms: u64, peer: &P, token: Token) -> Option<u32> {
        let observation = self.observations.get_mut(&(peer.clone(), token))?;
        let value = next_observe_value(Some(observation.last_value), now_ms);
        observation.last_value = value;
        Some(value)
    }

    fn unindex(&mut self, resource: &R, key: &(P, Token)) {
        if let Some(list) = self.by_resource.get_mut(resource) {
            list.retain(|entry| entry != key);
            if list.is_empty() {
                self.by_resource.remove(resource);
            }
        }
    }
}
