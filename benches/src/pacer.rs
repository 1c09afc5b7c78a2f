//! Precise sleeps for paced senders.
//!
//! monoio's timer ticks every millisecond, so a sender sleeping on it wakes up
//! to a millisecond late; since paced frames carry their scheduled send time,
//! that lateness would show up as server latency. A [`Pacer`] instead keeps
//! one queue of wake-up instants per runtime thread and one CLOCK_MONOTONIC
//! timerfd, armed (absolute time) for the earliest of them, rounded up to a
//! resolution grid, and read through io_uring:
//!
//! ```text
//! sleep_until(t): t passed? ready : queue (t, waker); arm the timerfd for t (rounded up) if earliest
//! driver task:    loop { read timerfd; wake every entry due by now; arm for the next }
//! ```
//!
//! The grid bounds the wake-ups to one per resolution step however many
//! senders there are, so that senders due close together wake together and
//! their writes go to the kernel in one batch; a sleeper is never woken
//! before its instant, and at most one step (plus scheduling) after it.

use std::{
    cell::RefCell,
    cmp::Reverse,
    collections::BinaryHeap,
    fs::File as StdFile,
    future::poll_fn,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    rc::Rc,
    task::{Poll, Waker},
};

use crate::clock::monotonic_ns;

/// One sleeping task.
struct Sleeper {
    deadline_ns: u64,
    /// Breaks ties so that the heap never compares wakers.
    ticket: u64,
    waker: Waker,
}

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline_ns, self.ticket) == (other.deadline_ns, other.ticket)
    }
}

impl Eq for Sleeper {}

impl PartialOrd for Sleeper {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sleeper {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline_ns, self.ticket).cmp(&(other.deadline_ns, other.ticket))
    }
}

#[derive(Default)]
struct PacerState {
    sleepers: BinaryHeap<Reverse<Sleeper>>,
    next_ticket: u64,
    /// The instant the timerfd is armed for, if armed.
    armed_ns: Option<u64>,
    stopped: bool,
}

/// Wake-ups at exact CLOCK_MONOTONIC instants for the tasks of one runtime
/// thread. Run [`Pacer::drive`] as a task, end it with [`Pacer::stop`].
pub(crate) struct Pacer {
    resolution_ns: u64,
    timer_fd: RawFd,
    timer: monoio::fs::File,
    state: RefCell<PacerState>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("timer_fd", &self.timer_fd)
            .finish()
    }
}

impl Pacer {
    /// Wake-ups fall on multiples of `resolution_ns` (at least 1 µs). Must be
    /// called on a monoio runtime thread.
    pub(crate) fn new(resolution_ns: u64) -> io::Result<Rc<Self>> {
        // Blocking (no TFD_NONBLOCK): io_uring parks the read until expiry.
        // SAFETY: plain syscall, no pointers.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let timer = monoio::fs::File::from_std(StdFile::from(owned))?;
        Ok(Rc::new(Self {
            resolution_ns: resolution_ns.max(1_000),
            timer_fd: timer.as_raw_fd(),
            timer,
            state: RefCell::default(),
        }))
    }

    /// The grid instant at or after `deadline_ns`.
    fn wake_at(&self, deadline_ns: u64) -> u64 {
        deadline_ns.div_ceil(self.resolution_ns) * self.resolution_ns
    }

    /// Arms the timerfd for `deadline_ns` (absolute); 0 disarms it.
    fn arm(&self, deadline_ns: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `timer_fd` is the timerfd owned by `self.timer`, alive as
        // long as `self`; `spec` is a valid itimerspec and the old value is
        // not requested.
        let rc = unsafe {
            libc::timerfd_settime(
                self.timer_fd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        debug_assert_eq!(rc, 0, "timerfd_settime: {}", io::Error::last_os_error());
    }

    /// Resolves at `deadline_ns` (CLOCK_MONOTONIC), or at once if it has passed.
    pub(crate) async fn sleep_until(&self, deadline_ns: u64) {
        poll_fn(|cx| {
            if monotonic_ns() >= deadline_ns {
                return Poll::Ready(());
            }
            let mut state = self.state.borrow_mut();
            if state.stopped {
                return Poll::Ready(());
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.sleepers.push(Reverse(Sleeper {
                deadline_ns,
                ticket,
                waker: cx.waker().clone(),
            }));
            let wake_ns = self.wake_at(deadline_ns);
            if state.armed_ns.is_none_or(|armed| wake_ns < armed) {
                state.armed_ns = Some(wake_ns);
                self.arm(wake_ns);
            }
            Poll::Pending
        })
        .await;
    }

    /// Wakes sleepers as their instants pass, until [`Pacer::stop`].
    pub(crate) async fn drive(self: Rc<Self>) {
        let mut expirations = vec![0u8; 8];
        loop {
            let (read, buf) = self.timer.read_at(expirations, 0).await;
            expirations = buf;
            if let Err(e) = read {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("shoal-bench: pacing timer failed: {e}");
                    self.stop();
                }
            }
            let now = monotonic_ns();
            let mut due = Vec::new();
            {
                let mut state = self.state.borrow_mut();
                let stopped = state.stopped;
                while let Some(Reverse(first)) = state.sleepers.peek() {
                    if first.deadline_ns > now && !stopped {
                        break;
                    }
                    if let Some(Reverse(sleeper)) = state.sleepers.pop() {
                        due.push(sleeper.waker);
                    }
                }
                state.armed_ns = state
                    .sleepers
                    .peek()
                    .map(|Reverse(s)| self.wake_at(s.deadline_ns));
                if let Some(next) = state.armed_ns {
                    self.arm(next);
                }
                if stopped {
                    drop(state);
                    due.into_iter().for_each(Waker::wake);
                    return;
                }
            }
            due.into_iter().for_each(Waker::wake);
        }
    }

    /// Ends [`Pacer::drive`]; sleepers still queued wake at once.
    pub(crate) fn stop(&self) {
        let mut state = self.state.borrow_mut();
        state.stopped = true;
        state.armed_ns = Some(1);
        // An absolute time in the past fires at once and unblocks the read.
        self.arm(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn sleepers_wake_in_order_and_not_early() {
        if !monoio::utils::detect_uring() {
            return;
        }
        runtime().block_on(async {
            let pacer = Pacer::new(1_000).unwrap();
            let driver = monoio::spawn(Rc::clone(&pacer).drive());
            let base = monotonic_ns();
            let woke = Rc::new(RefCell::new(Vec::new()));
            // Registered out of order, including one in the past.
            let tasks: Vec<_> = [3_000_000u64, 1_000_000, 0, 2_000_000]
                .into_iter()
                .map(|offset| {
                    let pacer = Rc::clone(&pacer);
                    let woke = Rc::clone(&woke);
                    monoio::spawn(async move {
                        pacer.sleep_until(base + offset).await;
                        let now = monotonic_ns();
                        assert!(now >= base + offset, "woke early");
                        woke.borrow_mut().push(offset);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            assert_eq!(*woke.borrow(), [0, 1_000_000, 2_000_000, 3_000_000]);
            pacer.stop();
            driver.await;
        });
    }

    #[test]
    fn stop_releases_sleepers() {
        if !monoio::utils::detect_uring() {
            return;
        }
        runtime().block_on(async {
            let pacer = Pacer::new(100_000).unwrap();
            let driver = monoio::spawn(Rc::clone(&pacer).drive());
            let sleeper = {
                let pacer = Rc::clone(&pacer);
                monoio::spawn(
                    async move { pacer.sleep_until(monotonic_ns() + 3_600_000_000_000).await },
                )
            };
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            pacer.stop();
            sleeper.await;
            driver.await;
        });
    }
}
