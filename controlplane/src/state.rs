//! The desired state in memory: a copy of what the store holds, loaded at
//! start and updated after every commit, so validation and snapshots never
//! read the database.
//!
//! Listeners, products, routes and streams are few and kept as plain maps
//! ([`SmallState`]); devices may be millions and are kept compactly: the id
//! as a boxed string, the product name shared between all its devices, and
//! the secret's digest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use shoal_protocols::control::{
    wire, ApiError, Change, Device, ErrorCode, Listener, Product, Resource, ResourceKind, Route,
    SecretDigest, Stream, ToDataPlane, SNAPSHOT_PART_RESOURCES,
};

/// The most devices a `Get` of every device answers with: a million
/// devices would not fit in one control frame. They are the first ones by
/// id.
pub(crate) const GET_DEVICES_LIMIT: usize = 100_000;

/// Encoded bytes a `Get` answer stays under, leaving room below
/// [`wire::DEFAULT_MAX_FRAME_BYTES`] for the frame around it.
const GET_ANSWER_BYTES_LIMIT: usize = wire::DEFAULT_MAX_FRAME_BYTES as usize - 1024 * 1024;

/// A route and its place in the evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderedRoute {
    /// Routes are evaluated by increasing order number.
    pub(crate) order: u64,
    /// The route.
    pub(crate) route: Route,
}

/// The kinds that stay small: copied whole when a change is validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SmallState {
    /// Listeners by name.
    pub(crate) listeners: BTreeMap<String, Listener>,
    /// Products by name.
    pub(crate) products: BTreeMap<String, Product>,
    /// Routes in evaluation order (increasing `order`).
    pub(crate) routes: Vec<OrderedRoute>,
    /// Stream rules by name.
    pub(crate) streams: BTreeMap<String, Stream>,
}

impl SmallState {
    /// The route called `name`.
    pub(crate) fn route(&self, name: &str) -> Option<&OrderedRoute> {
        self.routes.iter().find(|r| r.route.name == name)
    }

    /// The order number a new route gets: after every other one.
    pub(crate) fn next_route_order(&self) -> u64 {
        self.routes.last().map_or(1, |r| r.order + 1)
    }

    /// Creates or replaces a route; a replaced route keeps its place, a new
    /// one goes last.
    pub(crate) fn upsert_route(&mut self, route: Route) {
        if let Some(existing) = self.routes.iter_mut().find(|r| r.route.name == route.name) {
            existing.route = route;
        } else {
            let order = self.next_route_order();
            self.routes.push(OrderedRoute { order, route });
        }
    }

    /// Removes a route; false when there is none of that name.
    pub(crate) fn remove_route(&mut self, name: &str) -> bool {
        let before = self.routes.len();
        self.routes.retain(|r| r.route.name != name);
        self.routes.len() != before
    }

    /// The routes in evaluation order, without their order numbers.
    pub(crate) fn route_list(&self) -> Vec<Route> {
        self.routes.iter().map(|r| r.route.clone()).collect()
    }
}

/// A device as kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceRecord {
    /// Its product's name, shared with the product's other devices.
    product: Arc<str>,
    /// Digest of its secret.
    secret: SecretDigest,
}

/// The whole desired state at one version.
#[derive(Debug, Default)]
pub(crate) struct DesiredState {
    version: u64,
    small: SmallState,
    devices: BTreeMap<Box<str>, DeviceRecord>,
    /// Every product name devices refer to, with how many do.
    product_use: HashMap<Arc<str>, u64>,
}

impl DesiredState {
    /// The version of this state.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Sets the version (a version bump that changes nothing else).
    pub(crate) fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Listeners, products, routes and streams.
    pub(crate) fn small(&self) -> &SmallState {
        &self.small
    }

    /// The device with this id.
    pub(crate) fn device(&self, id: &str) -> Option<Device> {
        self.devices.get(id).map(|r| Device {
            id: id.to_owned(),
            product: r.product.to_string(),
            secret: r.secret,
        })
    }

    /// The product of the device with this id.
    pub(crate) fn device_product(&self, id: &str) -> Option<&str> {
        self.devices.get(id).map(|r| &*r.product)
    }

    /// Devices whose product is `product`.
    pub(crate) fn devices_using(&self, product: &str) -> u64 {
        self.product_use.get(product).copied().unwrap_or(0)
    }

    /// The first device (by id) of `product` for which `skip` is false.
    /// Walks the registry: only for error messages.
    pub(crate) fn find_device_using(
        &self,
        product: &str,
        skip: impl Fn(&str) -> bool,
    ) -> Option<String> {
        self.devices
            .iter()
            .find(|(id, r)| &*r.product == product && !skip(id))
            .map(|(id, _)| id.to_string())
    }

    /// Resources per kind, in [`ResourceKind::ALL`] order.
    pub(crate) fn counts(&self) -> Vec<(ResourceKind, u64)> {
        ResourceKind::ALL
            .iter()
            .map(|&kind| {
                let n = match kind {
                    ResourceKind::Listener => self.small.listeners.len(),
                    ResourceKind::Product => self.small.products.len(),
                    ResourceKind::Device => self.devices.len(),
                    ResourceKind::Route => self.small.routes.len(),
                    ResourceKind::Stream => self.small.streams.len(),
                    _ => 0,
                };
                (kind, n as u64)
            })
            .collect()
    }

    /// Adds a resource read from the store (`route_order` for routes).
    pub(crate) fn insert_loaded(&mut self, resource: Resource, route_order: u64) {
        match resource {
            Resource::Listener(l) => {
                self.small.listeners.insert(l.name.clone(), l);
            }
            Resource::Product(p) => {
                self.small.products.insert(p.name.clone(), p);
            }
            Resource::Device(d) => self.upsert_device(d),
            Resource::Route(route) => {
                let at = self.small.routes.partition_point(|r| r.order < route_order);
                self.small.routes.insert(
                    at,
                    OrderedRoute {
                        order: route_order,
                        route,
                    },
                );
            }
            Resource::Stream(s) => {
                self.small.streams.insert(s.name.clone(), s);
            }
            _ => {}
        }
    }

    /// Installs a committed change: the new small state, the device
    /// changes among `changes`, and the new version.
    pub(crate) fn commit(&mut self, version: u64, changes: &[Change], small: SmallState) {
        for change in changes {
            match change {
                Change::Upsert(Resource::Device(d)) => self.upsert_device(d.clone()),
                Change::Remove(key) if key.kind == ResourceKind::Device => {
                    self.remove_device(&key.name);
                }
                _ => {}
            }
        }
        self.small = small;
        self.version = version;
    }

    fn upsert_device(&mut self, device: Device) {
        let product = self.intern_product(&device.product);
        let record = DeviceRecord {
            product,
            secret: device.secret,
        };
        if let Some(old) = self.devices.insert(device.id.into_boxed_str(), record) {
            self.release_product(&old.product);
        }
    }

    fn remove_device(&mut self, id: &str) {
        if let Some(old) = self.devices.remove(id) {
            self.release_product(&old.product);
        }
    }

    /// The shared name of `product`, counting one more device using it.
    fn intern_product(&mut self, product: &str) -> Arc<str> {
        if let Some(name) = self
            .product_use
            .get_key_value(product)
            .map(|(k, _)| Arc::clone(k))
        {
            if let Some(count) = self.product_use.get_mut(product) {
                *count += 1;
            }
            return name;
        }
        let name: Arc<str> = Arc::from(product);
        self.product_use.insert(Arc::clone(&name), 1);
        name
    }

    fn release_product(&mut self, product: &str) {
        if let Some(count) = self.product_use.get_mut(product) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.product_use.remove(product);
            }
        }
    }

    /// Every resource, kind by kind in [`ResourceKind::ALL`] order, routes
    /// in evaluation order.
    pub(crate) fn resources(&self) -> impl Iterator<Item = Resource> + '_ {
        let small = &self.small;
        small
            .listeners
            .values()
            .cloned()
            .map(Resource::Listener)
            .chain(small.products.values().cloned().map(Resource::Product))
            .chain(self.devices.iter().map(|(id, r)| {
                Resource::Device(Device {
                    id: id.to_string(),
                    product: r.product.to_string(),
                    secret: r.secret,
                })
            }))
            .chain(
                small
                    .routes
                    .iter()
                    .map(|r| Resource::Route(r.route.clone())),
            )
            .chain(small.streams.values().cloned().map(Resource::Stream))
    }

    /// The state as snapshot parts of [`SNAPSHOT_PART_RESOURCES`]
    /// resources; at least one part, the last one marked.
    pub(crate) fn snapshot_parts(&self) -> SnapshotParts<impl Iterator<Item = Resource> + '_> {
        SnapshotParts {
            version: self.version,
            resources: self.resources().peekable(),
            next_part: 0,
            done: false,
        }
    }

    /// The resources a `Get` answers with: one by name, or every resource
    /// of the kind (devices: at most [`GET_DEVICES_LIMIT`], the first by
    /// id, and fewer if they would not fit in a frame).
    pub(crate) fn get(
        &self,
        kind: ResourceKind,
        name: Option<&str>,
    ) -> Result<Vec<Resource>, ApiError> {
        let small = &self.small;
        if let Some(name) = name {
            let found = match kind {
                ResourceKind::Listener => {
                    small.listeners.get(name).cloned().map(Resource::Listener)
                }
                ResourceKind::Product => small.products.get(name).cloned().map(Resource::Product),
                ResourceKind::Device => self.device(name).map(Resource::Device),
                ResourceKind::Route => small.route(name).map(|r| Resource::Route(r.route.clone())),
                ResourceKind::Stream => small.streams.get(name).cloned().map(Resource::Stream),
                _ => None,
            };
            return found.map(|r| vec![r]).ok_or_else(|| ApiError {
                code: ErrorCode::NotFound,
                message: format!("{kind} {name:?} does not exist"),
            });
        }
        let all = match kind {
            ResourceKind::Listener => small
                .listeners
                .values()
                .cloned()
                .map(Resource::Listener)
                .collect(),
            ResourceKind::Product => small
                .products
                .values()
                .cloned()
                .map(Resource::Product)
                .collect(),
            ResourceKind::Device => self.first_devices(),
            ResourceKind::Route => small
                .routes
                .iter()
                .map(|r| Resource::Route(r.route.clone()))
                .collect(),
            ResourceKind::Stream => small
                .streams
                .values()
                .cloned()
                .map(Resource::Stream)
                .collect(),
            _ => Vec::new(),
        };
        Ok(all)
    }

    fn first_devices(&self) -> Vec<Resource> {
        let mut out = Vec::with_capacity(self.devices.len().min(GET_DEVICES_LIMIT));
        // Upper bound of one device's postcard size: two length-prefixed
        // strings, the digest and the enum tag.
        let mut bytes = 0usize;
        for (id, r) in self.devices.iter().take(GET_DEVICES_LIMIT) {
            bytes += id.len() + r.product.len() + 16 + 12;
            if bytes > GET_ANSWER_BYTES_LIMIT {
                break;
            }
            out.push(Resource::Device(Device {
                id: id.to_string(),
                product: r.product.to_string(),
                secret: r.secret,
            }));
        }
        out
    }
}

/// The parts of a snapshot, made one at a time.
#[derive(Debug)]
pub(crate) struct SnapshotParts<I: Iterator<Item = Resource>> {
    version: u64,
    resources: std::iter::Peekable<I>,
    next_part: u32,
    done: bool,
}

impl<I: Iterator<Item = Resource>> Iterator for SnapshotParts<I> {
    type Item = ToDataPlane;

    fn next(&mut self) -> Option<ToDataPlane> {
        if self.done {
            return None;
        }
        let resources: Vec<Resource> = self
            .resources
            .by_ref()
            .take(SNAPSHOT_PART_RESOURCES)
            .collect();
        let last = self.resources.peek().is_none();
        self.done = last;
        let part = self.next_part;
        self.next_part += 1;
        Some(ToDataPlane::Snapshot {
            version: self.version,
            part,
            last,
            resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::{Identity, ListenerAuth, ListenerProtocol};

    fn with_devices(n: usize) -> DesiredState {
        let mut state = DesiredState::default();
        for i in (0..n).rev() {
            let id = format!("dev-{i:06}");
            let secret = SecretDigest::of(&id, b"secret-123");
            state.insert_loaded(
                Resource::Device(Device {
                    id,
                    product: "meter".into(),
                    secret,
                }),
                0,
            );
        }
        state
    }

    #[test]
    fn get_of_every_device_is_bounded_and_sorted() {
        let state = with_devices(GET_DEVICES_LIMIT + 1);
        assert_eq!(state.devices_using("meter"), GET_DEVICES_LIMIT as u64 + 1);
        let all = state.get(ResourceKind::Device, None).unwrap();
        assert_eq!(all.len(), GET_DEVICES_LIMIT);
        assert_eq!(all[0].name(), "dev-000000");
        assert_eq!(all[GET_DEVICES_LIMIT - 1].name(), "dev-099999");
        let last = format!("dev-{GET_DEVICES_LIMIT:06}");
        assert_eq!(
            state.get(ResourceKind::Device, Some(&last)).unwrap().len(),
            1
        );
    }

    #[test]
    fn snapshot_parts_are_full_and_the_last_is_marked() {
        let mut state = with_devices(2 * SNAPSHOT_PART_RESOURCES - 1);
        state.insert_loaded(
            Resource::Listener(Listener {
                name: "l".into(),
                protocol: ListenerProtocol::Udp,
                bind: "127.0.0.1:1".into(),
                max_connections: 1,
                max_frame_bytes: 100,
                idle_timeout_ms: 1000,
                framing: None,
                identity: Identity::PeerAddress,
                auth: ListenerAuth::None,
            }),
            0,
        );
        let parts: Vec<(u32, bool, usize, String)> = state
            .snapshot_parts()
            .map(|p| match p {
                ToDataPlane::Snapshot {
                    part,
                    last,
                    resources,
                    ..
                } => (part, last, resources.len(), resources[0].name().to_owned()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            parts,
            [
                (0, false, SNAPSHOT_PART_RESOURCES, "l".to_owned()),
                (1, true, SNAPSHOT_PART_RESOURCES, "dev-008191".to_owned()),
            ]
        );
        // An empty state still makes one (last) part.
        let empty = DesiredState::default();
        let parts: Vec<ToDataPlane> = empty.snapshot_parts().collect();
        assert!(matches!(
            parts.as_slice(),
            [ToDataPlane::Snapshot { part: 0, last: true, resources, .. }] if resources.is_empty()
        ));
    }

    #[test]
    fn product_use_follows_device_changes() {
        let mut state = with_devices(3);
        let moved = Device {
            id: "dev-000001".into(),
            product: "gauge".into(),
            secret: SecretDigest::of("dev-000001", b"secret-123"),
        };
        let removal = Change::Remove(shoal_protocols::control::ResourceKey {
            kind: ResourceKind::Device,
            name: "dev-000002".into(),
        });
        let small = state.small().clone();
        state.commit(
            2,
            &[Change::Upsert(Resource::Device(moved)), removal],
            small,
        );
        assert_eq!(state.devices_using("meter"), 1);
        assert_eq!(state.devices_using("gauge"), 1);
        assert_eq!(state.device_product("dev-000001"), Some("gauge"));
        assert_eq!(state.device("dev-000002"), None);
        assert_eq!(state.version(), 2);
    }
}
