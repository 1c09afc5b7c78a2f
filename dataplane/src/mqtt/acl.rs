//! Topic permissions of devices, from their product: which topics a device
//! may publish to and which filters it may subscribe to.

use std::collections::HashMap;

use shoal_protocols::config::ProductConfig;

/// The products' permissions, as this core runs them.
#[derive(Debug, Default)]
pub(crate) struct AclTable {
    products: HashMap<Box<str>, ProductConfig>,
}

/// One device's permissions, with `{device}` filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceAcl {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl AclTable {
    pub(crate) fn build(products: &[ProductConfig]) -> Self {
        Self {
            products: products
                .iter()
                .map(|p| (p.name.as_str().into(), p.clone()))
                .collect(),
        }
    }

    /// The permissions of `device` of `product`; a product this core does
    /// not know gives the defaults (own `up` to publish, own `down` to
    /// subscribe).
    pub(crate) fn for_device(&self, product: &str, device: &str) -> DeviceAcl {
        let fill = |list: &[String], default: &str| -> Vec<String> {
            if list.is_empty() {
                vec![
                    format!("devices/{device}/{default}"),
                    format!("devices/{device}/{default}/#"),
                ]
            } else {
                list.iter().map(|f| f.replace("{device}", device)).collect()
            }
        };
        match self.products.get(product) {
            Some(p) => DeviceAcl {
                publish: fill(&p.publish, "up"),
                subscribe: fill(&p.subscribe, "down"),
            },
            None => DeviceAcl {
                publish: fill(&[], "up"),
                subscribe: fill(&[], "down"),
            },
        }
    }
}

impl DeviceAcl {
    /// Whether the device may publish to `topic`.
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .iter()
            .any(|f| shoal_protocols::topic::filter_matches(f, topic))
    }

    /// Whether the device may subscribe to `filter`: every topic it matches
    /// must be allowed.
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|a| filter_covers(a, filter))
    }
}

/// Whether every topic `inner` matches is matched by `outer`.
pub(crate) fn filter_covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_filters() {
        assert!(filter_covers("a/#", "a/b/c"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(filter_covers("a/#", "a/#"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("a/b", "a/b/c"));
        assert!(!filter_covers("a/b/c", "a/b"));
        assert!(filter_covers("#", "x/y"));
    }

    #[test]
    fn defaults_are_the_devices_own_topics() {
        let table = AclTable::build(&[ProductConfig {
            name: "meter".into(),
            publish: vec!["telemetry/{device}/#".into()],
            subscribe: vec![],
        }]);
        let acl = table.for_device("meter", "m1");
        assert!(acl.may_publish("telemetry/m1/power"));
        assert!(!acl.may_publish("telemetry/m2/power"));
        assert!(!acl.may_publish("devices/m1/up"));
        assert!(acl.may_subscribe("devices/m1/down"));
        assert!(acl.may_subscribe("devices/m1/down/#"));
        assert!(!acl.may_subscribe("devices/+/down"));
        assert!(!acl.may_subscribe("#"));
        let other = table.for_device("unknown", "x");
        assert!(other.may_publish("devices/x/up"));
        assert!(other.may_publish("devices/x/up/a"));
    }
}
