//! Tells, before any executor starts, whether io_uring can be used here,
//! and if not, why and what to do about it.

use std::io;

/// Checks io_uring with a tiny ring; the error names the cause and the fix.
pub(crate) fn probe() -> Result<(), String> {
    // SAFETY: io_uring_params is plain data; all-zero asks for defaults.
    let mut params: [u8; 120] = [0; 120];
    // SAFETY: io_uring_setup(2) reads and writes the 120-byte params struct
    // we own; the returned descriptor is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: closing the descriptor the call above returned to us.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = io::Error::last_os_error();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    Err(explain(
        err.raw_os_error().unwrap_or(0),
        disabled,
        &kernel_release(),
    ))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The message for an io_uring_setup failure with `errno`, given the value
/// of `kernel.io_uring_disabled` (if readable) and the kernel release.
pub(crate) fn explain(errno: i32, disabled: Option<u8>, kernel: &str) -> String {
    let head = "io_uring is not available, and shoal-dataplane runs on io_uring";
    match (errno, disabled) {
        (libc::ENOSYS, _) => format!(
            "{head}: the kernel ({kernel}) has no io_uring_setup system call. It is older than \
             5.1 or built without CONFIG_IO_URING. Fix: run on Linux 5.10 or newer with io_uring \
             enabled."
        ),
        (libc::EPERM, Some(2)) => format!(
            "{head}: it is disabled by the sysctl kernel.io_uring_disabled=2. Fix: `sysctl -w \
             kernel.io_uring_disabled=0` (and set it in /etc/sysctl.d/ to keep it)."
        ),
        (libc::EPERM, Some(1)) => format!(
            "{head}: kernel.io_uring_disabled=1 allows it only to members of the group in \
             kernel.io_uring_group (and to CAP_SYS_ADMIN). Fix: run the service in that group, \
             or `sysctl -w kernel.io_uring_disabled=0`."
        ),
        (libc::EPERM | libc::EACCES, _) => format!(
            "{head}: the io_uring_setup system call was refused (errno {errno}), most likely by a \
             seccomp filter such as a container runtime's default profile. Fix: allow \
             io_uring_setup, io_uring_enter and io_uring_register in the seccomp profile (e.g. \
             run the container with a profile that permits them)."
        ),
        (libc::ENOMEM, _) => format!(
            "{head}: the kernel could not allocate a ring (ENOMEM), usually the locked-memory \
             limit on kernels before 5.12. Fix: raise it (systemd: LimitMEMLOCK=infinity; shell: \
             ulimit -l unlimited)."
        ),
        _ => format!(
            "{head}: io_uring_setup failed with errno {errno} ({}) on kernel {kernel}.",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_io_uring() {
        probe().unwrap();
    }

    #[test]
    fn messages_name_cause_and_fix() {
        let m = explain(libc::ENOSYS, None, "4.19.0");
        assert!(m.contains("4.19.0") && m.contains("5.10"), "{m}");
        let m = explain(libc::EPERM, Some(2), "6.6");
        assert!(
            m.contains("kernel.io_uring_disabled=2") && m.contains("sysctl -w"),
            "{m}"
        );
        let m = explain(libc::EPERM, Some(1), "6.6");
        assert!(m.contains("io_uring_group"), "{m}");
        let m = explain(libc::EPERM, Some(0), "6.6");
        assert!(m.contains("seccomp"), "{m}");
        let m = explain(libc::ENOMEM, None, "5.4");
        assert!(m.contains("LimitMEMLOCK"), "{m}");
    }
}
