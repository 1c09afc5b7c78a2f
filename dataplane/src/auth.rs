//! Logins on `device_secret` listeners: the login frame is
//! `{device_id}:{secret}` (split at the last `:`), and the device's owner
//! core says whether the secret is the device's.
//!
//! The secret never leaves the connection's core: its digest (bound to the
//! device id) is what the owner compares. When the owner is another core
//! the connection parks in this core's [`PendingQueries`] (bounded; a full
//! table refuses the login) until the answer comes back over the mesh or
//! [`QUERY_TIMEOUT`] passes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::FutureExt;
use shoal_protocols::config::validate_device_id;
use shoal_protocols::control::SecretDigest;

use crate::core::Core;
use crate::registry::{owner_shard, AuthVerdict};
use crate::signal::Kick;

/// Logins of one core that may wait for another core's answer at once.
pub(crate) const MAX_PENDING_QUERIES: usize = 1024;

/// How long a login waits for the owner's answer.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a login on a `device_secret` listener was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// The login frame is not `{device_id}:{secret}` with a valid id.
    Malformed(String),
    /// The owner refused it.
    Refused(AuthVerdict),
    /// Too many logins of this core are waiting for other cores.
    Busy,
    /// The owner did not answer in time.
    NoAnswer,
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "bad login frame: {why}"),
            Self::Refused(verdict) => f.write_str(verdict.reason()),
            Self::Busy => write!(
                f,
                "more than {MAX_PENDING_QUERIES} logins are waiting for the registry"
            ),
            Self::NoAnswer => write!(
                f,
                "the registry did not answer within {}s",
                QUERY_TIMEOUT.as_secs()
            ),
        }
    }
}

/// A login frame taken apart: the device id and the digest of the secret
/// it gave (the secret itself is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) device: Rc<str>,
    pub(crate) digest: SecretDigest,
}

/// Parses `{device_id}:{secret}` (split at the last `:`). The error never
/// quotes the frame, which may hold a secret.
pub(crate) fn parse_login(frame: &str) -> Result<Credentials, AuthFailure> {
    let Some((device, secret)) = frame.rsplit_once(':') else {
        return Err(AuthFailure::Malformed(
            "expected {device_id}:{secret}, found no ':'".to_owned(),
        ));
    };
    validate_device_id(device).map_err(AuthFailure::Malformed)?;
    if secret.is_empty() {
        return Err(AuthFailure::Malformed("the secret is empty".to_owned()));
    }
    Ok(Credentials {
        device: device.into(),
        digest: SecretDigest::of(device, secret.as_bytes()),
    })
}

/// Where a login waits for its answer.
#[derive(Debug, Default)]
struct QuerySlot {
    verdict: Cell<Option<AuthVerdict>>,
    product: RefCell<Option<Box<str>>>,
    kick: Kick,
}

/// Logins of this core waiting for another core's answer.
#[derive(Debug, Default)]
pub(crate) struct PendingQueries {
    next_query: Cell<u64>,
    waiting: RefCell<HashMap<u64, Rc<QuerySlot>>>,
}

impl PendingQueries {
    fn register(&self) -> Option<(u64, Rc<QuerySlot>)> {
        let mut waiting = self.waiting.borrow_mut();
        if waiting.len() >= MAX_PENDING_QUERIES {
            return None;
        }
        let query = self.next_query.get().wrapping_add(1);
        self.next_query.set(query);
        let slot = Rc::new(QuerySlot::default());
        waiting.insert(query, Rc::clone(&slot));
        Some((query, slot))
    }

    /// Hands the owner's answer to the login waiting for it (if it still
    /// waits).
    pub(crate) fn resolve(&self, query: u64, verdict: AuthVerdict, product: Option<Box<str>>) {
        let slot = self.waiting.borrow_mut().remove(&query);
        if let Some(slot) = slot {
            *slot.product.borrow_mut() = product;
            slot.verdict.set(Some(verdict));
            slot.kick.kick();
        }
    }

    fn forget(&self, query: u64) {
        self.waiting.borrow_mut().remove(&query);
    }

    /// Logins waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.borrow().len()
    }
}

/// Asks the owner of `credentials.device` whether the secret is right;
/// the device's product when it is.
pub(crate) async fn authenticate(
    core: &Core,
    credentials: &Credentials,
) -> Result<Box<str>, AuthFailure> {
    let device = &*credentials.device;
    let owner = owner_shard(device, core.shards());
    let mut product = None;
    let verdict = if owner == core.mesh_id() {
        let (verdict, p) = core
            .registry
            .borrow()
            .verify_with_product(device, &credentials.digest);
        product = p;
        Some(verdict)
    } else {
        let (query, slot) = core.auth_queries.register().ok_or(AuthFailure::Busy)?;
        core.send_registry_query(owner, query, device, credentials.digest);
        let answer = async {
            loop {
                slot.kick.kicked().await;
                if let Some(v) = slot.verdict.take() {
                    return Some((v, slot.product.borrow_mut().take()));
                }
            }
        };
        let timeout = async {
            glommio::timer::sleep(QUERY_TIMEOUT).await;
            None
        };
        let answered = answer.or(timeout).await;
        core.auth_queries.forget(query);
        answered.map(|(verdict, p)| {
            product = p;
            verdict
        })
    };
    match verdict {
        Some(AuthVerdict::Accepted) => Ok(product.unwrap_or_default()),
        Some(refused) => Err(AuthFailure::Refused(refused)),
        None => Err(AuthFailure::NoAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_frame_splits_at_the_last_colon_and_never_quotes_the_secret() {
        let c = parse_login("meter:1:s3cret-token").unwrap();
        assert_eq!(&*c.device, "meter:1");
        assert_eq!(c.digest, SecretDigest::of("meter:1", b"s3cret-token"));
        for bad in [
            "no-colon-secret",
            "a/b:secret-token",
            ":secret-token",
            "meter:",
        ] {
            let e = parse_login(bad).unwrap_err().to_string();
            assert!(
                !e.contains("secret-token") && !e.contains("no-colon"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_pending_table_is_bounded_and_answers_reach_their_login() {
        let pending = PendingQueries::default();
        let slots: Vec<_> = (0..MAX_PENDING_QUERIES)
            .map(|_| pending.register().unwrap())
            .collect();
        assert!(pending.register().is_none());
        let (query, slot) = &slots[7];
        pending.resolve(*query, AuthVerdict::WrongSecret, None);
        assert_eq!(slot.verdict.get(), Some(AuthVerdict::WrongSecret));
        assert_eq!(pending.len(), MAX_PENDING_QUERIES - 1);
        // A late answer for a forgotten login is ignored.
        pending.forget(slots[8].0);
        pending.resolve(slots[8].0, AuthVerdict::Accepted, None);
        assert_eq!(slots[8].1.verdict.get(), None);
        assert!(pending.register().is_some());
    }
}
