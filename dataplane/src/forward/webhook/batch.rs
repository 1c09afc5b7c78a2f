//! The queue of one webhook route on one core: each message is encoded as
//! JSON the moment it is queued, straight into the body of the batch it
//! will travel in.
//!
//! ```text
//! lane 0: [{"messages":[m1,m2,…,m100   (full: ready)] [{"messages":[m101,m102   (open)]
//! lane 1: [{"messages":[m7             (open: ready batch_wait after m7)]
//!          └── bytes and messages counted over all lanes, batches in flight included
//! ```
//!
//! A batch is ready when it holds `batch_max` messages (or its body reached
//! [`BATCH_BODY_BYTES`]), when another batch has opened behind it, or
//! `batch_wait` after its first message; until its lane's connection takes
//! it, it keeps filling. Nothing here holds a pool buffer: payloads are
//! copied into the body as they come, so the core's pool never waits on a
//! slow webhook. Time is an input: every call that depends on it takes
//! `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::http::json;

/// Body bytes past which a batch takes no more messages (a soft bound: the
/// message that crosses it stays).
pub(super) const BATCH_BODY_BYTES: usize = 1024 * 1024;
/// Spare body buffers kept for reuse, and the largest capacity kept (at
/// most 1 MiB per route per core on top of `queue_bytes`).
const SPARE_BUFFERS: usize = 4;
const SPARE_CAPACITY: usize = 256 * 1024;

const PREFIX: &[u8] = b"{\"messages\":[";
const SUFFIX: &[u8] = b"]}";

/// The bounds of a [`BatchQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchLimits {
    pub(super) batch_max: usize,
    pub(super) batch_wait: Duration,
    /// Encoded bytes, over all lanes, in flight included.
    pub(super) queue_bytes: usize,
    /// Messages, over all lanes, in flight included.
    pub(super) queue_messages: usize,
}

/// One message as it is written into a batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    pub(super) topic: &'a str,
    pub(super) device: Option<&'a str>,
    pub(super) listener: Option<&'a str>,
    pub(super) payload: &'a [u8],
    /// When the data plane took it, milliseconds since the Unix epoch.
    pub(super) received_ms: u64,
}

/// A batch being filled.
#[derive(Debug)]
struct Chunk {
    body: Vec<u8>,
    messages: usize,
    first_at: Instant,
}

/// A batch taken for sending: a whole JSON document.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) body: Vec<u8>,
    pub(super) messages: usize,
}

/// What a lane's sender should do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Send this batch.
    Batch(Batch),
    /// The front batch becomes ready at this instant (unless it fills up
    /// first).
    Until(Instant),
    /// Nothing is queued on the lane.
    Empty,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.messages == other.messages
    }
}

impl Eq for Batch {}

/// Why [`BatchQueue::push`] took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// `queue_messages` are queued already.
    Messages,
    /// The message's encoding would take the queue past `queue_bytes`.
    Bytes,
}

/// What [`BatchQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pushed {
    /// The lane's sender should look again: the lane was empty, or its
    /// front batch just became ready.
    pub(super) wake: bool,
}

/// Messages of one route, per lane, encoded and batched.
#[derive(Debug)]
pub(super) struct BatchQueue {
    limits: BatchLimits,
    lanes: Vec<VecDeque<Chunk>>,
    bytes: usize,
    messages: usize,
    spare: Vec<Vec<u8>>,
}

impl BatchQueue {
    pub(super) fn new(limits: BatchLimits, lanes: usize) -> Self {
        Self {
            limits,
            lanes: (0..lanes.max(1)).map(|_| VecDeque::new()).collect(),
            bytes: 0,
            messages: 0,
            spare: Vec::new(),
        }
    }

    /// Messages queued or in flight.
    pub(super) fn messages(&self) -> usize {
        self.messages
    }

    /// Encoded bytes queued or in flight.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn is_full(&self, chunk: &Chunk) -> bool {
        chunk.messages >= self.limits.batch_max || chunk.body.len() >= BATCH_BODY_BYTES
    }

    /// Encodes `entry` at the end of `lane`; nothing changes when a bound
    /// would be passed.
    pub(super) fn push(
        &mut self,
        lane: usize,
        now: Instant,
        entry: &Entry<'_>,
    ) -> Result<Pushed, Full> {
        if self.messages >= self.limits.queue_messages {
            return Err(Full::Messages);
        }
        let lane_index = lane % self.lanes.len();
        let open_new = self
            .lanes
            .get(lane_index)
            .and_then(VecDeque::back)
            .is_none_or(|c| self.is_full(c));
        let was_empty = self.lanes.get(lane_index).is_none_or(VecDeque::is_empty);
        if open_new {
            let mut body = self.spare.pop().unwrap_or_default();
            body.clear();
            body.extend_from_slice(PREFIX);
            if let Some(q) = self.lanes.get_mut(lane_index) {
                q.push_back(Chunk {
                    body,
                    messages: 0,
                    first_at: now,
                });
            }
        }
        let Some(q) = self.lanes.get_mut(lane_index) else {
            return Err(Full::Bytes);
        };
        let behind = q.len() > 1;
        let Some(chunk) = q.back_mut() else {
            return Err(Full::Bytes);
        };
        let before = chunk.body.len();
        if chunk.messages > 0 {
            chunk.body.push(b',');
        }
        encode(&mut chunk.body, entry);
        let mut added = chunk.body.len() - before;
        if open_new {
            added += PREFIX.len() + SUFFIX.len();
        }
        if self.bytes + added > self.limits.queue_bytes {
            chunk.body.truncate(before);
            if open_new {
                if let Some(c) = q.pop_back() {
                    self.recycle(c.body);
                }
            }
            return Err(Full::Bytes);
        }
        chunk.messages += 1;
        let front_ready_now = if behind {
            // A new batch opened behind the front one: the front is ready.
            open_new && q.len() == 2
        } else {
            chunk.messages >= self.limits.batch_max || chunk.body.len() >= BATCH_BODY_BYTES
        };
        self.bytes += added;
        self.messages += 1;
        Ok(Pushed {
            wake: was_empty || front_ready_now,
        })
    }

    /// The front batch of `lane` if it is ready at `now`.
    pub(super) fn take(&mut self, lane: usize, now: Instant) -> Take {
        let lane_index = lane % self.lanes.len();
        let Some(q) = self.lanes.get_mut(lane_index) else {
            return Take::Empty;
        };
        let (deadline, full) = match q.front() {
            None => return Take::Empty,
            Some(front) => (
                front.first_at + self.limits.batch_wait,
                front.messages >= self.limits.batch_max || front.body.len() >= BATCH_BODY_BYTES,
            ),
        };
        if !full && q.len() == 1 && now < deadline {
            return Take::Until(deadline);
        }
        match q.pop_front() {
            Some(mut chunk) => {
                chunk.body.extend_from_slice(SUFFIX);
                Take::Batch(Batch {
                    body: chunk.body,
                    messages: chunk.messages,
                })
            }
            None => Take::Empty,
        }
    }

    /// A batch taken earlier is done with (delivered or dropped): its share
    /// of the bounds is free again.
    pub(super) fn finish(&mut self, batch: Batch) {
        self.bytes = self.bytes.saturating_sub(batch.body.len());
        self.messages = self.messages.saturating_sub(batch.messages);
        self.recycle(batch.body);
    }

    /// Drops everything queued on `lane`; returns how many messages.
    pub(super) fn clear_lane(&mut self, lane: usize) -> usize {
        let lane_index = lane % self.lanes.len();
        let chunks: Vec<Chunk> = self
            .lanes
            .get_mut(lane_index)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        let mut dropped = 0;
        for c in chunks {
            dropped += c.messages;
            self.messages = self.messages.saturating_sub(c.messages);
            self.bytes = self.bytes.saturating_sub(c.body.len() + SUFFIX.len());
            self.recycle(c.body);
        }
        dropped
    }

    fn recycle(&mut self, body: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && body.capacity() <= SPARE_CAPACITY {
            self.spare.push(body);
        }
    }
}

/// `{"topic":…,"device":…,"listener":…,"payload":…,"received_ms":…}`;
/// `device` and `listener` are left out when the message has none.
fn encode(out: &mut Vec<u8>, entry: &Entry<'_>) {
    out.extend_from_slice(b"{\"topic\":");
    json::push_str(out, entry.topic);
    if let Some(device) = entry.device {
        out.extend_from_slice(b",\"device\":");
        json::push_str(out, device);
    }
    if let Some(listener) = entry.listener {
        out.extend_from_slice(b",\"listener\":");
        json::push_str(out, listener);
    }
    out.push(b',');
    json::push_payload(out, entry.payload);
    out.extend_from_slice(b",\"received_ms\":");
    push_decimal(out, entry.received_ms);
    out.push(b'}');
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while start > 0 {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(batch_max: usize, queue_bytes: usize, queue_messages: usize) -> BatchLimits {
        BatchLimits {
            batch_max,
            batch_wait: Duration::from_millis(20),
            queue_bytes,
            queue_messages,
        }
    }

    fn entry(payload: &[u8]) -> Entry<'_> {
        Entry {
            topic: "devices/d1/up",
            device: Some("d1"),
            listener: None,
            payload,
            received_ms: 1_700_000_000_123,
        }
    }

    fn batch(take: Take) -> (serde_json::Value, usize) {
        let Take::Batch(b) = take else {
            panic!("no batch: {take:?}");
        };
        (serde_json::from_slice(&b.body).unwrap(), b.messages)
    }

    #[test]
    fn a_batch_goes_when_full_or_batch_wait_after_its_first_message() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(limits(3, 1 << 20, 100), 1);
        assert_eq!(q.take(0, t0), Take::Empty);
        assert_eq!(q.push(0, t0, &entry(b"a")), Ok(Pushed { wake: true }));
        assert_eq!(q.push(0, t0, &entry(b"b")), Ok(Pushed { wake: false }));
        assert_eq!(q.take(0, t0), Take::Until(t0 + Duration::from_millis(20)));
        // The third fills it: ready at once.
        assert_eq!(q.push(0, t0, &entry(b"c")), Ok(Pushed { wake: true }));
        let (json, n) = batch(q.take(0, t0));
        assert_eq!(n, 3);
        let payloads: Vec<&str> = json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"].as_str().unwrap())
            .collect();
        assert_eq!(payloads, ["a", "b", "c"]);
        let m = &json["messages"][0];
        assert_eq!(m["topic"], "devices/d1/up");
        assert_eq!(m["device"], "d1");
        assert!(m.get("listener").is_none());
        assert_eq!(m["received_ms"], 1_700_000_000_123u64);
        // A lone message goes batch_wait after it came.
        let t1 = t0 + Duration::from_millis(5);
        q.push(0, t1, &entry(&[0xff])).unwrap();
        assert_eq!(
            q.take(0, t1 + Duration::from_millis(19)),
            Take::Until(t1 + Duration::from_millis(20))
        );
        let (json, n) = batch(q.take(0, t1 + Duration::from_millis(20)));
        assert_eq!(
            (n, json["messages"][0]["payload_base64"].as_str()),
            (1, Some("/w=="))
        );
    }

    #[test]
    fn a_batch_that_waits_keeps_filling_up_to_batch_max_then_the_next_opens() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(limits(2, 1 << 20, 100), 1);
        q.push(0, t0, &entry(b"1")).unwrap();
        let later = t0 + Duration::from_secs(1);
        // Past batch_wait but not taken yet: still filling.
        assert_eq!(q.push(0, later, &entry(b"2")), Ok(Pushed { wake: true }));
        // Full: the next message opens a batch behind it.
        assert_eq!(q.push(0, later, &entry(b"3")), Ok(Pushed { wake: true }));
        assert_eq!(batch(q.take(0, later)).1, 2);
        // The one behind waits for its own batch_wait.
        assert_eq!(
            q.take(0, later),
            Take::Until(later + Duration::from_millis(20))
        );
        assert_eq!(q.messages(), 3, "taken batches count until finished");
    }

    #[test]
    fn bounds_count_messages_and_bytes_in_flight_included() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(limits(10, 1 << 20, 3), 2);
        for lane in [0, 1, 0] {
            q.push(lane, t0, &entry(b"x")).unwrap();
        }
        assert_eq!(q.push(1, t0, &entry(b"x")), Err(Full::Messages));
        let later = t0 + Duration::from_secs(1);
        let Take::Batch(b) = q.take(0, later) else {
            panic!("lane 0 should be ready");
        };
        assert_eq!(b.messages, 2);
        assert_eq!(
            q.push(1, t0, &entry(b"x")),
            Err(Full::Messages),
            "in flight still counts"
        );
        q.finish(b);
        q.push(1, t0, &entry(b"x")).unwrap();
        assert_eq!(q.clear_lane(1), 2);
        assert_eq!((q.messages(), q.bytes()), (0, 0));

        // Bytes: the encoded size, batch wrapper included.
        let mut q = BatchQueue::new(limits(10, 200, 100), 1);
        q.push(0, t0, &entry(b"0123456789")).unwrap();
        let one = q.bytes();
        assert!(one > 10 && one < 200, "{one}");
        let mut pushed = 1;
        while q.push(0, t0, &entry(b"0123456789")).is_ok() {
            pushed += 1;
        }
        assert!(q.bytes() <= 200, "{}", q.bytes());
        assert_eq!(q.push(0, t0, &entry(b"0123456789")), Err(Full::Bytes));
        let (json, n) = batch(q.take(0, t0 + Duration::from_secs(1)));
        assert_eq!(n, pushed);
        assert_eq!(json["messages"].as_array().unwrap().len(), pushed);
        // A message larger than the whole queue never fits, and leaves no
        // empty batch behind.
        let mut q = BatchQueue::new(limits(10, 1024, 100), 1);
        assert_eq!(q.push(0, t0, &entry(&[b'y'; 2000])), Err(Full::Bytes));
        assert_eq!((q.take(0, t0), q.bytes()), (Take::Empty, 0));
    }
}
