//! The declarative TOML document of `shoalctl apply -f FILE`: the same
//! `[[listener]]` and `[[route]]` tables as a data-plane config, plus
//! `[[product]]`, `[[device]]` and `[[stream]]`.
//!
//! ```toml
//! [[product]]
//! name = "meter"
//!
//! [[device]]
//! id = "meter-1"
//! product = "meter"
//! secret = "k3XbQ9-token-1"      # or secret_digest = "<32 hex digits>"
//!
//! [[stream]]
//! name = "live/*"
//! publish_key = "studio-key"
//! ```

use serde::{Deserialize, Serialize};

use crate::config::{parse_toml, validate_device_id, ConfigError, ListenerConfig, RouteConfig};

use super::resources::{Device, Listener, Product, Resource, Route, Stream};
use super::secret::{validate_secret, SecretDigest};

/// Why a document was refused: where, and what is wrong.
pub type DocumentError = ConfigError;

/// Desired state written by people.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredStateDocument {
    /// Listeners.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Products.
    #[serde(default, rename = "product")]
    pub products: Vec<ProductDoc>,
    /// Devices.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceDoc>,
    /// Routes, in evaluation order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Stream rules.
    #[serde(default, rename = "stream")]
    pub streams: Vec<StreamDoc>,
}

/// A `[[product]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDoc {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Topic filters its devices may publish to (`{device}` allowed).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters its devices may subscribe to (`{device}` allowed).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// A `[[device]]` table: exactly one of `secret` and `secret_digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDoc {
    /// Unique id.
    pub id: String,
    /// Its product.
    pub product: String,
    /// Its secret in clear (only its digest is sent on).
    #[serde(default)]
    pub secret: Option<String>,
    /// Its secret's digest, 32 hex digits.
    #[serde(default)]
    pub secret_digest: Option<String>,
}

/// A `[[stream]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDoc {
    /// `app/name` or `app/*`.
    pub name: String,
    /// Key a publisher must give.
    #[serde(default)]
    pub publish_key: Option<String>,
    /// Whether viewers may play it (default true).
    #[serde(default = "yes")]
    pub allow_play: bool,
}

fn yes() -> bool {
    true
}

impl DeviceDoc {
    /// The registry entry, with the secret turned into its digest.
    pub fn to_device(&self) -> Result<Device, String> {
        validate_device_id(&self.id)?;
        let secret = match (&self.secret, &self.secret_digest) {
            (Some(s), None) => {
                validate_secret(s)?;
                SecretDigest::of(&self.id, s.as_bytes())
            }
            (None, Some(hex)) => SecretDigest::from_hex(hex)?,
            _ => return Err("give exactly one of `secret` and `secret_digest`".to_owned()),
        };
        Ok(Device {
            id: self.id.clone(),
            product: self.product.clone(),
            secret,
        })
    }
}

impl DesiredStateDocument {
    /// Parses a document; errors name the line and column.
    pub fn from_toml(text: &str) -> Result<Self, DocumentError> {
        parse_toml(text)
    }

    /// The resources the document declares, kind by kind (listeners,
    /// products, devices, routes, streams), each kind in file order.
    /// Secrets are turned into digests here; the rest is validated by the
    /// control plane against the whole desired state.
    pub fn to_resources(&self) -> Result<Vec<Resource>, DocumentError> {
        let mut out = Vec::with_capacity(
            self.listeners.len()
                + self.products.len()
                + self.devices.len()
                + self.routes.len()
                + self.streams.len(),
        );
        out.extend(
            self.listeners
                .iter()
                .map(|l| Resource::Listener(Listener::from(l))),
        );
        out.extend(self.products.iter().map(|p| {
            Resource::Product(Product {
                name: p.name.clone(),
                description: p.description.clone(),
                publish: p.publish.clone(),
                subscribe: p.subscribe.clone(),
            })
        }));
        for (i, d) in self.devices.iter().enumerate() {
            let device = d
                .to_device()
                .map_err(|e| ConfigError::new(format!("device[{i}] {:?}", d.id), e))?;
            out.push(Resource::Device(device));
        }
        out.extend(self.routes.iter().map(|r| Resource::Route(Route::from(r))));
        out.extend(self.streams.iter().map(|s| {
            Resource::Stream(Stream {
                name: s.name.clone(),
                publish_key: s.publish_key.clone(),
                allow_play: s.allow_play,
            })
        }));
        Ok(out)
    }
}
