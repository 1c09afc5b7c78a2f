//! How a run is split: units (pairs or idle connections) over processes and
//! threads, sockets over source addresses, and the limits that bound it.

/// File descriptors a process keeps for itself (stdio, io_uring, ...).
const FD_RESERVE: u64 = 100;

/// Units given to part `index` of `parts` when `total` are split evenly
/// (the first `total % parts` parts get one more).
pub(crate) fn share(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

/// Units given to the parts before `index`.
pub(crate) fn shares_before(total: u64, parts: u64, index: u64) -> u64 {
    index * (total / parts) + index.min(total % parts)
}

/// Device id of unit `unit` in process `process`.
pub(crate) fn device_id(prefix: &str, process: u32, unit: u64) -> String {
    format!("{prefix}{process}-{unit}")
}

/// Device id of the receiver that gets what `sender_id` sends.
pub(crate) fn receiver_id(sender_id: &str) -> String {
    format!("{sender_id}-rx")
}

/// Checks a run against the per-process open-file limit and the ephemeral
/// ports available per source address; the error says what to change.
pub(crate) fn check_socket_budget(
    units: u64,
    sockets_per_unit: u64,
    processes: u64,
    fd_limit: u64,
    source_addrs: u64,
    ephemeral_ports: u64,
) -> Result<(), String> {
    let fds_usable = fd_limit.saturating_sub(FD_RESERVE);
    let per_process = share(units, processes, 0) * sockets_per_unit;
    if per_process > fds_usable {
        let total = units * sockets_per_unit;
        let needed = total.div_ceil(fds_usable.max(sockets_per_unit));
        return Err(format!(
            "{per_process} sockets per process exceed the open-file limit ({fd_limit}, \
             {FD_RESERVE} kept in reserve): use --processes {needed} or more"
        ));
    }
    let per_source = (units * sockets_per_unit).div_ceil(source_addrs);
    if per_source > ephemeral_ports {
        let needed = (units * sockets_per_unit).div_ceil(ephemeral_ports);
        return Err(format!(
            "{per_source} sockets per source address exceed the {ephemeral_ports} ephemeral \
             ports: use a --source-addrs range of {needed} addresses or more"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_total_in_order() {
        for total in [0, 1, 7, 10, 20_001] {
            for parts in 1..=5 {
                let mut before = 0;
                for index in 0..parts {
                    assert_eq!(shares_before(total, parts, index), before);
                    before += share(total, parts, index);
                }
                assert_eq!(before, total, "total {total} parts {parts}");
            }
        }
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }

    #[test]
    fn ids() {
        let sender = device_id("bench", 1, 17);
        assert_eq!(sender, "bench1-17");
        assert_eq!(receiver_id(&sender), "bench1-17-rx");
    }

    #[test]
    fn budget() {
        // 10k pairs = 20k sockets: one process cannot hold them, two can.
        let err = check_socket_budget(10_000, 2, 1, 20_000, 8, 28_232).unwrap_err();
        assert!(err.contains("--processes 2"), "{err}");
        assert!(check_socket_budget(10_000, 2, 2, 20_000, 8, 28_232).is_ok());
        // 60k idle sockets from one source address run out of ports.
        let err = check_socket_budget(60_000, 1, 4, 20_000, 1, 28_232).unwrap_err();
        assert!(err.contains("--source-addrs range of 3"), "{err}");
        assert!(check_socket_budget(60_000, 1, 4, 20_000, 3, 28_232).is_ok());
    }
}
