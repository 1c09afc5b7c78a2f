//! Retained messages: the last retained message of each topic, kept on
//! every core (each retained publish is sent to every core), delivered when
//! a subscription matches.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use crate::message::PublishProps;
use crate::pool::Payload;

/// A retained message. Its payload lives on the heap (it outlives any
/// read buffer).
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) payload: Payload,
    pub(crate) qos: u8,
    pub(crate) props: Option<Rc<PublishProps>>,
}

/// What a store refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreFull;

/// One core's retained messages, bounded in count and payload bytes.
#[derive(Debug)]
pub(crate) struct RetainedStore {
    by_topic: HashMap<Rc<str>, Retained>,
    bytes: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl RetainedStore {
    pub(crate) fn new(max_messages: u32, max_bytes: u64) -> Self {
        Self {
            by_topic: HashMap::new(),
            bytes: 0,
            max_messages: max_messages as usize,
            max_bytes,
        }
    }

    /// Applies new bounds (a config apply); what is kept stays.
    pub(crate) fn set_limits(&mut self, max_messages: u32, max_bytes: u64) {
        self.max_messages = max_messages as usize;
        self.max_bytes = max_bytes;
    }

    pub(crate) fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Keeps `msg` as `topic`'s retained message; an empty payload clears
    /// it. Refused past the bounds.
    pub(crate) fn set(&mut self, topic: &Rc<str>, msg: Retained) -> Result<(), StoreFull> {
        let old = self
            .by_topic
            .get(topic)
            .map_or(0, |r| r.payload.len() as u64);
        if msg.payload.len() == 0 {
            if self.by_topic.remove(topic).is_some() {
                self.bytes -= old;
            }
            return Ok(());
        }
        let new = msg.payload.len() as u64;
        let count_after = self.by_topic.len() + usize::from(!self.by_topic.contains_key(topic));
        if count_after > self.max_messages || self.bytes - old + new > self.max_bytes {
            return Err(StoreFull);
        }
        self.bytes = self.bytes - old + new;
        self.by_topic.insert(Rc::clone(topic), msg);
        Ok(())
    }

    /// Calls `f` for every retained message whose topic `filter` matches
    /// (and that has not expired).
    pub(crate) fn for_each_match(
        &self,
        filter: &str,
        now: Instant,
        mut f: impl FnMut(&Rc<str>, &Retained),
    ) {
        let live = |r: &Retained| {
            r.props
                .as_ref()
                .and_then(|p| p.expires_at)
                .is_none_or(|at| at > now)
        };
        if !shoal_protocols::topic::is_wildcard_filter(filter) {
            if let Some((topic, r)) = self.by_topic.get_key_value(filter) {
                if live(r) {
                    f(topic, r);
                }
            }
            return;
        }
        for (topic, r) in &self.by_topic {
            if live(r) && shoal_protocols::topic::filter_matches(filter, topic) {
                f(topic, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(bytes: &[u8]) -> Retained {
        Retained {
            payload: Payload::heap(bytes),
            qos: 1,
            props: None,
        }
    }

    #[test]
    fn set_replace_clear_and_bounds() {
        let mut store = RetainedStore::new(2, 10);
        let a: Rc<str> = "a/x".into();
        let b: Rc<str> = "a/y".into();
        let c: Rc<str> = "b".into();
        store.set(&a, msg(b"1234")).unwrap();
        store.set(&a, msg(b"12345")).unwrap();
        store.set(&b, msg(b"12345")).unwrap();
        assert_eq!(store.set(&c, msg(b"1")), Err(StoreFull));
        assert_eq!(store.set(&b, msg(b"123456")), Err(StoreFull));
        let mut seen = Vec::new();
        store.for_each_match("a/+", Instant::now(), |t, _| seen.push(t.to_string()));
        seen.sort();
        assert_eq!(seen, ["a/x", "a/y"]);
        store.set(&a, msg(b"")).unwrap();
        assert_eq!(store.len(), 1);
        store.set(&c, msg(b"1")).unwrap();
        let mut exact = 0;
        store.for_each_match("b", Instant::now(), |_, _| exact += 1);
        assert_eq!(exact, 1);
    }
}
