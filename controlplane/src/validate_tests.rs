use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use shoal_protocols::control::{
    DiffOp, Identity, Listener, ListenerAuth, ListenerProtocol, ResourceKey, Route, RouteAction,
    SecretDigest,
};

use super::*;

fn default_state() -> DesiredState {
    let config = DataPlaneConfig::from_toml(EMBEDDED_DEFAULT_TOML).unwrap();
    let changes: Vec<Change> = config
        .listeners
        .iter()
        .map(|l| Change::Upsert(Resource::Listener(Listener::from(l))))
        .collect();
    let mut state = DesiredState::default();
    commit(&mut state, &changes);
    state
}

/// Plans and commits `changes`.
fn commit(state: &mut DesiredState, changes: &[Change]) -> Plan {
    let p = plan(state, changes).unwrap();
    let version = state.version() + 1;
    state.commit(version, &p.forward, p.small.clone());
    p
}

fn product(name: &str) -> Product {
    Product {
        name: name.into(),
        description: String::new(),
        publish: vec!["devices/{device}/up/#".into()],
        subscribe: vec![],
    }
}

fn device(id: &str, product: &str) -> Device {
    Device {
        id: id.into(),
        product: product.into(),
        secret: SecretDigest::of(id, b"secret-123"),
    }
}

fn up(r: Resource) -> Change {
    Change::Upsert(r)
}

fn rm(kind: ResourceKind, name: &str) -> Change {
    Change::Remove(ResourceKey {
        kind,
        name: name.into(),
    })
}

fn error(state: &DesiredState, changes: &[Change]) -> ApiError {
    plan(state, changes).unwrap_err()
}

fn with_meters() -> DesiredState {
    let mut state = default_state();
    commit(
        &mut state,
        &[
            up(Resource::Product(product("meter"))),
            up(Resource::Device(device("m1", "meter"))),
            up(Resource::Device(device("m2", "meter"))),
        ],
    );
    state
}

#[test]
fn a_device_needs_its_product() {
    let state = default_state();
    let e = error(&state, &[up(Resource::Device(device("m1", "meter")))]);
    assert_eq!(e.code, ErrorCode::Invalid);
    assert_eq!(
        e.message,
        "device \"m1\": product \"meter\" does not exist (add it with: shoalctl product add meter)"
    );
    // The product in the same request, even after the device, is fine.
    let p = plan(
        &state,
        &[
            up(Resource::Device(device("m1", "meter"))),
            up(Resource::Product(product("meter"))),
        ],
    )
    .unwrap();
    assert_eq!(p.diff.len(), 2);
    assert!(matches!(
        &p.forward[0],
        Change::Upsert(Resource::Product(_))
    ));
}

#[test]
fn device_ids_are_checked() {
    let state = with_meters();
    let e = error(&state, &[up(Resource::Device(device("a/b", "meter")))]);
    assert_eq!(e.code, ErrorCode::Invalid);
    assert!(e.message.starts_with("device \"a/b\": "), "{}", e.message);
}

#[test]
fn a_product_in_use_stays() {
    let state = with_meters();
    let e = error(&state, &[rm(ResourceKind::Product, "meter")]);
    assert_eq!(e.code, ErrorCode::Invalid);
    assert!(
        e.message.contains("2 devices use it (e.g. \"m1\")"),
        "{}",
        e.message
    );
    // One device moved away, one removed in the same request: allowed.
    let mut state = state;
    let p = commit(
        &mut state,
        &[
            up(Resource::Product(product("gauge"))),
            up(Resource::Device(device("m1", "gauge"))),
            rm(ResourceKind::Device, "m2"),
            rm(ResourceKind::Product, "meter"),
        ],
    );
    assert_eq!(p.diff.len(), 4);
    assert_eq!(state.devices_using("gauge"), 1);
    assert_eq!(state.devices_using("meter"), 0);
    // A device staged in the request counts too.
    let e = error(
        &state,
        &[
            up(Resource::Device(device("m9", "gauge"))),
            rm(ResourceKind::Device, "m1"),
            rm(ResourceKind::Product, "gauge"),
        ],
    );
    assert!(
        e.message.contains("1 device uses it (e.g. \"m9\")"),
        "{}",
        e.message
    );
}

#[test]
fn product_filters_are_checked() {
    let state = default_state();
    let mut bad = product("meter");
    bad.subscribe = vec!["devices/#/down".into()];
    let e = error(&state, &[up(Resource::Product(bad))]);
    assert!(
        e.message
            .starts_with("product \"meter\": subscribe entry \"devices/#/down\""),
        "{}",
        e.message
    );
    let e = error(&state, &[up(Resource::Product(product("")))]);
    assert!(e.message.contains("name is empty"), "{}", e.message);
}

#[test]
fn stream_rules_are_checked() {
    let state = default_state();
    let stream = |name: &str, key: Option<&str>| {
        up(Resource::Stream(Stream {
            name: name.into(),
            publish_key: key.map(str::to_owned),
            allow_play: true,
        }))
    };
    assert!(plan(&state, &[stream("live/cam1", None)]).is_ok());
    assert!(plan(&state, &[stream("live/*", Some("studio key"))]).is_ok());
    for bad in ["live", "live/", "/x", "a/b/c", "live/+", "live/#", "*/x"] {
        let e = error(&state, &[stream(bad, None)]);
        assert!(e.message.contains("app/name"), "{bad}: {}", e.message);
    }
    let long = "k".repeat(129);
    for bad in ["", long.as_str(), "clé"] {
        let e = error(&state, &[stream("live/*", Some(bad))]);
        assert!(e.message.contains("publish_key"), "{bad}: {}", e.message);
    }
}

fn tcp_listener(name: &str, bind: &str) -> Listener {
    Listener {
        name: name.into(),
        protocol: ListenerProtocol::Tcp,
        bind: bind.into(),
        max_connections: 10,
        max_frame_bytes: 1024,
        idle_timeout_ms: 60_000,
        framing: Some(shoal_protocols::control::Framing::FixedLength { frame_bytes: 8 }),
        identity: Identity::LoginFrame,
        auth: ListenerAuth::None,
    }
}

#[test]
fn listeners_and_routes_use_the_data_plane_rules_named_by_resource() {
    let state = default_state();
    let e = error(
        &state,
        &[up(Resource::Listener(tcp_listener(
            "dup",
            "127.0.0.1:7000",
        )))],
    );
    assert!(
        e.message
            .starts_with("listener \"dup\": tcp 127.0.0.1:7000 is already bound by listener"),
        "{}",
        e.message
    );
    let route = Route {
        name: "r".into(),
        filter: "devices/+/up".into(),
        listener: Some("nope".into()),
        device: None,
        action: RouteAction::Drop,
    };
    let e = error(&state, &[up(Resource::Route(route.clone()))]);
    assert_eq!(e.message, "route \"r\": listener \"nope\" does not exist");
    // A listener a route uses cannot go.
    let mut state = state;
    let used = Route {
        listener: Some("tcp-default".into()),
        ..route
    };
    commit(&mut state, &[up(Resource::Route(used))]);
    let e = error(&state, &[rm(ResourceKind::Listener, "tcp-default")]);
    assert!(
        e.message.contains("\"tcp-default\" does not exist"),
        "{}",
        e.message
    );
}

#[test]
fn removing_what_is_not_there_is_not_found() {
    let state = with_meters();
    for kind in ResourceKind::ALL {
        let e = error(&state, &[rm(kind, "ghost")]);
        assert_eq!(e.code, ErrorCode::NotFound, "{kind}");
        assert!(
            e.message.contains("\"ghost\" does not exist"),
            "{}",
            e.message
        );
    }
    // Removed twice in one request: the second is not found.
    let e = error(
        &state,
        &[
            rm(ResourceKind::Device, "m1"),
            rm(ResourceKind::Device, "m1"),
        ],
    );
    assert_eq!(e.code, ErrorCode::NotFound);
}

#[test]
fn equal_upserts_change_nothing_and_diffs_say_what_changed() {
    let mut state = with_meters();
    let p = plan(
        &state,
        &[
            up(Resource::Product(product("meter"))),
            up(Resource::Device(device("m1", "meter"))),
        ],
    )
    .unwrap();
    assert!(p.diff.is_empty());
    assert!(p.forward.is_empty());

    let mut moved = device("m1", "meter");
    moved.secret = SecretDigest::of("m1", b"another-secret");
    let p = commit(
        &mut state,
        &[
            up(Resource::Device(moved)),
            up(Resource::Device(device("m3", "meter"))),
            rm(ResourceKind::Device, "m2"),
        ],
    );
    let ops: Vec<(DiffOp, &str, &str)> = p
        .diff
        .iter()
        .map(|e| (e.op, e.key.name.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            (DiffOp::Change, "m1", "secret"),
            (DiffOp::Remove, "m2", ""),
            (DiffOp::Add, "m3", "product meter"),
        ]
    );
    // The inverse brings the old devices back.
    assert_eq!(p.inverse.len(), 3);
    assert!(p
        .inverse
        .iter()
        .any(|c| matches!(c, Change::Upsert(Resource::Device(d)) if d.id == "m2")));
    assert!(p
        .inverse
        .iter()
        .any(|c| matches!(c, Change::Remove(k) if k.name == "m3")));
}
