//! The small parts of the desired state the control client keeps:
//! listeners, products, routes (in evaluation order) and streams. Devices
//! are not kept here: they go to their owner cores as [`DeviceOp`]s.

use std::collections::HashSet;
use std::sync::Arc;

use shoal_protocols::config::{DataPlaneConfig, PoolSettings, RuntimeSettings};
use shoal_protocols::control::{
    to_dataplane_config, Change, Listener, Product, Resource, ResourceKey, ResourceKind, Route,
    Stream,
};

use crate::registry::{DeviceOp, ProductNames};

/// Listeners, products, routes and streams of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DesiredState {
    pub(crate) listeners: Vec<Listener>,
    pub(crate) products: Vec<Product>,
    pub(crate) routes: Vec<Route>,
    pub(crate) streams: Vec<Stream>,
}

/// Something with a name, kept in a list where names are unique.
trait Named {
    fn name(&self) -> &str;
}

impl Named for Listener {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for Product {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for Route {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for Stream {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Replaces the item of the same name in place, or appends it.
fn upsert<T: Named>(list: &mut Vec<T>, item: T) {
    match list.iter_mut().find(|x| x.name() == item.name()) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

/// Appends an item of a snapshot; a second one of the same name is an
/// error.
fn add_new<T: Named>(list: &mut Vec<T>, item: T, kind: ResourceKind) -> Result<(), String> {
    if list.iter().any(|x| x.name() == item.name()) {
        return Err(format!(
            "the snapshot lists {kind} {:?} more than once",
            item.name()
        ));
    }
    list.push(item);
    Ok(())
}

/// Removes the item named `name`; an error when there is none.
fn remove<T: Named>(list: &mut Vec<T>, key: &ResourceKey) -> Result<(), String> {
    let before = list.len();
    list.retain(|x| x.name() != key.name);
    if list.len() == before {
        return Err(format!("cannot remove {key}: it does not exist"));
    }
    Ok(())
}

fn unsupported(kind: ResourceKind) -> String {
    format!("resources of kind {kind} are not supported by this data plane (upgrade it)")
}

fn device_upsert(d: shoal_protocols::control::Device) -> DeviceOp {
    DeviceOp::Upsert {
        id: d.id.into(),
        product: d.product.into(),
        secret: d.secret,
    }
}

impl DesiredState {
    /// Takes a resource of a snapshot: kept here, or handed back as a
    /// device change.
    pub(crate) fn add_from_snapshot(
        &mut self,
        resource: Resource,
    ) -> Result<Option<DeviceOp>, String> {
        let kind = resource.kind();
        match resource {
            Resource::Listener(l) => add_new(&mut self.listeners, l, kind)?,
            Resource::Product(p) => add_new(&mut self.products, p, kind)?,
            Resource::Route(r) => add_new(&mut self.routes, r, kind)?,
            Resource::Stream(s) => add_new(&mut self.streams, s, kind)?,
            Resource::Device(d) => return Ok(Some(device_upsert(d))),
            _ => return Err(unsupported(kind)),
        }
        Ok(None)
    }

    /// Applies one change of a delta: an upserted route keeps its place, a
    /// new one goes last; removing what is not there is an error. Device
    /// changes are handed back for their owner cores.
    pub(crate) fn apply_change(&mut self, change: Change) -> Result<Option<DeviceOp>, String> {
        match change {
            Change::Upsert(resource) => {
                let kind = resource.kind();
                match resource {
                    Resource::Listener(l) => upsert(&mut self.listeners, l),
                    Resource::Product(p) => upsert(&mut self.products, p),
                    Resource::Route(r) => upsert(&mut self.routes, r),
                    Resource::Stream(s) => upsert(&mut self.streams, s),
                    Resource::Device(d) => return Ok(Some(device_upsert(d))),
                    _ => return Err(unsupported(kind)),
                }
            }
            Change::Remove(key) => match key.kind {
                ResourceKind::Listener => remove(&mut self.listeners, &key)?,
                ResourceKind::Product => remove(&mut self.products, &key)?,
                ResourceKind::Route => remove(&mut self.routes, &key)?,
                ResourceKind::Stream => remove(&mut self.streams, &key)?,
                ResourceKind::Device => {
                    return Ok(Some(DeviceOp::Remove {
                        id: key.name.into(),
                    }))
                }
                other => return Err(unsupported(other)),
            },
            other => {
                return Err(format!(
                    "change {:?} is not supported by this data plane (upgrade it)",
                    other.key()
                ))
            }
        }
        Ok(None)
    }

    /// The product names, for the registry's checks.
    pub(crate) fn product_names(&self) -> ProductNames {
        Arc::new(
            self.products
                .iter()
                .map(|p| p.name.clone())
                .collect::<HashSet<String>>(),
        )
    }

    /// The data-plane config this state gives with this process's own
    /// runtime and pool settings.
    pub(crate) fn config(
        &self,
        runtime: &RuntimeSettings,
        pools: &PoolSettings,
    ) -> DataPlaneConfig {
        to_dataplane_config(
            runtime.clone(),
            pools.clone(),
            &self.listeners,
            &self.routes,
            &self.products,
            &self.streams,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::RouteAction;

    fn route(name: &str, filter: &str) -> Route {
        Route {
            name: name.into(),
            filter: filter.into(),
            listener: None,
            device: None,
            action: RouteAction::Drop,
        }
    }

    fn key(kind: ResourceKind, name: &str) -> ResourceKey {
        ResourceKey {
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn routes_keep_their_place_and_new_ones_go_last() {
        let mut s = DesiredState::default();
        for r in [route("a", "x/#"), route("b", "y/#")] {
            s.add_from_snapshot(Resource::Route(r)).unwrap();
        }
        assert!(s
            .add_from_snapshot(Resource::Route(route("a", "z")))
            .unwrap_err()
            .contains("more than once"));
        s.apply_change(Change::Upsert(Resource::Route(route("c", "c/#"))))
            .unwrap();
        s.apply_change(Change::Upsert(Resource::Route(route("a", "changed/#"))))
            .unwrap();
        let names: Vec<&str> = s.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(s.routes[0].filter, "changed/#");
        s.apply_change(Change::Remove(key(ResourceKind::Route, "b")))
            .unwrap();
        let e = s
            .apply_change(Change::Remove(key(ResourceKind::Route, "b")))
            .unwrap_err();
        assert!(
            e.contains("route \"b\"") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn device_changes_are_handed_back() {
        let mut s = DesiredState::default();
        let op = s
            .apply_change(Change::Remove(key(ResourceKind::Device, "d1")))
            .unwrap();
        assert_eq!(op, Some(DeviceOp::Remove { id: "d1".into() }));
        assert_eq!(s, DesiredState::default());
    }
}
