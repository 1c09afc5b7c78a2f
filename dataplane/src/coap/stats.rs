//! The CoAP listeners' counters of one core, exported on `/metrics`
//! (`shoal_coap_*`); not part of the control protocol's figures.

use crate::board::CoapFigures;
use crate::stats::Counter;

/// Counters shared by every CoAP listener of a core.
#[derive(Debug, Default)]
pub(crate) struct CoapStats {
    /// Requests handled (duplicates not included).
    pub(crate) requests: Counter,
    /// Messages published on the bus.
    pub(crate) publishes: Counter,
    /// Notifications sent (first transmissions).
    pub(crate) notifications: Counter,
    /// Notifications sent again for want of an ACK.
    pub(crate) retransmissions: Counter,
    /// Notifications given up (the observation ended with them).
    pub(crate) give_ups: Counter,
    /// Duplicate CON and NON messages (answered again, not handled again).
    pub(crate) duplicates: Counter,
    /// Malformed or refused messages (RST, 4.xx, 5.xx or ignored).
    pub(crate) errors: Counter,
    /// What a bound dropped: queued notifications, observers refused,
    /// latest payloads not kept, datagrams the socket did not take.
    pub(crate) drops: Counter,
    /// Observations now (a gauge).
    pub(crate) observers: Counter,
}

impl CoapStats {
    pub(crate) fn figures(&self) -> CoapFigures {
        CoapFigures {
            requests: self.requests.get(),
            publishes: self.publishes.get(),
            notifications: self.notifications.get(),
            retransmissions: self.retransmissions.get(),
            give_ups: self.give_ups.get(),
            duplicates: self.duplicates.get(),
            errors: self.errors.get(),
            drops: self.drops.get(),
            observers: self.observers.get(),
        }
    }
}
