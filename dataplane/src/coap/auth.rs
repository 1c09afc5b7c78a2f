//! Device secrets on `device_secret` CoAP listeners: the device gives its
//! secret as a `secret=` Uri-Query on every request, e.g.
//! `coap://host/devices/d1/up?secret=s3cr3t`.
//!
//! ```text
//!  request ─▶ digest(device, secret) ─▶ proof cache (peer, device) fresh and equal? ─▶ admitted
//!                                           │ no
//!                      owner core = this one ├─▶ registry shard, at once ─▶ admitted / 4.01
//!                                           └─▶ crate::auth::authenticate on a task (bounded)
//!                                                ─▶ the request is handled again when the answer comes
//! ```
//!
//! A proof is trusted for [`PROOF_TTL_MS`], so a steady device costs one
//! registry check per peer and device per period, and a secret changed in
//! the registry takes effect within it. A device removed from the registry
//! (or kicked) loses its proofs at once when it is observing (its session is
//! in the core's device index and is closed); a device that only posts keeps
//! them until they expire, so removal takes effect within the same period.
//! Secrets are never logged: only
//! their digest is kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use shoal_protocols::coap::{decode, Code, Message};
use shoal_protocols::config::ListenerAuth;
use shoal_protocols::control::SecretDigest;
use tracing::warn;

use super::exchange::{handle_request, respond_code};
use super::{CoapListenerRt, MAX_AUTH_IN_FLIGHT, MAX_PROOFS, PROOF_TTL_MS};
use crate::auth::{authenticate, AuthFailure, Credentials};
use crate::core::Core;
use crate::registry::{owner_shard, AuthVerdict};

/// Proofs one peer may hold (the oldest goes to make room).
const PROOFS_PER_PEER: usize = 8;

/// A device whose secret a peer gave, and when the registry agreed.
#[derive(Debug)]
struct Proof {
    device: Rc<str>,
    digest: SecretDigest,
    proven_ms: u64,
}

/// Secrets proven recently, per peer.
#[derive(Debug, Default)]
pub(super) struct ProofCache {
    by_peer: HashMap<SocketAddr, Vec<Proof>>,
    len: usize,
}

/// Compares two digests in time that does not depend on where they differ.
fn same_digest(a: &SecretDigest, b: &SecretDigest) -> bool {
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl ProofCache {
    /// Whether `peer` proved `digest` for `device` less than the TTL ago.
    pub(super) fn holds(
        &self,
        peer: SocketAddr,
        device: &str,
        digest: &SecretDigest,
        now_ms: u64,
    ) -> bool {
        self.by_peer.get(&peer).is_some_and(|proofs| {
            proofs.iter().any(|p| {
                &*p.device == device
                    && now_ms < p.proven_ms.saturating_add(PROOF_TTL_MS)
                    && same_digest(&p.digest, digest)
            })
        })
    }

    /// Remembers a proof; a full cache (after expiry) keeps none (the next
    /// request is checked again).
    pub(super) fn insert(
        &mut self,
        peer: SocketAddr,
        device: &str,
        digest: SecretDigest,
        now_ms: u64,
    ) {
        if self.len >= MAX_PROOFS {
            self.expire(now_ms);
        }
        if self.len >= MAX_PROOFS && !self.by_peer.contains_key(&peer) {
            return;
        }
        let proofs = self.by_peer.entry(peer).or_default();
        let before = proofs.len();
        proofs.retain(|p| &*p.device != device);
        if proofs.len() >= PROOFS_PER_PEER {
            proofs.remove(0);
        }
        if proofs.len() < before || self.len < MAX_PROOFS {
            proofs.push(Proof {
                device: device.into(),
                digest,
                proven_ms: now_ms,
            });
        }
        self.len = self.len + proofs.len() - before;
    }

    /// Proofs held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Forgets the proofs older than the TTL.
    pub(super) fn expire(&mut self, now_ms: u64) {
        let mut len = 0;
        self.by_peer.retain(|_, proofs| {
            proofs.retain(|p| now_ms < p.proven_ms.saturating_add(PROOF_TTL_MS));
            len += proofs.len();
            !proofs.is_empty()
        });
        self.len = len;
    }

    /// Forgets every proof of `device` (it left the registry, or was
    /// kicked).
    pub(super) fn forget_device(&mut self, device: &str) {
        let mut len = 0;
        self.by_peer.retain(|_, proofs| {
            proofs.retain(|p| &*p.device != device);
            len += proofs.len();
            !proofs.is_empty()
        });
        self.len = len;
    }
}

/// Whether a request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    Admitted,
    /// Refused: answered already.
    Refused,
    /// The registry of another core is asked; the request is handled again
    /// (or refused) when it answers.
    Pending,
}

/// Checks the device's secret as the listener requires.
pub(super) fn admit(
    core: &Rc<Core>,
    rt: &Rc<CoapListenerRt>,
    peer: SocketAddr,
    device: &str,
    request: &Message<'_>,
    datagram: &[u8],
) -> Admission {
    if rt.auth != ListenerAuth::DeviceSecret {
        return Admission::Admitted;
    }
    let secret = match request.query_value("secret") {
        Some(secret) if !secret.is_empty() => secret,
        _ => {
            refuse(core, rt, peer, device, "no secret= query");
            respond_code(
                core,
                rt,
                peer,
                &request.header(),
                Code::UNAUTHORIZED,
                "this listener needs the device's secret: ?secret=...",
            );
            return Admission::Refused;
        }
    };
    let digest = SecretDigest::of(device, secret);
    let now = rt.now_ms();
    if rt.proofs.borrow().holds(peer, device, &digest, now) {
        return Admission::Admitted;
    }
    if owner_shard(device, core.shards()) == core.mesh_id() {
        let (verdict, _product) = core.registry.borrow().verify_with_product(device, &digest);
        if verdict == AuthVerdict::Accepted {
            rt.proofs.borrow_mut().insert(peer, device, digest, now);
            return Admission::Admitted;
        }
        refuse(core, rt, peer, device, verdict.reason());
        respond_code(
            core,
            rt,
            peer,
            &request.header(),
            Code::UNAUTHORIZED,
            "unknown device or wrong secret",
        );
        return Admission::Refused;
    }
    if rt.auth_in_flight.get() >= MAX_AUTH_IN_FLIGHT {
        core.coap.drops.inc();
        refuse(core, rt, peer, device, "too many registry checks in flight");
        respond_code(
            core,
            rt,
            peer,
            &request.header(),
            Code::SERVICE_UNAVAILABLE,
            "the registry is busy; retry later",
        );
        return Admission::Refused;
    }
    rt.auth_in_flight.set(rt.auth_in_flight.get() + 1);
    let credentials = Credentials {
        device: device.into(),
        digest,
    };
    glommio::spawn_local(check_remote(
        Rc::clone(core),
        Rc::clone(rt),
        peer,
        datagram.to_vec(),
        credentials,
    ))
    .detach();
    Admission::Pending
}

/// Asks the device's owner core, then handles the request (kept as its
/// datagram) or refuses it.
async fn check_remote(
    core: Rc<Core>,
    rt: Rc<CoapListenerRt>,
    peer: SocketAddr,
    datagram: Vec<u8>,
    credentials: Credentials,
) {
    let verdict = authenticate(&core, &credentials).await;
    rt.auth_in_flight
        .set(rt.auth_in_flight.get().saturating_sub(1));
    if !rt.open.get() || rt.removed.is_raised() || core.stopping.is_raised() {
        // The listener went away meanwhile: nothing to answer from.
        return;
    }
    let Ok(request) = decode(&datagram) else {
        return;
    };
    let device = &*credentials.device;
    match verdict {
        Ok(_product) => {
            let now = rt.now_ms();
            rt.proofs
                .borrow_mut()
                .insert(peer, device, credentials.digest, now);
            handle_request(&core, &rt, peer, &request, None, None, true);
        }
        Err(failure) => {
            refuse(&core, &rt, peer, device, &failure.to_string());
            let (code, text) = match failure {
                AuthFailure::Busy | AuthFailure::NoAnswer => (
                    Code::SERVICE_UNAVAILABLE,
                    "the registry could not answer; retry later",
                ),
                AuthFailure::Refused(_) | AuthFailure::Malformed(_) => {
                    (Code::UNAUTHORIZED, "unknown device or wrong secret")
                }
            };
            respond_code(&core, &rt, peer, &request.header(), code, text);
        }
    }
}

/// Counts and logs (at a limited rate, without the secret) a refusal.
fn refuse(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, device: &str, why: &str) {
    core.stats.auth_failures.inc();
    if let Some(more) = rt.auth_log.allow() {
        warn!(listener = %rt.name, %peer, device = %device, suppressed = more, "coap device refused: {why}");
    }
}
