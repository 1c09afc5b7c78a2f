//! The device registry, sharded over the cores.
//!
//! Every device is owned by exactly one core: the shard
//! `stable_hash(id) % shards` (FNV-1a 64, the same on every core and
//! every run). The owner keeps the device in a compact [`DeviceTable`] and
//! answers whether a secret is the device's: directly when a connection on
//! the owner itself logs in, over the channel mesh otherwise.
//!
//! Changes are applied in two phases with the rest of a config:
//! [`RegistryShard::begin`] and [`RegistryShard::stage`] collect what a
//! snapshot or a delta brings (a snapshot builds a whole new table beside
//! the running one), [`RegistryShard::prepare`] checks it against the
//! products of the new state, and [`RegistryShard::commit`] makes it
//! visible, or [`RegistryShard::abort`] drops it.

mod table;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shoal_protocols::config::validate_device_id;
use shoal_protocols::control::SecretDigest;

pub(crate) use table::DeviceTable;

/// FNV-1a, 64 bits: a fixed hash, so every core (and every run) computes
/// the same owner for a device.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The shard (a core's mesh id) that owns device `id`.
pub(crate) fn owner_shard(id: &str, shards: usize) -> usize {
    (stable_hash(id.as_bytes()) % shards.max(1) as u64) as usize
}

/// One change to the registry, routed to the device's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceOp {
    /// Add the device or replace its product and secret.
    Upsert {
        id: Box<str>,
        product: Box<str>,
        secret: SecretDigest,
    },
    /// Remove the device.
    Remove { id: Box<str> },
}

impl DeviceOp {
    /// The device the change is about.
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Upsert { id, .. } | Self::Remove { id } => id,
        }
    }
}

/// The names of the products in the state being applied.
pub(crate) type ProductNames = Arc<HashSet<String>>;

/// What the owner says about a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthVerdict {
    /// The device is registered and the secret is its secret.
    Accepted,
    /// No such device in the registry.
    UnknownDevice,
    /// The device is registered with another secret.
    WrongSecret,
}

impl AuthVerdict {
    /// Why a login was refused, for the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::UnknownDevice => "unknown device",
            Self::WrongSecret => "wrong secret",
        }
    }
}

/// Staged changes of one apply.
#[derive(Debug)]
enum Changes {
    /// A snapshot: the new table, built while the parts arrive.
    Replace(DeviceTable),
    /// A delta: the changes, in order.
    Edit(Vec<DeviceOp>),
}

#[derive(Debug)]
struct Staged {
    ticket: u64,
    changes: Changes,
    /// The first problem met while staging; prepare reports it.
    error: Option<String>,
}

/// One core's shard of the registry: the running table and what the apply
/// in progress would make of it.
#[derive(Debug, Default)]
pub(crate) struct RegistryShard {
    table: DeviceTable,
    staged: Option<Staged>,
}

/// Compares two digests in time that does not depend on where they differ.
fn same_digest(a: &SecretDigest, b: &SecretDigest) -> bool {
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl RegistryShard {
    /// Devices this shard serves now.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes of the running table.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    /// Whether `presented` (the digest of the secret a connection gave) is
    /// device `id`'s.
    #[cfg(test)]
    pub(crate) fn verify(&self, id: &str, presented: &SecretDigest) -> AuthVerdict {
        self.verify_with_product(id, presented).0
    }

    /// [`Self::verify`], with the device's product when it is accepted.
    pub(crate) fn verify_with_product(
        &self,
        id: &str,
        presented: &SecretDigest,
    ) -> (AuthVerdict, Option<Box<str>>) {
        match self.table.get(id) {
            None => (AuthVerdict::UnknownDevice, None),
            Some(d) if same_digest(&d.digest, presented) => {
                (AuthVerdict::Accepted, Some(d.product.into()))
            }
            Some(_) => (AuthVerdict::WrongSecret, None),
        }
    }

    /// Starts staging the registry changes of apply `ticket`: a new, empty
    /// table (`replace`, a snapshot) or a list of changes (a delta).
    /// Whatever an earlier unfinished apply staged is dropped.
    pub(crate) fn begin(&mut self, ticket: u64, replace: bool) {
        self.staged = Some(Staged {
            ticket,
            changes: if replace {
                Changes::Replace(DeviceTable::default())
            } else {
                Changes::Edit(Vec::new())
            },
            error: None,
        });
    }

    /// Stages changes for apply `ticket` (a delta, unless [`Self::begin`]
    /// started a snapshot).
    pub(crate) fn stage(&mut self, ticket: u64, ops: Vec<DeviceOp>) {
        if self.staged.as_ref().is_none_or(|s| s.ticket != ticket) {
            self.begin(ticket, false);
        }
        let Some(staged) = self.staged.as_mut() else {
            return;
        };
        for op in ops {
            if staged.error.is_some() {
                return;
            }
            if let Err(e) = validate_device_id(op.id()) {
                staged.error = Some(e);
                return;
            }
            match &mut staged.changes {
                Changes::Edit(list) => list.push(op),
                Changes::Replace(table) => {
                    let result = match &op {
                        DeviceOp::Upsert {
                            id,
                            product,
                            secret,
                        } => table
                            .upsert(id, product, *secret)
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        DeviceOp::Remove { id } => {
                            if table.remove(id) {
                                Ok(())
                            } else {
                                Err(format!("device {id:?} does not exist"))
                            }
                        }
                    };
                    if let Err(e) = result {
                        staged.error = Some(e);
                    }
                }
            }
        }
    }

    /// Drops what apply `ticket` staged.
    pub(crate) fn discard(&mut self, ticket: u64) {
        if self.staged.as_ref().is_some_and(|s| s.ticket == ticket) {
            self.staged = None;
        }
    }

    /// Checks the staged changes of apply `ticket` against the products of
    /// the new state; returns how many devices the shard will serve after
    /// the commit. An apply that staged nothing here is an empty delta
    /// (still checked: a product removed while a device here uses it is
    /// refused).
    pub(crate) fn prepare(
        &mut self,
        ticket: u64,
        products: &ProductNames,
    ) -> Result<usize, String> {
        if self.staged.as_ref().is_none_or(|s| s.ticket != ticket) {
            self.begin(ticket, false);
        }
        let Some(staged) = self.staged.as_mut() else {
            return Ok(self.table.len());
        };
        if let Some(e) = &staged.error {
            return Err(e.clone());
        }
        match &mut staged.changes {
            Changes::Replace(table) => {
                for (name, devices) in table.product_usage() {
                    if devices > 0 && !products.contains(name) {
                        return Err(missing_product(table, name));
                    }
                }
                table.shrink_to_fit();
                Ok(table.len())
            }
            Changes::Edit(ops) => prepare_edit(&self.table, ops, products),
        }
    }

    /// Makes apply `ticket`'s changes visible; returns the devices that
    /// left the registry (their connections are to be closed).
    pub(crate) fn commit(&mut self, ticket: u64) -> Result<Vec<Box<str>>, String> {
        let Some(staged) = self.staged.take() else {
            return Ok(Vec::new());
        };
        if staged.ticket != ticket {
            return Ok(Vec::new());
        }
        match staged.changes {
            Changes::Replace(new) => {
                let removed = self
                    .table
                    .iter()
                    .filter(|d| !new.contains(d.id))
                    .map(|d| d.id.into())
                    .collect();
                self.table = new;
                Ok(removed)
            }
            Changes::Edit(ops) => {
                let mut removed: Vec<Box<str>> = Vec::new();
                // Devices this delta adds: removing one of them again
                // removes nothing that ran before.
                let mut added: HashSet<Box<str>> = HashSet::new();
                let mut first_error = None;
                for op in ops {
                    match op {
                        DeviceOp::Upsert {
                            id,
                            product,
                            secret,
                        } => match self.table.upsert(&id, &product, secret) {
                            Ok(true) => {
                                added.insert(id);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                first_error.get_or_insert(e.to_string());
                            }
                        },
                        DeviceOp::Remove { id } => {
                            if self.table.remove(&id) && !added.remove(&id) {
                                removed.push(id);
                            }
                        }
                    }
                }
                removed.retain(|id| !self.table.contains(id));
                removed.sort_unstable();
                removed.dedup();
                first_error.map_or(Ok(removed), Err)
            }
        }
    }

    /// Drops what apply `ticket` staged (another core refused it).
    pub(crate) fn abort(&mut self, ticket: u64) {
        self.discard(ticket);
    }
}

/// The error for a device whose product is not in the new state.
fn missing_product(table: &DeviceTable, product: &str) -> String {
    match table.iter().find(|d| d.product == product) {
        Some(d) => format!("device {:?}: product {product:?} does not exist", d.id),
        None => format!("product {product:?} does not exist"),
    }
}

/// Checks a delta's changes in order against `table`; returns the device
/// count after them.
fn prepare_edit(
    table: &DeviceTable,
    ops: &[DeviceOp],
    products: &ProductNames,
) -> Result<usize, String> {
    // Whether each device the delta touches is there after it.
    let mut after: HashMap<&str, Option<&str>> = HashMap::new();
    for op in ops {
        match op {
            DeviceOp::Upsert { id, product, .. } => {
                if !products.contains(&**product) {
                    return Err(format!("device {id:?}: product {product:?} does not exist"));
                }
                after.insert(id, Some(product));
            }
            DeviceOp::Remove { id } => {
                let present = match after.get(&**id) {
                    Some(state) => state.is_some(),
                    None => table.contains(id),
                };
                if !present {
                    return Err(format!("device {id:?} does not exist"));
                }
                after.insert(id, None);
            }
        }
    }
    let mut count = table.len();
    // Devices of the running table whose product the delta takes away.
    let mut leaving_product: HashMap<&str, u32> = HashMap::new();
    for (id, state) in &after {
        let before = table.get(id);
        match (before.is_some(), state.is_some()) {
            (false, true) => count += 1,
            (true, false) => count -= 1,
            _ => {}
        }
        if let Some(old) = before {
            if state.is_none_or(|p| p != old.product) {
                *leaving_product.entry(old.product).or_default() += 1;
            }
        }
    }
    for (product, devices) in table.product_usage() {
        if products.contains(product) {
            continue;
        }
        let leaving = leaving_product.get(product).copied().unwrap_or(0);
        if devices > leaving {
            let user = table
                .iter()
                .find(|d| d.product == product && !after.contains_key(d.id))
                .map_or_else(String::new, |d| format!(" (e.g. device {:?})", d.id));
            return Err(format!(
                "product {product:?} is removed but {} devices still use it{user}",
                devices - leaving
            ));
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
