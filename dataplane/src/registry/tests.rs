use super::*;

fn products(names: &[&str]) -> ProductNames {
    Arc::new(names.iter().map(|n| (*n).to_owned()).collect())
}

fn upsert(id: &str, product: &str, secret: &str) -> DeviceOp {
    DeviceOp::Upsert {
        id: id.into(),
        product: product.into(),
        secret: SecretDigest::of(id, secret.as_bytes()),
    }
}

fn remove(id: &str) -> DeviceOp {
    DeviceOp::Remove { id: id.into() }
}

fn digest(id: &str, secret: &str) -> SecretDigest {
    SecretDigest::of(id, secret.as_bytes())
}

#[test]
fn the_owner_hash_is_fnv1a_64_and_stable() {
    // Reference values of FNV-1a 64.
    assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    // Owners pinned: a change here moves devices between cores.
    assert_eq!(owner_shard("meter-1", 1), 0);
    let ids = ["m1", "m2", "fleet-0", "fleet-1", "fleet-4999"];
    let on_four: Vec<usize> = ids.iter().map(|id| owner_shard(id, 4)).collect();
    assert_eq!(on_four, [3, 2, 2, 1, 3]);
    let on_two: Vec<usize> = ids.iter().map(|id| owner_shard(id, 2)).collect();
    assert_eq!(on_two, [1, 0, 0, 1, 1]);
    // Devices spread over the shards.
    let mut per_shard = [0u32; 4];
    for i in 0..4000 {
        per_shard[owner_shard(&format!("device-{i}"), 4)] += 1;
    }
    assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
}

#[test]
fn a_snapshot_is_staged_beside_the_running_table_and_commit_swaps() {
    let mut shard = RegistryShard::default();
    shard.begin(1, true);
    shard.stage(
        1,
        vec![
            upsert("a", "meter", "secret-a1"),
            upsert("b", "meter", "secret-b1"),
        ],
    );
    assert_eq!(shard.prepare(1, &products(&["meter"])), Ok(2));
    // Not visible before the commit.
    assert_eq!(
        shard.verify("a", &digest("a", "secret-a1")),
        AuthVerdict::UnknownDevice
    );
    assert_eq!(shard.commit(1), Ok(Vec::new()));
    assert_eq!(shard.len(), 2);
    assert_eq!(
        shard.verify("a", &digest("a", "secret-a1")),
        AuthVerdict::Accepted
    );
    assert_eq!(
        shard.verify("a", &digest("a", "secret-a2")),
        AuthVerdict::WrongSecret
    );
    assert_eq!(
        shard.verify("c", &digest("c", "secret-c1")),
        AuthVerdict::UnknownDevice
    );

    // A second snapshot replaces the table; what it lacks was removed.
    shard.begin(2, true);
    shard.stage(
        2,
        vec![
            upsert("b", "meter", "secret-b2"),
            upsert("c", "valve", "secret-c1"),
        ],
    );
    assert_eq!(shard.prepare(2, &products(&["meter", "valve"])), Ok(2));
    assert_eq!(shard.commit(2), Ok(vec!["a".into()]));
    assert_eq!(
        shard.verify("a", &digest("a", "secret-a1")),
        AuthVerdict::UnknownDevice
    );
    assert_eq!(
        shard.verify("b", &digest("b", "secret-b2")),
        AuthVerdict::Accepted
    );

    // A shard that got no device of a snapshot still replaces its table.
    shard.begin(3, true);
    assert_eq!(shard.prepare(3, &products(&[])), Ok(0));
    let mut removed = shard.commit(3).unwrap();
    removed.sort();
    assert_eq!(removed, vec!["b".into(), "c".into()]);
    assert_eq!(shard.len(), 0);
}

#[test]
fn abort_and_refusals_leave_the_running_table_alone() {
    let mut shard = RegistryShard::default();
    shard.begin(1, true);
    shard.stage(1, vec![upsert("a", "meter", "secret-a1")]);
    shard.prepare(1, &products(&["meter"])).unwrap();
    shard.commit(1).unwrap();

    // A snapshot whose device names a product the state does not have.
    shard.begin(2, true);
    shard.stage(2, vec![upsert("z", "ghost", "secret-z1")]);
    let e = shard.prepare(2, &products(&["meter"])).unwrap_err();
    assert!(e.contains("\"z\"") && e.contains("\"ghost\""), "{e}");
    shard.abort(2);
    assert_eq!(
        shard.verify("a", &digest("a", "secret-a1")),
        AuthVerdict::Accepted
    );
    assert!(!shard.table.contains("z"));

    // A delta removing a device that is not there.
    shard.stage(3, vec![upsert("b", "meter", "secret-b1"), remove("nope")]);
    let e = shard.prepare(3, &products(&["meter"])).unwrap_err();
    assert!(e.contains("\"nope\" does not exist"), "{e}");
    shard.abort(3);
    assert_eq!(shard.len(), 1);

    // An invalid id is refused while staging and reported by prepare.
    shard.stage(4, vec![upsert("a/b", "meter", "secret-ab")]);
    assert!(shard.prepare(4, &products(&["meter"])).is_err());
    shard.abort(4);

    // Removing the product a device still uses.
    let e = shard.prepare(5, &products(&[])).unwrap_err();
    assert!(
        e.contains("\"meter\" is removed") && e.contains("\"a\""),
        "{e}"
    );
    shard.abort(5);
    assert_eq!(shard.len(), 1);

    // Discarded staging is gone: a later commit of that ticket is a no-op.
    shard.stage(6, vec![remove("a")]);
    shard.discard(6);
    assert_eq!(shard.commit(6), Ok(Vec::new()));
    assert_eq!(shard.len(), 1);
}

#[test]
fn a_delta_applies_in_order() {
    let mut shard = RegistryShard::default();
    shard.stage(
        1,
        vec![
            upsert("a", "meter", "secret-a1"),
            upsert("b", "meter", "secret-b1"),
        ],
    );
    assert_eq!(shard.prepare(1, &products(&["meter"])), Ok(2));
    shard.commit(1).unwrap();

    // Remove then add again in one delta: the device stays (new secret);
    // add then remove: it never appears; b moves to another product and
    // the old one goes.
    shard.stage(
        2,
        vec![
            remove("a"),
            upsert("a", "meter", "secret-a2"),
            upsert("c", "meter", "secret-c1"),
            remove("c"),
            upsert("b", "valve", "secret-b1"),
        ],
    );
    assert_eq!(shard.prepare(2, &products(&["meter", "valve"])), Ok(2));
    assert_eq!(shard.commit(2), Ok(Vec::new()));
    assert_eq!(
        shard.verify("a", &digest("a", "secret-a2")),
        AuthVerdict::Accepted
    );
    assert_eq!(
        shard.verify("c", &digest("c", "secret-c1")),
        AuthVerdict::UnknownDevice
    );

    // Now "meter" is used by a only; removing a and the product together
    // is fine.
    shard.stage(3, vec![remove("a")]);
    assert_eq!(shard.prepare(3, &products(&["valve"])), Ok(1));
    assert_eq!(shard.commit(3), Ok(vec!["a".into()]));
}

/// Heap bytes of the registry per device at a million devices, over two
/// shards as a two-core data plane holds them.
#[test]
fn a_million_devices_take_well_under_200_bytes_each() {
    const DEVICES: usize = 1_000_000;
    let shards = 2;
    let mut registry: Vec<RegistryShard> = (0..shards).map(|_| RegistryShard::default()).collect();
    for s in &mut registry {
        s.begin(1, true);
    }
    let mut batches: Vec<Vec<DeviceOp>> = vec![Vec::new(); shards];
    let digest = SecretDigest([7; 16]);
    for i in 0..DEVICES {
        let id = format!("device-{i:07}");
        let owner = owner_shard(&id, shards);
        batches[owner].push(DeviceOp::Upsert {
            id: id.into(),
            product: "meter".into(),
            secret: digest,
        });
        if batches[owner].len() == 8192 {
            registry[owner].stage(1, std::mem::take(&mut batches[owner]));
        }
    }
    let names = products(&["meter"]);
    let mut total = 0;
    for (s, batch) in registry.iter_mut().zip(batches) {
        s.stage(1, batch);
        total += s.prepare(1, &names).unwrap();
        s.commit(1).unwrap();
    }
    assert_eq!(total, DEVICES);
    let heap: usize = registry.iter().map(RegistryShard::heap_bytes).sum();
    let per_device = heap as f64 / DEVICES as f64;
    println!("registry heap: {heap} bytes for {DEVICES} devices = {per_device:.1} bytes/device");
    assert!(per_device < 80.0, "{per_device} bytes per device");
    assert_eq!(
        registry[owner_shard("device-0123456", shards)].verify("device-0123456", &digest),
        AuthVerdict::Accepted
    );
}

/// The process's resident memory before and after a million devices are
/// imported, read from `/proc/self/statm`. Run alone, by hand:
/// `cargo test -p shoal-dataplane --release -- --ignored --test-threads 1 rss`.
#[test]
#[ignore = "measures the whole process's RSS: run alone"]
fn rss_per_device_at_a_million_devices() {
    fn rss_bytes() -> u64 {
        crate::control::rss_bytes().unwrap_or(0)
    }
    const DEVICES: usize = 1_000_000;
    let before = rss_bytes();
    let mut shard = RegistryShard::default();
    shard.begin(1, true);
    let mut batch = Vec::new();
    for i in 0..DEVICES {
        let id = format!("device-{i:07}");
        let secret = SecretDigest::of(&id, b"secret-token");
        batch.push(DeviceOp::Upsert {
            id: id.into(),
            product: "meter".into(),
            secret,
        });
        if batch.len() == 8192 {
            shard.stage(1, std::mem::take(&mut batch));
        }
    }
    shard.stage(1, batch);
    shard.prepare(1, &products(&["meter"])).unwrap();
    shard.commit(1).unwrap();
    let after = rss_bytes();
    let per_device = after.saturating_sub(before) as f64 / DEVICES as f64;
    println!(
        "rss before {before} after {after}: {per_device:.1} bytes/device (heap {} bytes)",
        shard.heap_bytes()
    );
    assert!(per_device < 200.0);
}
