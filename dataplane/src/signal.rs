//! A one-shot, level-triggered signal between tasks of one core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Once raised, stays raised; every waiter wakes.
#[derive(Debug, Default)]
pub(crate) struct LocalSignal {
    raised: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalSignal {
    pub(crate) fn raise(&self) {
        if !self.raised.replace(true) {
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Resolves once the signal is raised.
    pub(crate) fn wait(&self) -> Raised<'_> {
        Raised { signal: self }
    }
}

/// Future of [`LocalSignal::wait`].
#[derive(Debug)]
pub(crate) struct Raised<'a> {
    signal: &'a LocalSignal,
}

impl Future for Raised<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A wake-up flag for one task: set by anyone on the core, awaited by its
/// owner, cleared when the owner sees it.
#[derive(Debug, Default)]
pub(crate) struct Kick {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    pub(crate) fn kick(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves (and clears the flag) once kicked.
    pub(crate) fn kicked(&self) -> Kicked<'_> {
        Kicked { kick: self }
    }
}

/// Future of [`Kick::kicked`].
#[derive(Debug)]
pub(crate) struct Kicked<'a> {
    kick: &'a Kick,
}

impl Future for Kicked<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.kick.set.replace(false) {
            return Poll::Ready(());
        }
        *self.kick.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A gate tasks wait at while it is closed; opening wakes them all.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    pub(crate) fn close(&self) {
        self.closed.set(true);
    }

    pub(crate) fn open(&self) {
        if self.closed.replace(false) {
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Resolves once the gate is open.
    pub(crate) fn pass(&self) -> Pass<'_> {
        Pass { gate: self }
    }
}

/// Future of [`Gate::pass`].
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
}

impl Future for Pass<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.gate.closed.get() {
            return Poll::Ready(());
        }
        self.gate.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}
