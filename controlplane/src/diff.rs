//! What changes between two desired states: the diff people read, and the
//! changes a data plane applies to go from one state to the other.
//!
//! The changes come in an order that keeps every reference valid at every
//! step, whatever order the request had: what others refer to (listeners,
//! products) is added first and removed last, and what refers to them
//! (devices, routes, streams) is removed before and added after. A data
//! plane puts a new route last and keeps an upserted route in place, so a
//! route whose place changes is removed and added again, as are the routes
//! after it.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;

use shoal_protocols::control::{
    Change, Device, DiffEntry, DiffOp, Listener, ListenerProtocol, Product, Resource, ResourceKey,
    ResourceKind, Route, Stream,
};

use crate::state::SmallState;

/// A device before and after a change (none: absent).
pub(crate) type DeviceStep<'a> = (&'a str, Option<&'a Device>, Option<&'a Device>);

/// The way from one state to another.
#[derive(Debug, Default)]
pub(crate) struct Transition {
    /// One entry per resource that changes, kind by kind.
    pub(crate) diff: Vec<DiffEntry>,
    /// Changes that turn the first state into the second, applied in order.
    pub(crate) changes: Vec<Change>,
}

/// Upserts and removes of one kind.
#[derive(Debug, Default)]
struct KindChanges {
    upserts: Vec<Change>,
    removes: Vec<Change>,
}

/// The transition from (`before`, devices' `before`) to (`after`,
/// devices' `after`). `devices` lists the devices that may differ; equal
/// ones are skipped.
pub(crate) fn transition<'a>(
    before: &SmallState,
    after: &SmallState,
    devices: impl Iterator<Item = DeviceStep<'a>>,
) -> Transition {
    let mut diff = Vec::new();
    let listeners = diff_map(
        ResourceKind::Listener,
        &before.listeners,
        &after.listeners,
        Resource::Listener,
        describe_listener,
        &mut diff,
    );
    let products = diff_map(
        ResourceKind::Product,
        &before.products,
        &after.products,
        Resource::Product,
        describe_product,
        &mut diff,
    );
    let devices = diff_devices(devices, &mut diff);
    let routes = diff_routes(before, after, &mut diff);
    let streams = diff_map(
        ResourceKind::Stream,
        &before.streams,
        &after.streams,
        Resource::Stream,
        describe_stream,
        &mut diff,
    );
    let mut changes = Vec::with_capacity(
        [&listeners, &products, &devices, &routes, &streams]
            .iter()
            .map(|k| k.upserts.len() + k.removes.len())
            .sum(),
    );
    // Referenced kinds first, then referrers out, referrers in, and the
    // referenced kinds that go away last.
    changes.extend(listeners.upserts);
    changes.extend(products.upserts);
    changes.extend(streams.removes);
    changes.extend(routes.removes);
    changes.extend(devices.removes);
    changes.extend(devices.upserts);
    changes.extend(routes.upserts);
    changes.extend(streams.upserts);
    changes.extend(products.removes);
    changes.extend(listeners.removes);
    Transition { diff, changes }
}

fn entry(op: DiffOp, kind: ResourceKind, name: &str, detail: String) -> DiffEntry {
    DiffEntry {
        op,
        key: ResourceKey {
            kind,
            name: name.to_owned(),
        },
        detail,
    }
}

fn remove(kind: ResourceKind, name: &str) -> Change {
    Change::Remove(ResourceKey {
        kind,
        name: name.to_owned(),
    })
}

/// Diff of a kind kept by name, in name order.
fn diff_map<T: Clone + PartialEq>(
    kind: ResourceKind,
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    wrap: fn(T) -> Resource,
    describe: fn(Option<&T>, &T) -> String,
    diff: &mut Vec<DiffEntry>,
) -> KindChanges {
    let mut out = KindChanges::default();
    for (name, new) in after {
        match before.get(name) {
            None => {
                diff.push(entry(DiffOp::Add, kind, name, describe(None, new)));
                out.upserts.push(Change::Upsert(wrap(new.clone())));
            }
            Some(old) if old != new => {
                diff.push(entry(DiffOp::Change, kind, name, describe(Some(old), new)));
                out.upserts.push(Change::Upsert(wrap(new.clone())));
            }
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        diff.push(entry(DiffOp::Remove, kind, name, String::new()));
        out.removes.push(remove(kind, name));
    }
    out
}

fn diff_devices<'a>(
    devices: impl Iterator<Item = DeviceStep<'a>>,
    diff: &mut Vec<DiffEntry>,
) -> KindChanges {
    let kind = ResourceKind::Device;
    let mut out = KindChanges::default();
    for (id, old, new) in devices {
        match (old, new) {
            (None, Some(new)) => {
                diff.push(entry(
                    DiffOp::Add,
                    kind,
                    id,
                    format!("product {}", new.product),
                ));
                out.upserts
                    .push(Change::Upsert(Resource::Device(new.clone())));
            }
            (Some(old), Some(new)) if old != new => {
                let mut d = FieldDiff::default();
                d.value("product", &old.product, &new.product);
                d.field("secret", old.secret != new.secret);
                diff.push(entry(DiffOp::Change, kind, id, d.finish()));
                out.upserts
                    .push(Change::Upsert(Resource::Device(new.clone())));
            }
            (Some(_), None) => {
                diff.push(entry(DiffOp::Remove, kind, id, String::new()));
                out.removes.push(remove(kind, id));
            }
            _ => {}
        }
    }
    out
}

/// Routes: the longest start of the new order that keeps the old relative
/// order stays in place; every other route is removed (if it existed) and
/// added at the end, in the new order.
fn diff_routes(before: &SmallState, after: &SmallState, diff: &mut Vec<DiffEntry>) -> KindChanges {
    let kind = ResourceKind::Route;
    let mut out = KindChanges::default();
    let after_names: HashSet<&str> = after.routes.iter().map(|r| r.route.name.as_str()).collect();
    let kept: Vec<&Route> = before
        .routes
        .iter()
        .map(|r| &r.route)
        .filter(|r| after_names.contains(r.name.as_str()))
        .collect();
    // The longest start of the new order that the kept routes already
    // follow stays in place; the kept routes not in it move.
    let mut old_order = kept.iter();
    let in_place = after
        .routes
        .iter()
        .take_while(|new| old_order.any(|old| old.name == new.route.name))
        .count();
    let staying: HashSet<&str> = after
        .routes
        .iter()
        .take(in_place)
        .map(|r| r.route.name.as_str())
        .collect();
    for old in &before.routes {
        if !after_names.contains(old.route.name.as_str()) {
            diff.push(entry(DiffOp::Remove, kind, &old.route.name, String::new()));
            out.removes.push(remove(kind, &old.route.name));
        }
    }
    for old in kept.iter().filter(|r| !staying.contains(r.name.as_str())) {
        out.removes.push(remove(kind, &old.name));
    }
    for (i, new) in after.routes.iter().enumerate() {
        let new = &new.route;
        let old = before.route(&new.name).map(|r| &r.route);
        let moved = i >= in_place;
        match old {
            None => diff.push(entry(
                DiffOp::Add,
                kind,
                &new.name,
                describe_route(None, new),
            )),
            Some(old) if old != new => {
                let mut detail = describe_route(Some(old), new);
                if moved {
                    detail.push_str("; moved to the end of the route order");
                }
                diff.push(entry(DiffOp::Change, kind, &new.name, detail));
            }
            Some(_) if moved => diff.push(entry(
                DiffOp::Change,
                kind,
                &new.name,
                "moved to the end of the route order".to_owned(),
            )),
            Some(_) => {}
        }
        if moved || old != Some(new) {
            out.upserts
                .push(Change::Upsert(Resource::Route(new.clone())));
        }
    }
    out
}

/// Changed fields, for people: `bind 127.0.0.1:7000 → 127.0.0.1:7100,
/// framing`.
#[derive(Debug, Default)]
struct FieldDiff {
    parts: Vec<String>,
}

impl FieldDiff {
    /// A field shown with its old and new value.
    fn value<T: Display + PartialEq + ?Sized>(&mut self, name: &str, old: &T, new: &T) {
        if old != new {
            self.parts.push(format!("{name} {old} → {new}"));
        }
    }

    /// A field shown by name only.
    fn field(&mut self, name: &str, changed: bool) {
        if changed {
            self.parts.push(name.to_owned());
        }
    }

    fn finish(self) -> String {
        self.parts.join(", ")
    }
}

fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Udp => "udp",
        ListenerProtocol::Mqtt => "mqtt",
        ListenerProtocol::Http => "http",
        ListenerProtocol::Rtmp => "rtmp",
        ListenerProtocol::Coap => "coap",
        _ => "other",
    }
}

fn describe_listener(old: Option<&Listener>, new: &Listener) -> String {
    let Some(old) = old else {
        return format!("{} {}", protocol_name(new.protocol), new.bind);
    };
    let mut d = FieldDiff::default();
    d.value(
        "protocol",
        protocol_name(old.protocol),
        protocol_name(new.protocol),
    );
    d.value("bind", &old.bind, &new.bind);
    d.value(
        "max_connections",
        &old.max_connections,
        &new.max_connections,
    );
    d.value(
        "max_frame_bytes",
        &old.max_frame_bytes,
        &new.max_frame_bytes,
    );
    d.value(
        "idle_timeout_ms",
        &old.idle_timeout_ms,
        &new.idle_timeout_ms,
    );
    d.field("framing", old.framing != new.framing);
    d.field("identity", old.identity != new.identity);
    d.field("auth", old.auth != new.auth);
    d.finish()
}

fn describe_product(old: Option<&Product>, new: &Product) -> String {
    let Some(old) = old else {
        return new.description.clone();
    };
    let mut d = FieldDiff::default();
    d.field("description", old.description != new.description);
    d.field("publish", old.publish != new.publish);
    d.field("subscribe", old.subscribe != new.subscribe);
    d.finish()
}

fn describe_route(old: Option<&Route>, new: &Route) -> String {
    let Some(old) = old else {
        return format!("filter {}", new.filter);
    };
    let mut d = FieldDiff::default();
    d.value("filter", &old.filter, &new.filter);
    d.field("listener", old.listener != new.listener);
    d.field("device", old.device != new.device);
    d.field("action", old.action != new.action);
    d.finish()
}

fn describe_stream(old: Option<&Stream>, new: &Stream) -> String {
    let Some(old) = old else {
        return String::new();
    };
    let mut d = FieldDiff::default();
    d.field("publish_key", old.publish_key != new.publish_key);
    d.value("allow_play", &old.allow_play, &new.allow_play);
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::OrderedRoute;
    use shoal_protocols::control::{RouteAction, SecretDigest};

    fn route(name: &str, filter: &str) -> Route {
        Route {
            name: name.into(),
            filter: filter.into(),
            listener: None,
            device: None,
            action: RouteAction::Drop,
        }
    }

    fn routes(list: &[(&str, &str)]) -> SmallState {
        let mut s = SmallState::default();
        for (i, (n, f)) in list.iter().enumerate() {
            s.routes.push(OrderedRoute {
                order: i as u64 + 1,
                route: route(n, f),
            });
        }
        s
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Upsert(r) => format!("+{}", r.name()),
                Change::Remove(k) => format!("-{}", k.name),
                _ => unreachable!(),
            })
            .collect()
    }

    /// Applies changes with a data plane's route rules.
    fn replay(start: &SmallState, changes: &[Change]) -> Vec<String> {
        let mut s = start.clone();
        for c in changes {
            match c {
                Change::Upsert(Resource::Route(r)) => s.upsert_route(r.clone()),
                Change::Remove(k) => assert!(s.remove_route(&k.name)),
                _ => unreachable!(),
            }
        }
        s.routes.iter().map(|r| r.route.name.clone()).collect()
    }

    #[test]
    fn equal_states_have_no_diff() {
        let s = routes(&[("a", "x/#"), ("b", "y/#")]);
        let t = transition(&s, &s, std::iter::empty());
        assert!(t.diff.is_empty());
        assert!(t.changes.is_empty());
    }

    #[test]
    fn route_changes_keep_places_and_inverse_restores_order() {
        let before = routes(&[("a", "x/#"), ("b", "y/#"), ("c", "z/#")]);
        // b removed, a changed in place, d appended.
        let mut after = before.clone();
        after.remove_route("b");
        after.upsert_route(route("a", "w/#"));
        after.upsert_route(route("d", "d/#"));
        let forward = transition(&before, &after, std::iter::empty());
        assert_eq!(names(&forward.changes), ["-b", "+a", "+d"]);
        assert_eq!(replay(&before, &forward.changes), ["a", "c", "d"]);
        let ops: Vec<(DiffOp, &str)> = forward
            .diff
            .iter()
            .map(|e| (e.op, e.key.name.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                (DiffOp::Remove, "b"),
                (DiffOp::Change, "a"),
                (DiffOp::Add, "d")
            ]
        );
        assert_eq!(forward.diff[1].detail, "filter x/# → w/#");

        let inverse = transition(&after, &before, std::iter::empty());
        assert_eq!(replay(&after, &inverse.changes), ["a", "b", "c"]);
        assert_eq!(names(&inverse.changes), ["-d", "-c", "+a", "+b", "+c"]);
    }

    #[test]
    fn a_route_removed_and_added_again_moves_last() {
        let before = routes(&[("a", "x/#"), ("b", "y/#")]);
        let mut after = before.clone();
        after.remove_route("a");
        after.upsert_route(route("a", "x/#"));
        let t = transition(&before, &after, std::iter::empty());
        assert_eq!(replay(&before, &t.changes), ["b", "a"]);
        assert_eq!(t.diff.len(), 1);
        assert_eq!(t.diff[0].op, DiffOp::Change);
        assert!(t.diff[0].detail.contains("moved"), "{:?}", t.diff);
    }

    /// Seeded random route edits: the forward changes replayed with a data
    /// plane's rules give the new order, the inverse ones the old order.
    #[test]
    fn random_route_edits_replay_exactly() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let full = |s: &SmallState| -> Vec<Route> { s.route_list() };
        let replay_full = |start: &SmallState, changes: &[Change]| {
            let mut s = start.clone();
            for c in changes {
                match c {
                    Change::Upsert(Resource::Route(r)) => s.upsert_route(r.clone()),
                    Change::Remove(k) => assert!(s.remove_route(&k.name)),
                    _ => unreachable!(),
                }
            }
            s.route_list()
        };
        for _ in 0..500 {
            let mut before = SmallState::default();
            for i in 0..next(6) {
                before.upsert_route(route(&format!("r{i}"), "a/#"));
            }
            let mut after = before.clone();
            for _ in 0..next(5) + 1 {
                let name = format!("r{}", next(8));
                match next(4) {
                    0 => after.upsert_route(route(&name, &format!("f{}/#", next(3)))),
                    1 => {
                        after.remove_route(&name);
                    }
                    2 => {
                        if after.remove_route(&name) {
                            after.upsert_route(route(&name, "a/#"));
                        }
                    }
                    _ => after.upsert_route(route(&name, "a/#")),
                }
            }
            let forward = transition(&before, &after, std::iter::empty());
            assert_eq!(replay_full(&before, &forward.changes), full(&after));
            let inverse = transition(&after, &before, std::iter::empty());
            assert_eq!(replay_full(&after, &inverse.changes), full(&before));
            if full(&before) == full(&after) {
                assert!(forward.changes.is_empty() && forward.diff.is_empty());
            }
        }
    }

    #[test]
    fn devices_and_products_are_ordered_for_references() {
        let mut before = SmallState::default();
        before.products.insert(
            "old".into(),
            Product {
                name: "old".into(),
                description: String::new(),
                publish: vec![],
                subscribe: vec![],
            },
        );
        let mut after = SmallState::default();
        after.products.insert(
            "new".into(),
            Product {
                name: "new".into(),
                description: "d".into(),
                publish: vec![],
                subscribe: vec![],
            },
        );
        let secret = SecretDigest::of("m1", b"secret-1");
        let old_dev = Device {
            id: "m1".into(),
            product: "old".into(),
            secret,
        };
        let new_dev = Device {
            product: "new".into(),
            ..old_dev.clone()
        };
        let gone = Device {
            id: "m2".into(),
            product: "old".into(),
            secret,
        };
        let steps = [
            ("m1", Some(&old_dev), Some(&new_dev)),
            ("m2", Some(&gone), None),
            ("m3", Some(&gone), Some(&gone)),
        ];
        let t = transition(&before, &after, steps.into_iter());
        assert_eq!(names(&t.changes), ["+new", "-m2", "+m1", "-old"]);
        assert_eq!(t.diff.len(), 4);
        let m1 = t.diff.iter().find(|e| e.key.name == "m1").unwrap();
        assert_eq!(m1.detail, "product old → new");
    }
}
