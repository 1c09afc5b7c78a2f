//! One monoio runtime (io_uring driver, timers on) per OS thread, each thread
//! pinned to one CPU.

use std::{future::Future, io, thread};

use anyhow::bail;
use monoio::{IoUringDriver, RuntimeBuilder};

/// Submission-queue entries per runtime; completions never drop (the kernel
/// queues overflow), so this only bounds one batch of submissions.
const URING_ENTRIES: u32 = 4096;

/// CPUs this process may run on, in ascending order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t and its size is passed along.
    let rc = unsafe { libc::sched_getaffinity(0, size_of_val(&set), &mut set) };
    let cpus: Vec<usize> = if rc == 0 {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, the size of `set`.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        let n = thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    } else {
        cpus
    }
}

/// Fails early, with a readable message, when io_uring is not usable here.
pub(crate) fn require_io_uring() -> anyhow::Result<()> {
    if monoio::utils::detect_uring() {
        Ok(())
    } else {
        bail!("io_uring is not available (kernel too old, or disabled by seccomp / io_uring_disabled)")
    }
}

/// Starts an OS thread pinned to `cpu` running `task` to completion on its
/// own monoio runtime; if the runtime cannot be built, `on_build_error` gets
/// the reason instead and `task` never runs.
pub(crate) fn spawn_pinned<F, Fut, E>(
    name: String,
    cpu: usize,
    task: F,
    on_build_error: E,
) -> io::Result<thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
    E: FnOnce(String) + Send + 'static,
{
    thread::Builder::new().name(name).spawn(move || {
        if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
            eprintln!("shoal-bench: cannot pin a thread to CPU {cpu}: {e}; running unpinned");
        }
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut runtime) => runtime.block_on(task()),
            Err(e) => on_build_error(format!("cannot build the io_uring runtime: {e}")),
        }
    })
}
