//! Checks a requested change against the desired state before anything is
//! pushed or stored.
//!
//! The request's changes are applied, in order, to a staged copy of what
//! they touch: the small kinds are copied whole, devices are staged in an
//! overlay over the registry, so a batch of devices costs what the batch
//! holds, not what the registry holds. Then the staged result is checked
//! and compared with the current state ([`crate::diff`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_protocols::config::{validate_device_id, ConfigError, PoolSettings, RuntimeSettings};
use shoal_protocols::control::{
    to_dataplane_config, ApiError, Change, Device, DiffEntry, ErrorCode, Listener, Product,
    Resource, ResourceKey, ResourceKind, Stream,
};
use shoal_protocols::topic::validate_topic_filter;

use crate::diff::{transition, DeviceStep};
use crate::state::{DesiredState, SmallState};

/// Most bytes of a stream's publish key.
const MAX_PUBLISH_KEY_BYTES: usize = 128;

/// A checked change, ready to push and store.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Listeners, products, routes and streams after the change.
    pub(crate) small: SmallState,
    /// What changes, for people.
    pub(crate) diff: Vec<DiffEntry>,
    /// The effective changes, in an order a data plane can apply.
    pub(crate) forward: Vec<Change>,
    /// Changes that bring a data plane back to the current state.
    pub(crate) inverse: Vec<Change>,
}

fn invalid(message: String) -> ApiError {
    ApiError {
        code: ErrorCode::Invalid,
        message,
    }
}

fn not_found(key: &ResourceKey) -> ApiError {
    ApiError {
        code: ErrorCode::NotFound,
        message: format!("{key} does not exist, so it cannot be removed"),
    }
}

/// The request applied to a copy of what it touches.
#[derive(Debug)]
struct Staging<'a> {
    base: &'a DesiredState,
    small: SmallState,
    /// Devices the request touches: `None` means removed.
    devices: BTreeMap<String, Option<Device>>,
    /// Change in devices per product.
    product_use: HashMap<String, i64>,
    listeners_touched: BTreeSet<String>,
    routes_touched: bool,
    products_touched: BTreeSet<String>,
    streams_touched: BTreeSet<String>,
}

impl<'a> Staging<'a> {
    fn new(base: &'a DesiredState) -> Self {
        Self {
            base,
            small: base.small().clone(),
            devices: BTreeMap::new(),
            product_use: HashMap::new(),
            listeners_touched: BTreeSet::new(),
            routes_touched: false,
            products_touched: BTreeSet::new(),
            streams_touched: BTreeSet::new(),
        }
    }

    /// The product of device `id` as staged so far.
    fn staged_device_product(&self, id: &str) -> Option<String> {
        match self.devices.get(id) {
            Some(staged) => staged.as_ref().map(|d| d.product.clone()),
            None => self.base.device_product(id).map(str::to_owned),
        }
    }

    fn count_use(&mut self, product: String, delta: i64) {
        *self.product_use.entry(product).or_insert(0) += delta;
    }

    fn apply(&mut self, change: &Change) -> Result<(), ApiError> {
        match change {
            Change::Upsert(resource) => self.upsert(resource),
            Change::Remove(key) => self.remove(key),
            _ => Err(invalid(
                "this control plane does not know a change in the request; \
                 run matching releases of shoalctl and shoal-controlplane"
                    .to_owned(),
            )),
        }
    }

    fn upsert(&mut self, resource: &Resource) -> Result<(), ApiError> {
        match resource {
            Resource::Listener(l) => {
                self.listeners_touched.insert(l.name.clone());
                self.small.listeners.insert(l.name.clone(), l.clone());
            }
            Resource::Product(p) => {
                self.products_touched.insert(p.name.clone());
                self.small.products.insert(p.name.clone(), p.clone());
            }
            Resource::Device(d) => {
                if let Some(old) = self.staged_device_product(&d.id) {
                    self.count_use(old, -1);
                }
                self.count_use(d.product.clone(), 1);
                self.devices.insert(d.id.clone(), Some(d.clone()));
            }
            Resource::Route(r) => {
                self.routes_touched = true;
                self.small.upsert_route(r.clone());
            }
            Resource::Stream(s) => {
                self.streams_touched.insert(s.name.clone());
                self.small.streams.insert(s.name.clone(), s.clone());
            }
            _ => {
                return Err(invalid(format!(
                    "{}: this control plane does not know this kind of resource",
                    resource.key()
                )))
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &ResourceKey) -> Result<(), ApiError> {
        let existed = match key.kind {
            ResourceKind::Listener => {
                self.listeners_touched.insert(key.name.clone());
                self.small.listeners.remove(&key.name).is_some()
            }
            ResourceKind::Product => self.small.products.remove(&key.name).is_some(),
            ResourceKind::Device => match self.staged_device_product(&key.name) {
                Some(product) => {
                    self.count_use(product, -1);
                    self.devices.insert(key.name.clone(), None);
                    true
                }
                None => false,
            },
            ResourceKind::Route => {
                self.routes_touched = true;
                self.small.remove_route(&key.name)
            }
            ResourceKind::Stream => self.small.streams.remove(&key.name).is_some(),
            _ => false,
        };
        if existed {
            Ok(())
        } else {
            Err(not_found(key))
        }
    }

    /// Checks the staged state as a whole.
    fn check(&self) -> Result<(), ApiError> {
        if self.routes_touched || !self.listeners_touched.is_empty() {
            check_listeners_and_routes(&self.small, &self.listeners_touched)?;
        }
        self.check_removed_products()?;
        for name in &self.products_touched {
            if let Some(p) = self.small.products.get(name) {
                check_product(p)?;
            }
        }
        for name in &self.streams_touched {
            if let Some(s) = self.small.streams.get(name) {
                check_stream(s)?;
            }
        }
        for d in self.devices.values().flatten() {
            validate_device_id(&d.id).map_err(|e| invalid(format!("device {:?}: {e}", d.id)))?;
            if !self.small.products.contains_key(&d.product) {
                return Err(invalid(format!(
                    "device {:?}: product {:?} does not exist (add it with: shoalctl product add {})",
                    d.id, d.product, d.product
                )));
            }
        }
        Ok(())
    }

    /// A product that goes away may not leave devices behind.
    fn check_removed_products(&self) -> Result<(), ApiError> {
        let removed = self
            .base
            .small()
            .products
            .keys()
            .filter(|name| !self.small.products.contains_key(*name));
        for product in removed {
            let delta = self.product_use.get(product).copied().unwrap_or(0);
            let used = i64::try_from(self.base.devices_using(product)).unwrap_or(i64::MAX) + delta;
            if used <= 0 {
                continue;
            }
            let example = self
                .devices
                .values()
                .flatten()
                .find(|d| &d.product == product)
                .map(|d| d.id.clone())
                .or_else(|| {
                    self.base
                        .find_device_using(product, |id| self.devices.contains_key(id))
                })
                .unwrap_or_default();
            let devices_use = if used == 1 {
                "device uses"
            } else {
                "devices use"
            };
            return Err(invalid(format!(
                "product {product:?} cannot be removed: {used} {devices_use} it (e.g. {example:?}); \
                 remove them or move them to another product first"
            )));
        }
        Ok(())
    }

    /// The devices the request touches, before and after.
    fn device_steps(&self) -> Vec<(&str, Option<Device>, Option<&Device>)> {
        self.devices
            .iter()
            .map(|(id, after)| (id.as_str(), self.base.device(id), after.as_ref()))
            .collect()
    }
}

/// Checks `changes` against `state` and works out what they change.
pub(crate) fn plan(state: &DesiredState, changes: &[Change]) -> Result<Plan, ApiError> {
    let mut staging = Staging::new(state);
    for change in changes {
        staging.apply(change)?;
    }
    staging.check()?;
    let steps = staging.device_steps();
    let forward = transition(
        state.small(),
        &staging.small,
        steps
            .iter()
            .map(|(id, before, after)| -> DeviceStep<'_> { (id, before.as_ref(), *after) }),
    );
    let inverse = transition(
        &staging.small,
        state.small(),
        steps
            .iter()
            .map(|(id, before, after)| -> DeviceStep<'_> { (id, *after, before.as_ref()) }),
    );
    Ok(Plan {
        small: staging.small,
        diff: forward.diff,
        forward: forward.changes,
        inverse: inverse.changes,
    })
}

/// Runs the data plane's own config check on the staged listeners and
/// routes, with default runtime and pool settings. The listeners the
/// request touched are listed last, so a clash is reported on them.
fn check_listeners_and_routes(
    small: &SmallState,
    touched: &BTreeSet<String>,
) -> Result<(), ApiError> {
    let (mut listeners, changed): (Vec<Listener>, Vec<Listener>) = small
        .listeners
        .values()
        .cloned()
        .partition(|l| !touched.contains(&l.name));
    listeners.extend(changed);
    let config = to_dataplane_config(
        RuntimeSettings::default(),
        PoolSettings::default(),
        &listeners,
        &small.route_list(),
        &[],
        &[],
    );
    config
        .validate()
        .map_err(|e| invalid(name_the_resource(&e)))
}

/// `listener[1] "x": framing: ...` becomes `listener "x": framing: ...`.
fn name_the_resource(e: &ConfigError) -> String {
    for kind in ["listener", "route"] {
        let indexed = e
            .location
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.split_once("] "));
        if let Some((_, named)) = indexed {
            return format!("{kind} {named}: {}", e.reason);
        }
    }
    e.to_string()
}

fn check_product(p: &Product) -> Result<(), ApiError> {
    if p.name.trim().is_empty() {
        return Err(invalid("product name is empty".to_owned()));
    }
    for (field, filters) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
        for filter in filters {
            let plain = filter.replace("{device}", "device");
            validate_topic_filter(&plain).map_err(|e| {
                invalid(format!(
                    "product {:?}: {field} entry {filter:?} is not a topic filter: {e}",
                    p.name
                ))
            })?;
        }
    }
    Ok(())
}

fn check_stream(s: &Stream) -> Result<(), ApiError> {
    let levels: Vec<&str> = s.name.split('/').collect();
    let well_formed = levels.len() == 2
        && levels
            .iter()
            .all(|l| !l.is_empty() && !l.contains(['+', '#']) && !l.chars().any(char::is_control));
    let app_ok = levels.first().is_some_and(|app| *app != "*");
    if !well_formed || !app_ok {
        return Err(invalid(format!(
            "stream {:?}: the name is `app/name` or `app/*` (two non-empty levels, no `+` or `#`)",
            s.name
        )));
    }
    if let Some(key) = &s.publish_key {
        let printable = key.bytes().all(|b| (b' '..=b'~').contains(&b));
        if key.is_empty() || key.len() > MAX_PUBLISH_KEY_BYTES || !printable {
            return Err(invalid(format!(
                "stream {:?}: publish_key must be 1 to {MAX_PUBLISH_KEY_BYTES} printable ASCII \
                 characters",
                s.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
