//! The per-core bus: local subscribers, and the interest other cores have.
//!
//! Local subscribers sit in a [`TopicTree`]. Every change that makes a
//! filter appear or disappear on this core is marked dirty and announced to
//! the other cores by the interest task ([`crate::core::Core`]); each core
//! keeps, per peer, the set of filters that peer has subscribers for, so a
//! message crosses to a peer once, and only when the peer wants it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use shoal_protocols::topic::TopicTree;

use crate::message::Message;

/// Something on this core that takes messages off the bus.
pub(crate) trait Deliver {
    /// Hands over `msg`; must not block.
    fn deliver(&self, msg: &Message);
}

/// A local subscription handle.
pub(crate) type Subscriber = Rc<dyn Deliver>;

/// Prefix of the interest announcement of a shared subscription group:
/// `$share/{group}/{filter}`.
const SHARE_PREFIX: &str = "$share/";

/// Where one message for a shared subscription group goes.
pub(crate) enum SharedTarget {
    /// A member on this core.
    Local(Subscriber),
    /// Peer core `peer`, which picks one of its members of `group`.
    Peer { peer: usize, group: Rc<str> },
}

/// The shared subscription groups of this core and their members.
#[derive(Default)]
struct SharedGroups {
    /// Inner filter → group key (`{group}/{filter}`).
    tree: TopicTree<Rc<str>>,
    members: HashMap<Rc<str>, Vec<Subscriber>>,
    /// Next pick per group key (round robin over members and peers).
    next: HashMap<Rc<str>, usize>,
}

/// One core's subscriber table and its view of the other cores' interest.
pub(crate) struct Bus {
    local: RefCell<TopicTree<Subscriber>>,
    /// Local subscriptions per filter, to know when one appears or goes.
    filter_refs: RefCell<HashMap<Box<str>, u32>>,
    /// Filters whose presence changed since the last announcement.
    dirty: RefCell<Vec<Box<str>>>,
    /// Per peer core (mesh index): the filters it has subscribers for.
    remote: RefCell<Vec<RemoteInterest>>,
    /// Whether other cores exist to tell about interest changes.
    has_peers: bool,
    /// Reused list of the subscribers matching one message.
    scratch: RefCell<Vec<Subscriber>>,
    shared: RefCell<SharedGroups>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("local", &self.local.borrow().len())
            .field("filters", &self.filter_refs.borrow().len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct RemoteInterest {
    filters: HashSet<Box<str>>,
    tree: TopicTree<()>,
    /// Shared groups the peer has members of, by inner filter.
    shared: TopicTree<Rc<str>>,
}

impl Bus {
    pub(crate) fn new(peers: usize) -> Self {
        Self {
            local: RefCell::new(TopicTree::new()),
            filter_refs: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            remote: RefCell::new((0..peers).map(|_| RemoteInterest::default()).collect()),
            scratch: RefCell::new(Vec::new()),
            shared: RefCell::new(SharedGroups::default()),
            has_peers: peers > 1,
        }
    }

    /// Adds a local subscriber for `filter` (validated by the caller).
    pub(crate) fn subscribe(&self, filter: &str, subscriber: Subscriber) {
        self.local.borrow_mut().insert(filter, subscriber);
        let mut refs = self.filter_refs.borrow_mut();
        let count = refs.entry(filter.into()).or_insert(0);
        *count += 1;
        if *count == 1 && self.has_peers {
            self.dirty.borrow_mut().push(filter.into());
        }
    }

    /// Removes the subscription of `subscriber` under `filter`.
    pub(crate) fn unsubscribe(&self, filter: &str, subscriber: &Subscriber) -> bool {
        let removed = self
            .local
            .borrow_mut()
            .remove_first(filter, |s| Rc::ptr_eq(s, subscriber))
            .is_some();
        if removed {
            let mut refs = self.filter_refs.borrow_mut();
            if let Some(count) = refs.get_mut(filter) {
                *count -= 1;
                if *count == 0 {
                    refs.remove(filter);
                    if self.has_peers {
                        self.dirty.borrow_mut().push(filter.into());
                    }
                }
            }
        }
        removed
    }

    fn count_filter(&self, filter: &str, delta: i32) {
        let mut refs = self.filter_refs.borrow_mut();
        let count = refs.entry(filter.into()).or_insert(0);
        let was = *count;
        *count = count.saturating_add_signed(delta);
        let now = *count;
        if now == 0 {
            refs.remove(filter);
        }
        if (was == 0) != (now == 0) && self.has_peers {
            self.dirty.borrow_mut().push(filter.into());
        }
    }

    /// Adds `subscriber` to shared subscription group `group` of `filter`.
    pub(crate) fn subscribe_shared(&self, group: &str, filter: &str, subscriber: Subscriber) {
        let key: Rc<str> = format!("{group}/{filter}").into();
        let mut shared = self.shared.borrow_mut();
        let first = !shared.members.contains_key(&key);
        shared
            .members
            .entry(Rc::clone(&key))
            .or_default()
            .push(subscriber);
        if first {
            shared.tree.insert(filter, Rc::clone(&key));
            drop(shared);
            self.count_filter(&format!("{SHARE_PREFIX}{key}"), 1);
        }
    }

    /// Removes `subscriber` from the group; whether it was a member.
    pub(crate) fn unsubscribe_shared(
        &self,
        group: &str,
        filter: &str,
        subscriber: &Subscriber,
    ) -> bool {
        let key = format!("{group}/{filter}");
        let mut shared = self.shared.borrow_mut();
        let Some(members) = shared.members.get_mut(key.as_str()) else {
            return false;
        };
        let Some(at) = members.iter().position(|m| Rc::ptr_eq(m, subscriber)) else {
            return false;
        };
        members.remove(at);
        if members.is_empty() {
            shared.members.remove(key.as_str());
            shared.next.remove(key.as_str());
            shared.tree.remove_first(filter, |k| **k == *key);
            drop(shared);
            self.count_filter(&format!("{SHARE_PREFIX}{key}"), -1);
        }
        true
    }

    /// For each shared group with a member (here or on a peer) whose
    /// filter matches `topic`, picks where the message goes: the members
    /// here and the peers that have members take turns.
    pub(crate) fn shared_targets(&self, topic: &str, mut f: impl FnMut(SharedTarget)) {
        let mut keys: Vec<Rc<str>> = Vec::new();
        self.shared
            .borrow()
            .tree
            .for_each_match(topic, |k| keys.push(Rc::clone(k)));
        let mut peers: Vec<(usize, Rc<str>)> = Vec::new();
        for (peer, r) in self.remote.borrow().iter().enumerate() {
            r.shared
                .for_each_match(topic, |k| peers.push((peer, Rc::clone(k))));
        }
        if keys.is_empty() && peers.is_empty() {
            return;
        }
        for (_, k) in &peers {
            if !keys.contains(k) {
                keys.push(Rc::clone(k));
            }
        }
        for key in keys {
            let target = {
                let mut shared = self.shared.borrow_mut();
                let local = shared.members.get(&key).map_or(0, Vec::len);
                let remote: Vec<usize> = peers
                    .iter()
                    .filter(|(_, k)| *k == key)
                    .map(|(p, _)| *p)
                    .collect();
                let slots = local + remote.len();
                let next = shared.next.entry(Rc::clone(&key)).or_insert(0);
                let pick = *next % slots.max(1);
                *next = next.wrapping_add(1);
                if pick < local {
                    shared
                        .members
                        .get(&key)
                        .and_then(|m| m.get(pick))
                        .map(|s| SharedTarget::Local(Rc::clone(s)))
                } else {
                    remote.get(pick - local).map(|peer| SharedTarget::Peer {
                        peer: *peer,
                        group: Rc::clone(&key),
                    })
                }
            };
            if let Some(t) = target {
                f(t);
            }
        }
    }

    /// One local member of group `key` (`{group}/{filter}`), in turn.
    pub(crate) fn pick_shared_member(&self, key: &str) -> Option<Subscriber> {
        let mut shared = self.shared.borrow_mut();
        let len = shared.members.get(key).map_or(0, Vec::len);
        if len == 0 {
            return None;
        }
        let key: Rc<str> = shared
            .members
            .get_key_value(key)
            .map(|(k, _)| Rc::clone(k))?;
        let next = shared.next.entry(Rc::clone(&key)).or_insert(0);
        let pick = *next % len;
        *next = next.wrapping_add(1);
        shared.members.get(&key).and_then(|m| m.get(pick)).cloned()
    }

    /// Calls `f` for each local subscriber matching `topic`. Subscribers
    /// are collected first (into a reused list, no allocation once warm) so
    /// that a delivery may change the table.
    pub(crate) fn for_each_local(&self, topic: &str, mut f: impl FnMut(&Subscriber)) {
        // A delivery that publishes again finds the list taken and uses a
        // fresh one.
        let mut matched = std::mem::take(&mut *self.scratch.borrow_mut());
        self.local
            .borrow()
            .for_each_match(topic, |s| matched.push(Rc::clone(s)));
        for s in &matched {
            f(s);
        }
        matched.clear();
        let mut scratch = self.scratch.borrow_mut();
        if scratch.capacity() < matched.capacity() {
            *scratch = matched;
        }
    }

    /// Local subscriptions.
    #[cfg(test)]
    pub(crate) fn local_len(&self) -> usize {
        self.local.borrow().len()
    }

    /// Whether peer core `peer` has a subscriber for `topic`.
    pub(crate) fn peer_wants(&self, peer: usize, topic: &str) -> bool {
        self.remote
            .borrow()
            .get(peer)
            .is_some_and(|r| r.tree.any_match(topic))
    }

    /// Takes the filters whose presence changed, each with whether it is
    /// present now.
    pub(crate) fn take_interest_changes(&self) -> Vec<(Box<str>, bool)> {
        let mut dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        dirty.sort_unstable();
        dirty.dedup();
        let refs = self.filter_refs.borrow();
        dirty
            .into_iter()
            .map(|f| {
                let present = refs.contains_key(&f);
                (f, present)
            })
            .collect()
    }

    /// Whether announcements are pending.
    pub(crate) fn has_interest_changes(&self) -> bool {
        !self.dirty.borrow().is_empty()
    }

    /// Records a peer's announcement. Announcements carry the state, not a
    /// delta, so a repeated one changes nothing.
    pub(crate) fn apply_peer_interest(&self, peer: usize, filter: Box<str>, present: bool) {
        let mut remote = self.remote.borrow_mut();
        let Some(r) = remote.get_mut(peer) else {
            return;
        };
        if let Some(key) = filter.strip_prefix(SHARE_PREFIX) {
            let Some((_, inner)) = key.split_once('/') else {
                return;
            };
            let key: Rc<str> = key.into();
            if present {
                if r.filters.insert(filter.clone()) {
                    r.shared.insert(inner, key);
                }
            } else if r.filters.remove(&filter) {
                r.shared.remove_first(inner, |k| *k == key);
            }
            return;
        }
        if present {
            if !r.filters.contains(&filter) {
                r.tree.insert(&filter, ());
                r.filters.insert(filter);
            }
        } else if r.filters.remove(&filter) {
            r.tree.remove_first(&filter, |_| true);
        }
    }

    /// Filters peer `peer` is interested in.
    #[cfg(test)]
    pub(crate) fn peer_interest_len(&self, peer: usize) -> usize {
        self.remote
            .borrow()
            .get(peer)
            .map_or(0, |r| r.filters.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use crate::message::Origin;
    use crate::pool::{Payload, SlabPool};
    use shoal_protocols::config::PoolSettings;

    #[derive(Debug, Default)]
    struct Counter(Cell<u32>);
    impl Deliver for Counter {
        fn deliver(&self, _msg: &Message) {
            self.0.set(self.0.get() + 1);
        }
    }

    fn msg(pool: &SlabPool, topic: &str) -> Message {
        let mut b = pool.try_acquire(4).unwrap();
        b.extend_from_slice(b"data");
        Message {
            topic: topic.into(),
            payload: Payload::whole(b),
            qos: 0,
            retain: false,
            origin: Origin::default(),
            hops: 0,
            props: None,
        }
    }

    #[test]
    fn interest_changes_only_on_first_and_last_subscriber() {
        let bus = Bus::new(2);
        let a: Subscriber = Rc::new(Counter::default());
        let b: Subscriber = Rc::new(Counter::default());
        bus.subscribe("devices/+/down", Rc::clone(&a));
        bus.subscribe("devices/+/down", Rc::clone(&b));
        assert_eq!(
            bus.take_interest_changes(),
            vec![("devices/+/down".into(), true)]
        );
        assert!(bus.unsubscribe("devices/+/down", &a));
        assert!(!bus.has_interest_changes());
        assert!(bus.unsubscribe("devices/+/down", &b));
        assert!(!bus.unsubscribe("devices/+/down", &b));
        assert_eq!(
            bus.take_interest_changes(),
            vec![("devices/+/down".into(), false)]
        );
        assert_eq!(bus.local_len(), 0);
    }

    #[test]
    fn a_single_core_keeps_no_interest_changes() {
        let bus = Bus::new(1);
        let a: Subscriber = Rc::new(Counter::default());
        for _ in 0..3 {
            bus.subscribe("x", Rc::clone(&a));
            bus.unsubscribe("x", &a);
        }
        assert!(!bus.has_interest_changes());
    }

    #[test]
    fn a_flapping_filter_announces_its_final_state_once() {
        let bus = Bus::new(2);
        let a: Subscriber = Rc::new(Counter::default());
        bus.subscribe("x", Rc::clone(&a));
        bus.unsubscribe("x", &a);
        bus.subscribe("x", Rc::clone(&a));
        assert_eq!(bus.take_interest_changes(), vec![("x".into(), true)]);
    }

    #[test]
    fn peer_interest_is_idempotent_state() {
        let bus = Bus::new(3);
        bus.apply_peer_interest(1, "devices/b/down".into(), true);
        bus.apply_peer_interest(1, "devices/b/down".into(), true);
        assert!(bus.peer_wants(1, "devices/b/down"));
        assert!(!bus.peer_wants(2, "devices/b/down"));
        assert!(!bus.peer_wants(1, "devices/c/down"));
        bus.apply_peer_interest(1, "devices/b/down".into(), false);
        assert!(!bus.peer_wants(1, "devices/b/down"));
        assert_eq!(bus.peer_interest_len(1), 0);
        // Out-of-range peers are ignored.
        bus.apply_peer_interest(9, "x".into(), true);
    }

    #[test]
    fn local_delivery_follows_topic_filters() {
        let pool = SlabPool::new(&PoolSettings::default());
        let bus = Bus::new(1);
        let exact = Rc::new(Counter::default());
        let wild = Rc::new(Counter::default());
        bus.subscribe("devices/a/down", exact.clone());
        bus.subscribe("devices/#", wild.clone());
        for topic in ["devices/a/down", "devices/b/down", "other"] {
            let m = msg(&pool, topic);
            bus.for_each_local(&m.topic, |s| s.deliver(&m));
        }
        assert_eq!(exact.0.get(), 1);
        assert_eq!(wild.0.get(), 2);
    }
}
