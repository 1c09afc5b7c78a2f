//! Wake-up primitives between tasks of one core: a [`Gate`] that waiters
//! pass while it is open, a one-shot [`LocalSignal`] built on it, and a
//! [`Kick`] for a single task.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A gate tasks wait at while it is closed; opening wakes them all.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    /// A gate that starts closed.
    pub(crate) fn closed() -> Self {
        Self {
            closed: Cell::new(true),
            waiters: RefCell::new(Vec::new()),
        }
    }

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
        let mut waiters = self.gate.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Once raised, stays raised; every waiter wakes. A gate that only opens.
#[derive(Debug)]
pub(crate) struct LocalSignal(Gate);

impl Default for LocalSignal {
    fn default() -> Self {
        Self(Gate::closed())
    }
}

impl LocalSignal {
    pub(crate) fn raise(&self) {
        self.0.open();
    }

    pub(crate) fn is_raised(&self) -> bool {
        !self.0.is_closed()
    }

    /// Resolves once the signal is raised.
    pub(crate) fn wait(&self) -> Pass<'_> {
        self.0.pass()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_wakes_every_waiter_once_and_stays_raised() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let signal = std::rc::Rc::new(LocalSignal::default());
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let s = std::rc::Rc::clone(&signal);
                    glommio::spawn_local(async move { s.wait().await })
                })
                .collect();
            glommio::executor().yield_task_queue_now().await;
            assert!(!signal.is_raised());
            signal.raise();
            for w in waiters {
                w.await;
            }
            assert!(signal.is_raised());
            signal.wait().await;
        });
    }
}
