//! Per-core slab buffer pools.
//!
//! A [`SlabPool`] belongs to one core. It hands out [`PoolBuf`]s from a few
//! fixed size classes, each bounded by a capacity; a buffer goes back to its
//! class's free list when it is dropped (RAII, nothing to forget). Within the
//! core a filled buffer is shared with `Rc` as [`Payload`] slices; to cross
//! to another core its bytes are copied once into a [`Detached`] buffer of a
//! class size, which the receiving core adopts into its own pool.
//!
//! When a class is exhausted the request falls through to larger classes;
//! when none can serve, [`SlabPool::acquire`] waits for a buffer to come
//! back (the reader pauses: backpressure) and the pause is counted. Memory
//! never grows past `sum(buffer_bytes * capacity)` per core.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use shoal_protocols::config::PoolSettings;
use shoal_protocols::figures::PoolClassFigures;

#[derive(Debug)]
struct SizeClass {
    buffer_bytes: usize,
    capacity: u32,
    free: RefCell<Vec<Box<[u8]>>>,
    allocated: Cell<u32>,
    in_use: Cell<u32>,
    high_water: Cell<u32>,
    exhausted: Cell<u64>,
}

impl SizeClass {
    fn take(&self) -> Option<Box<[u8]>> {
        let data = if let Some(data) = self.free.borrow_mut().pop() {
            data
        } else if self.allocated.get() < self.capacity {
            self.allocated.set(self.allocated.get() + 1);
            vec![0u8; self.buffer_bytes].into_boxed_slice()
        } else {
            return None;
        };
        self.mark_in_use();
        Some(data)
    }

    fn mark_in_use(&self) {
        let in_use = self.in_use.get() + 1;
        self.in_use.set(in_use);
        if in_use > self.high_water.get() {
            self.high_water.set(in_use);
        }
    }
}

#[derive(Debug)]
struct PoolInner {
    classes: Vec<SizeClass>,
    waiters: RefCell<VecDeque<Waker>>,
    backpressure_pauses: Cell<u64>,
}

impl PoolInner {
    fn give_back(&self, class: usize, data: Box<[u8]>) {
        if let Some(c) = self.classes.get(class) {
            c.in_use.set(c.in_use.get().saturating_sub(1));
            c.free.borrow_mut().push(data);
        }
        // Wake every waiter: a waiter for a larger class must not swallow
        // the wake-up. Waiters are tasks paused on this core, so the list is
        // bounded by the number of connections.
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// The buffer pool of one core. Cloning gives another handle to the same
/// pool.
#[derive(Debug, Clone)]
pub(crate) struct SlabPool {
    inner: Rc<PoolInner>,
}

impl SlabPool {
    /// Builds the classes of `settings` (already validated: sorted, non-empty).
    pub(crate) fn new(settings: &PoolSettings) -> Self {
        let classes = settings
            .classes
            .iter()
            .map(|c| SizeClass {
                buffer_bytes: c.buffer_bytes as usize,
                capacity: c.capacity,
                free: RefCell::new(Vec::new()),
                allocated: Cell::new(0),
                in_use: Cell::new(0),
                high_water: Cell::new(0),
                exhausted: Cell::new(0),
            })
            .collect();
        Self {
            inner: Rc::new(PoolInner {
                classes,
                waiters: RefCell::new(VecDeque::new()),
                backpressure_pauses: Cell::new(0),
            }),
        }
    }

    /// The largest buffer the pool can hand out.
    pub(crate) fn largest_buffer_bytes(&self) -> usize {
        self.inner.classes.last().map_or(0, |c| c.buffer_bytes)
    }

    /// Index of the smallest class whose buffers hold `min_bytes`.
    fn class_for(&self, min_bytes: usize) -> Option<usize> {
        self.inner
            .classes
            .iter()
            .position(|c| c.buffer_bytes >= min_bytes)
    }

    /// A buffer of at least `min_bytes`, from the smallest class that fits
    /// and has one, or `None` when every fitting class is exhausted.
    pub(crate) fn try_acquire(&self, min_bytes: usize) -> Option<PoolBuf> {
        let first = self.class_for(min_bytes)?;
        for (index, class) in self.inner.classes.iter().enumerate().skip(first) {
            if let Some(data) = class.take() {
                return Some(PoolBuf {
                    data: Some(data),
                    len: 0,
                    class: index,
                    pool: Rc::clone(&self.inner),
                });
            }
        }
        if let Some(c) = self.inner.classes.get(first) {
            c.exhausted.set(c.exhausted.get() + 1);
        }
        None
    }

    /// Waits for a buffer of at least `min_bytes` (which must not exceed
    /// [`Self::largest_buffer_bytes`]); while the pool is exhausted the
    /// caller is paused and the pause counted once.
    pub(crate) fn acquire(&self, min_bytes: usize) -> Acquire<'_> {
        Acquire {
            pool: self,
            min_bytes,
            paused: false,
        }
    }

    /// Adopts a buffer that another core filled: it becomes one of this
    /// pool's buffers. `None` (and an exhausted count) when the class is
    /// full of buffers in use.
    pub(crate) fn adopt(&self, detached: Detached) -> Option<PoolBuf> {
        let class_index = self.class_for(detached.data.len())?;
        let class = self.inner.classes.get(class_index)?;
        if class.buffer_bytes != detached.data.len() {
            return None;
        }
        // The adopted buffer takes the place of a free one when there is
        // one (which is released), so the pool holds no more buffers than
        // its peak use needs.
        if class.free.borrow_mut().pop().is_none() {
            if class.allocated.get() < class.capacity {
                class.allocated.set(class.allocated.get() + 1);
            } else {
                class.exhausted.set(class.exhausted.get() + 1);
                return None;
            }
        }
        class.mark_in_use();
        Some(PoolBuf {
            data: Some(detached.data),
            len: detached.len,
            class: class_index,
            pool: Rc::clone(&self.inner),
        })
    }

    /// Copies `bytes` once into a buffer of the smallest class that holds
    /// them, to be sent to another core (which adopts it). The copy is
    /// outside this pool's accounting while it is in flight; the mesh
    /// channel's capacity bounds how many are.
    pub(crate) fn detach_copy(&self, bytes: &[u8]) -> Option<Detached> {
        let class = self.inner.classes.get(self.class_for(bytes.len())?)?;
        let mut data = vec![0u8; class.buffer_bytes].into_boxed_slice();
        data.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Detached {
            data,
            len: bytes.len(),
        })
    }

    /// Times a reader paused because no buffer was free.
    pub(crate) fn backpressure_pauses(&self) -> u64 {
        self.inner.backpressure_pauses.get()
    }

    /// Figures per class.
    pub(crate) fn figures(&self) -> Vec<PoolClassFigures> {
        self.inner
            .classes
            .iter()
            .map(|c| PoolClassFigures {
                buffer_bytes: u32::try_from(c.buffer_bytes).unwrap_or(u32::MAX),
                capacity: c.capacity,
                allocated: c.allocated.get(),
                in_use: c.in_use.get(),
                high_water: c.high_water.get(),
                exhausted: c.exhausted.get(),
            })
            .collect()
    }
}

/// Future of [`SlabPool::acquire`].
#[derive(Debug)]
pub(crate) struct Acquire<'a> {
    pool: &'a SlabPool,
    min_bytes: usize,
    paused: bool,
}

impl Future for Acquire<'_> {
    type Output = PoolBuf;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PoolBuf> {
        if let Some(buf) = self.pool.try_acquire(self.min_bytes) {
            return Poll::Ready(buf);
        }
        if !self.paused {
            self.paused = true;
            let p = &self.pool.inner.backpressure_pauses;
            p.set(p.get() + 1);
        }
        self.pool
            .inner
            .waiters
            .borrow_mut()
            .push_back(cx.waker().clone());
        Poll::Pending
    }
}

/// A buffer owned by a core's pool; returns to it on drop.
#[derive(Debug)]
pub(crate) struct PoolBuf {
    data: Option<Box<[u8]>>,
    len: usize,
    class: usize,
    pool: Rc<PoolInner>,
}

impl PoolBuf {
    /// Bytes the buffer can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }

    /// The filled part.
    pub(crate) fn filled(&self) -> &[u8] {
        self.data
            .as_deref()
            .and_then(|d| d.get(..self.len))
            .unwrap_or_default()
    }

    /// Bytes filled so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The unfilled part, to read into; follow with [`Self::advance`].
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        self.data
            .as_deref_mut()
            .and_then(|d| d.get_mut(len..))
            .unwrap_or_default()
    }

    /// Marks `n` more bytes filled (clamped to the capacity).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity());
    }

    /// Appends `bytes`; returns false (and appends nothing) when they do
    /// not fit.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        let len = self.len;
        let Some(dst) = self
            .data
            .as_deref_mut()
            .and_then(|d| d.get_mut(len..len + bytes.len()))
        else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Drops the first `n` filled bytes, moving the rest to the front.
    pub(crate) fn discard_front(&mut self, n: usize) {
        let n = n.min(self.len);
        if let Some(d) = self.data.as_deref_mut() {
            d.copy_within(n..self.len, 0);
        }
        self.len -= n;
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.pool.give_back(self.class, data);
        }
    }
}

/// A buffer's bytes on their way to another core: plain owned memory
/// (`Send`), adopted by the receiving core's pool.
#[derive(Debug)]
pub(crate) struct Detached {
    data: Box<[u8]>,
    len: usize,
}

impl Detached {
    /// No bytes.
    pub(crate) fn empty() -> Self {
        Self {
            data: Box::default(),
            len: 0,
        }
    }

    /// The bytes it carries.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or_default()
    }
}

/// An immutable slice of a shared buffer: what messages carry. Cloning is
/// an `Rc` increment. Most payloads are slices of pool buffers (the buffer
/// returns to its pool when the last slice is dropped); what is kept for
/// long (retained messages, queues of offline sessions) is copied to the
/// heap once, so that it does not pin a read buffer.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    bytes: PayloadBytes,
    start: u32,
    end: u32,
}

#[derive(Debug, Clone)]
enum PayloadBytes {
    Pool(Rc<PoolBuf>),
    Heap(Rc<[u8]>),
}

impl Payload {
    /// A slice `range` of the filled part of `buf`.
    pub(crate) fn new(buf: Rc<PoolBuf>, range: Range<usize>) -> Self {
        let end = range.end.min(buf.len());
        let start = range.start.min(end);
        Self {
            bytes: PayloadBytes::Pool(buf),
            start: u32::try_from(start).unwrap_or(0),
            end: u32::try_from(end).unwrap_or(0),
        }
    }

    /// The whole filled part of `buf`.
    pub(crate) fn whole(buf: PoolBuf) -> Self {
        let len = buf.len();
        Self::new(Rc::new(buf), 0..len)
    }

    /// A heap copy of `bytes`.
    pub(crate) fn heap(bytes: &[u8]) -> Self {
        Self {
            bytes: PayloadBytes::Heap(Rc::from(bytes)),
            start: 0,
            end: u32::try_from(bytes.len()).unwrap_or(0),
        }
    }

    /// These bytes in a payload that holds no pool buffer: itself when it
    /// already is one, else a heap copy.
    pub(crate) fn unpinned(&self) -> Self {
        match &self.bytes {
            PayloadBytes::Heap(_) => self.clone(),
            PayloadBytes::Pool(_) => Self::heap(self.as_slice()),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        let whole: &[u8] = match &self.bytes {
            PayloadBytes::Pool(buf) => buf.filled(),
            PayloadBytes::Heap(bytes) => bytes,
        };
        whole
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Bytes `range` of these (clamped to them): a slice of the same
    /// buffer, not a copy.
    pub(crate) fn slice(&self, range: Range<usize>) -> Self {
        let len = self.len();
        let end = range.end.min(len);
        let start = range.start.min(end);
        Self {
            bytes: self.bytes.clone(),
            start: self.start + u32::try_from(start).unwrap_or(0),
            end: self.start + u32::try_from(end).unwrap_or(0),
        }
    }

    /// The same bytes without the first `n`.
    pub(crate) fn skip(&self, n: usize) -> Self {
        let start = (self.start as usize + n).min(self.end as usize);
        Self {
            bytes: self.bytes.clone(),
            start: u32::try_from(start).unwrap_or(self.end),
            end: self.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::config::PoolClassConfig;

    fn pool() -> SlabPool {
        SlabPool::new(&PoolSettings {
            classes: vec![
                PoolClassConfig {
                    buffer_bytes: 64,
                    capacity: 2,
                },
                PoolClassConfig {
                    buffer_bytes: 256,
                    capacity: 1,
                },
            ],
        })
    }

    fn in_use(p: &SlabPool) -> Vec<u32> {
        p.figures().iter().map(|f| f.in_use).collect()
    }

    #[test]
    fn buffers_return_on_drop_and_capacity_bounds() {
        let p = pool();
        let a = p.try_acquire(10).unwrap();
        let b = p.try_acquire(64).unwrap();
        assert_eq!(a.capacity(), 64);
        // The small class is full: the request falls through to 256.
        let c = p.try_acquire(1).unwrap();
        assert_eq!(c.capacity(), 256);
        assert!(p.try_acquire(1).is_none());
        assert_eq!(in_use(&p), vec![2, 1]);
        assert_eq!(p.figures()[0].exhausted, 1);
        drop((a, b, c));
        assert_eq!(in_use(&p), vec![0, 0]);
        assert_eq!(p.figures()[0].high_water, 2);
        assert_eq!(p.figures()[0].allocated, 2);
        // Reuse, no new allocation.
        let _a = p.try_acquire(1).unwrap();
        assert_eq!(p.figures()[0].allocated, 2);
        assert!(p.try_acquire(1000).is_none());
    }

    #[test]
    fn payload_slices_share_one_buffer() {
        let p = pool();
        let mut b = p.try_acquire(8).unwrap();
        assert!(b.extend_from_slice(b"helloworld"));
        let shared = Rc::new(b);
        let hello = Payload::new(Rc::clone(&shared), 0..5);
        let world = Payload::new(shared, 5..10);
        assert_eq!(hello.as_slice(), b"hello");
        assert_eq!(world.skip(2).as_slice(), b"rld");
        assert_eq!(in_use(&p), vec![1, 0]);
        drop(hello);
        assert_eq!(in_use(&p), vec![1, 0]);
        drop(world);
        assert_eq!(in_use(&p), vec![0, 0]);
    }

    #[test]
    fn detach_and_adopt_moves_bytes_between_pools() {
        let sender = pool();
        let receiver = pool();
        let d = sender.detach_copy(b"abc").unwrap();
        let adopted = receiver.adopt(d).unwrap();
        assert_eq!(adopted.filled(), b"abc");
        assert_eq!(in_use(&receiver), vec![1, 0]);
        assert_eq!(in_use(&sender), vec![0, 0]);
        let _second = receiver.adopt(sender.detach_copy(b"d").unwrap()).unwrap();
        // Class full of buffers in use: refused and counted.
        assert!(receiver.adopt(sender.detach_copy(b"e").unwrap()).is_none());
        assert_eq!(receiver.figures()[0].exhausted, 1);
        drop(adopted);
        // A free buffer makes room: it is released and the new one adopted.
        assert!(receiver.adopt(sender.detach_copy(b"f").unwrap()).is_some());
        assert_eq!(receiver.figures()[0].allocated, 2);
    }

    #[test]
    fn an_exhausted_pool_pauses_the_reader_until_a_buffer_returns() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let p = pool();
            let held: Vec<PoolBuf> = (0..3).map(|_| p.try_acquire(1).unwrap()).collect();
            assert!(p.try_acquire(1).is_none());
            let waiter = {
                let p = p.clone();
                glommio::spawn_local(async move { p.acquire(200).await.capacity() })
            };
            glommio::executor().yield_task_queue_now().await;
            assert_eq!(p.backpressure_pauses(), 1);
            // Returning a small buffer does not satisfy a 200-byte request...
            let mut held = held;
            drop(held.remove(0));
            glommio::executor().yield_task_queue_now().await;
            // ...returning the large one does.
            drop(held.pop());
            assert_eq!(waiter.await, 256);
            assert_eq!(p.backpressure_pauses(), 1);
        });
    }

    #[test]
    fn discard_front_keeps_the_tail() {
        let p = pool();
        let mut b = p.try_acquire(8).unwrap();
        b.extend_from_slice(b"0123456789");
        b.discard_front(7);
        assert_eq!(b.filled(), b"789");
        assert_eq!(b.spare_mut().len(), 61);
    }
}
