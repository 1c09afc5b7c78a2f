//! How a run is split: units (pairs or idle connections) over processes and
//! threads, sockets over source addresses, and the limits that bound it.

pub(crate) use crate::multiproc::{check_socket_budget, share, shares_before};

/// Device id of unit `unit` in process `process`.
pub(crate) fn device_id(prefix: &str, process: u32, unit: u64) -> String {
    format!("{prefix}{process}-{unit}")
}

/// Device id of the receiver that gets what `sender_id` sends.
pub(crate) fn receiver_id(sender_id: &str) -> String {
    format!("{sender_id}-rx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_favour_the_first_parts() {
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
        assert_eq!(shares_before(10, 3, 2), 7);
    }

    #[test]
    fn ids() {
        let sender = device_id("bench", 1, 17);
        assert_eq!(sender, "bench1-17");
        assert_eq!(receiver_id(&sender), "bench1-17-rx");
    }
}
