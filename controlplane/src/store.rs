//! The desired state on disk, in a redb database (`desired.redb`).
//!
//! Tables: `meta` holds the desired version; `listener`, `product`,
//! `device`, `route` and `stream` map a name to the postcard bytes of the
//! resource as it travels on the control sockets (routes with their order
//! number). Every accepted change is one write transaction that also
//! moves the version, committed with immediate durability before anyone is
//! told it succeeded: a change that was reported done survives a crash.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use shoal_protocols::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use shoal_protocols::control::{Change, Listener, Resource, ResourceKind, Route};

use crate::state::DesiredState;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LISTENERS: TableDefinition<&str, &[u8]> = TableDefinition::new("listener");
const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("product");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("device");
const ROUTES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("route");
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("stream");

/// The key of the desired version in `meta`.
const VERSION_KEY: &str = "desired_version";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Another process holds the database.
    #[error(
        "{path} is open in another process (is another shoal-controlplane running with this \
         --state-dir?)"
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The database failed.
    #[error("desired-state database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What failed.
        source: Box<redb::Error>,
    },
    /// A stored record cannot be read back.
    #[error(
        "desired-state database {path}: {kind} {name:?} cannot be read ({reason}); restore the \
         file from a backup, or move it away to start from the default state"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The record's kind.
        kind: &'static str,
        /// The record's name.
        name: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A resource could not be encoded.
    #[error("cannot encode {what} for the store: {reason}")]
    Encode {
        /// Which resource.
        what: String,
        /// The encoder's complaint.
        reason: String,
    },
    /// The embedded default config does not parse (a build defect).
    #[error("the embedded default config is invalid: {0}")]
    Seed(String),
}

/// The open database.
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the database at `path` and loads the state; an
    /// empty database is seeded, at version 1, with the listeners and
    /// routes of the data plane's embedded default config.
    pub(crate) fn open(path: &Path) -> Result<(Self, DesiredState), StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_owned(),
            },
            other => StoreError::Database {
                path: path.to_owned(),
                source: Box::new(other.into()),
            },
        })?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        store.create_tables()?;
        let state = match store.load()? {
            Some(state) => state,
            None => store.seed()?,
        };
        Ok((store, state))
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            txn.open_table(META).map_err(|e| self.db_error(e))?;
            for def in [LISTENERS, PRODUCTS, DEVICES, STREAMS] {
                txn.open_table(def).map_err(|e| self.db_error(e))?;
            }
            txn.open_table(ROUTES).map_err(|e| self.db_error(e))?;
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    /// The stored state, or `None` when nothing was ever stored.
    fn load(&self) -> Result<Option<DesiredState>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let meta = txn.open_table(META).map_err(|e| self.db_error(e))?;
        let Some(version) = meta.get(VERSION_KEY).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        let mut state = DesiredState::default();
        state.set_version(version.value());
        for (kind, def) in [
            (ResourceKind::Listener, LISTENERS),
            (ResourceKind::Product, PRODUCTS),
            (ResourceKind::Device, DEVICES),
            (ResourceKind::Stream, STREAMS),
        ] {
            let table = txn.open_table(def).map_err(|e| self.db_error(e))?;
            for row in table.iter().map_err(|e| self.db_error(e))? {
                let (name, bytes) = row.map_err(|e| self.db_error(e))?;
                let resource = self.decode(kind, name.value(), bytes.value())?;
                state.insert_loaded(resource, 0);
            }
        }
        let routes = txn.open_table(ROUTES).map_err(|e| self.db_error(e))?;
        for row in routes.iter().map_err(|e| self.db_error(e))? {
            let (name, value) = row.map_err(|e| self.db_error(e))?;
            let (order, bytes) = value.value();
            let route: Route = postcard::from_bytes(bytes)
                .map_err(|e| self.corrupt(ResourceKind::Route, name.value(), e))?;
            state.insert_loaded(Resource::Route(route), order);
        }
        Ok(Some(state))
    }

    fn corrupt(&self, kind: ResourceKind, name: &str, e: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            kind: kind.as_str(),
            name: name.to_owned(),
            reason: e.to_string(),
        }
    }

    fn decode(&self, kind: ResourceKind, name: &str, bytes: &[u8]) -> Result<Resource, StoreError> {
        let resource = match kind {
            ResourceKind::Listener => postcard::from_bytes(bytes).map(Resource::Listener),
            ResourceKind::Product => postcard::from_bytes(bytes).map(Resource::Product),
            ResourceKind::Device => postcard::from_bytes(bytes).map(Resource::Device),
            ResourceKind::Route => postcard::from_bytes(bytes).map(Resource::Route),
            _ => postcard::from_bytes(bytes).map(Resource::Stream),
        }
        .map_err(|e| self.corrupt(kind, name, e))?;
        if resource.name() != name {
            return Err(self.corrupt(kind, name, format!("it holds {:?}", resource.name())));
        }
        Ok(resource)
    }

    /// Stores the embedded default's listeners and routes at version 1.
    fn seed(&self) -> Result<DesiredState, StoreError> {
        let config = DataPlaneConfig::from_toml(EMBEDDED_DEFAULT_TOML)
            .map_err(|e| StoreError::Seed(e.to_string()))?;
        let mut changes: Vec<Change> = config
            .listeners
            .iter()
            .map(|l| Change::Upsert(Resource::Listener(Listener::from(l))))
            .collect();
        changes.extend(
            config
                .routes
                .iter()
                .map(|r| Change::Upsert(Resource::Route(Route::from(r)))),
        );
        let mut state = DesiredState::default();
        let mut small = state.small().clone();
        for change in &changes {
            if let Change::Upsert(resource) = change {
                match resource {
                    Resource::Listener(l) => {
                        small.listeners.insert(l.name.clone(), l.clone());
                    }
                    Resource::Route(r) => small.upsert_route(r.clone()),
                    _ => {}
                }
            }
        }
        self.commit(1, &changes, |name| small.route(name).map(|r| r.order))?;
        state.commit(1, &changes, small);
        Ok(state)
    }

    /// Applies `changes` and sets the version to `version`, in one durable
    /// transaction. `route_order` gives the order number of every route an
    /// upsert stores.
    pub(crate) fn commit(
        &self,
        version: u64,
        changes: &[Change],
        route_order: impl Fn(&str) -> Option<u64>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.db_error(e))?;
            let mut listeners = txn.open_table(LISTENERS).map_err(|e| self.db_error(e))?;
            let mut products = txn.open_table(PRODUCTS).map_err(|e| self.db_error(e))?;
            let mut devices = txn.open_table(DEVICES).map_err(|e| self.db_error(e))?;
            let mut routes = txn.open_table(ROUTES).map_err(|e| self.db_error(e))?;
            let mut streams = txn.open_table(STREAMS).map_err(|e| self.db_error(e))?;
            let mut bytes = Vec::new();
            for change in changes {
                match change {
                    Change::Upsert(resource) => {
                        bytes.clear();
                        let name = resource.name();
                        let encoded = match resource {
                            Resource::Listener(l) => postcard::to_extend(l, bytes),
                            Resource::Product(p) => postcard::to_extend(p, bytes),
                            Resource::Device(d) => postcard::to_extend(d, bytes),
                            Resource::Route(r) => postcard::to_extend(r, bytes),
                            Resource::Stream(s) => postcard::to_extend(s, bytes),
                            _ => return Err(self.encode_error(resource, "unknown kind")),
                        };
                        bytes = encoded.map_err(|e| self.encode_error(resource, e))?;
                        let result = match resource.kind() {
                            ResourceKind::Listener => {
                                listeners.insert(name, bytes.as_slice()).map(drop)
                            }
                            ResourceKind::Product => {
                                products.insert(name, bytes.as_slice()).map(drop)
                            }
                            ResourceKind::Device => {
                                devices.insert(name, bytes.as_slice()).map(drop)
                            }
                            ResourceKind::Route => {
                                let order = route_order(name).ok_or_else(|| {
                                    self.encode_error(resource, "route has no place in the order")
                                })?;
                                routes.insert(name, (order, bytes.as_slice())).map(drop)
                            }
                            _ => streams.insert(name, bytes.as_slice()).map(drop),
                        };
                        result.map_err(|e| self.db_error(e))?;
                    }
                    Change::Remove(key) => {
                        let name = key.name.as_str();
                        let result = match key.kind {
                            ResourceKind::Listener => listeners.remove(name).map(drop),
                            ResourceKind::Product => products.remove(name).map(drop),
                            ResourceKind::Device => devices.remove(name).map(drop),
                            ResourceKind::Route => routes.remove(name).map(drop),
                            _ => streams.remove(name).map(drop),
                        };
                        result.map_err(|e| self.db_error(e))?;
                    }
                    _ => {}
                }
            }
            meta.insert(VERSION_KEY, version)
                .map_err(|e| self.db_error(e))?;
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    fn encode_error(&self, resource: &Resource, e: impl ToString) -> StoreError {
        StoreError::Encode {
            what: resource.key().to_string(),
            reason: e.to_string(),
        }
    }

    /// Moves the version without changing anything else.
    pub(crate) fn set_version(&self, version: u64) -> Result<(), StoreError> {
        self.commit(version, &[], |_| None)
    }

    /// Whether the database still answers (for the watchdog).
    pub(crate) fn is_alive(&self) -> bool {
        self.db
            .begin_read()
            .map(|txn| txn.open_table(META).is_ok())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use shoal_protocols::control::{Device, Product, ResourceKey, RouteAction, SecretDigest};

    fn product(name: &str) -> Product {
        Product {
            name: name.into(),
            description: "d".into(),
            publish: vec![],
            subscribe: vec![],
        }
    }

    fn route(name: &str) -> Route {
        Route {
            name: name.into(),
            filter: format!("{name}/#"),
            listener: None,
            device: None,
            action: RouteAction::Drop,
        }
    }

    #[test]
    fn empty_database_is_seeded_with_the_default_listeners() {
        let dir = TempDir::new("seed");
        let (_store, state) = Store::open(&dir.path().join("desired.redb")).unwrap();
        assert_eq!(state.version(), 1);
        let names: Vec<&String> = state.small().listeners.keys().collect();
        assert_eq!(
            names,
            [
                "coap-default",
                "http-default",
                "mqtt-default",
                "rtmp-default",
                "tcp-default",
                "udp-default"
            ]
        );
    }

    #[test]
    fn state_survives_reopening_with_route_order() {
        let dir = TempDir::new("reopen");
        let path = dir.path().join("desired.redb");
        let (store, mut state) = Store::open(&path).unwrap();
        let mut small = state.small().clone();
        let mut changes = vec![Change::Upsert(Resource::Product(product("meter")))];
        small.products.insert("meter".into(), product("meter"));
        for name in ["zeta", "alpha", "mid"] {
            small.upsert_route(route(name));
            changes.push(Change::Upsert(Resource::Route(route(name))));
        }
        changes.push(Change::Upsert(Resource::Device(Device {
            id: "m1".into(),
            product: "meter".into(),
            secret: SecretDigest::of("m1", b"secret-1"),
        })));
        store
            .commit(2, &changes, |n| small.route(n).map(|r| r.order))
            .unwrap();
        state.commit(2, &changes, small.clone());
        // Remove the first route: the others keep their order numbers.
        small.remove_route("zeta");
        let removal = [Change::Remove(ResourceKey {
            kind: ResourceKind::Route,
            name: "zeta".into(),
        })];
        store.commit(3, &removal, |_| None).unwrap();
        drop(store);

        let (_store, reopened) = Store::open(&path).unwrap();
        assert_eq!(reopened.version(), 3);
        assert_eq!(reopened.small(), &small);
        let order: Vec<&str> = reopened
            .small()
            .routes
            .iter()
            .map(|r| r.route.name.as_str())
            .collect();
        assert_eq!(order, ["alpha", "mid"]);
        assert_eq!(reopened.device("m1"), state.device("m1"));
        assert_eq!(reopened.devices_using("meter"), 1);
    }

    #[test]
    fn version_bump_alone_is_stored() {
        let dir = TempDir::new("bump");
        let path = dir.path().join("desired.redb");
        let (store, _) = Store::open(&path).unwrap();
        store.set_version(7).unwrap();
        assert!(store.is_alive());
        drop(store);
        let (_, state) = Store::open(&path).unwrap();
        assert_eq!(state.version(), 7);
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = TempDir::new("inuse");
        let path = dir.path().join("desired.redb");
        let (_store, _) = Store::open(&path).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(e.to_string().contains("another"), "{e}");
    }
}
