//! The compact device table one core keeps for the devices it owns.
//!
//! A device costs one 24-byte [`Record`], its id's bytes in one shared
//! arena, and one or two 4-byte slots of an open-addressing index (linear
//! probing, load at most 3/4, backward-shift deletion so there are no
//! tombstones). Product names are interned: a record holds a product index.
//! There is no allocation per device, so dropping a table of a million
//! devices frees a handful of large blocks.

use std::collections::HashMap;

use shoal_protocols::control::SecretDigest;

use super::stable_hash;

/// Index slot that holds no record.
const EMPTY: u32 = u32::MAX;

/// Most products one table interns.
pub(crate) const MAX_PRODUCTS: usize = u16::MAX as usize;

/// A product index of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProductId(u16);

/// One device: where its id is in the arena, its product, its digest.
#[derive(Debug, Clone, Copy)]
struct Record {
    id_start: u32,
    id_len: u8,
    product: ProductId,
    digest: [u8; 16],
}

/// An interned product name and how many devices of the table use it.
#[derive(Debug)]
struct ProductSlot {
    name: Box<str>,
    devices: u32,
}

/// Why a device could not go into a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TableError {
    /// Ids are at most 255 bytes here (the protocol allows 128).
    #[error("device id {0:?} is longer than 255 bytes")]
    IdTooLong(String),
    /// The arena offsets are 32-bit.
    #[error("the registry shard holds 4 GiB of device ids and cannot take more")]
    ArenaFull,
    /// More distinct products than the index type counts.
    #[error("more than {MAX_PRODUCTS} products are in use")]
    TooManyProducts,
}

/// A device as the table hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceView<'a> {
    pub(crate) id: &'a str,
    pub(crate) product: &'a str,
    pub(crate) digest: SecretDigest,
}

/// The devices of one shard.
#[derive(Default)]
pub(crate) struct DeviceTable {
    ids: Vec<u8>,
    /// Bytes of `ids` that belong to removed devices.
    garbage_bytes: usize,
    records: Vec<Record>,
    /// Power-of-two sized; each slot is a record index or [`EMPTY`].
    slots: Vec<u32>,
    products: Vec<ProductSlot>,
    product_ids: HashMap<Box<str>, ProductId>,
}

impl std::fmt::Debug for DeviceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTable")
            .field("devices", &self.records.len())
            .field("products", &self.products.len())
            .field("heap_bytes", &self.heap_bytes())
            .finish()
    }
}

/// The slot a hash starts probing at: the high bits of a multiplicative
/// mix, so that ids sharing their low hash bits (every id of a shard has
/// the same `hash % shards`) still spread over the index.
fn home_slot(hash: u64, mask: usize) -> usize {
    let mixed = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let bits = (mask + 1).trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (mixed >> (64 - bits)) as usize & mask
}

impl DeviceTable {
    /// Devices in the table.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Memory the table holds on the heap, in bytes (capacities, not
    /// lengths).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ids.capacity()
            + self.records.capacity() * size_of::<Record>()
            + self.slots.capacity() * size_of::<u32>()
            + self
                .products
                .iter()
                .map(|p| size_of::<ProductSlot>() + 2 * p.name.len())
                .sum::<usize>()
            + self.product_ids.capacity() * (size_of::<(Box<str>, ProductId)>() + 1)
    }

    fn id_of(&self, record: &Record) -> &str {
        let start = record.id_start as usize;
        let bytes = self
            .ids
            .get(start..start + usize::from(record.id_len))
            .unwrap_or_default();
        // Only whole `&str`s are ever copied into the arena.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn view(&self, record: &Record) -> DeviceView<'_> {
        DeviceView {
            id: self.id_of(record),
            product: self
                .products
                .get(usize::from(record.product.0))
                .map_or("", |p| &p.name),
            digest: SecretDigest(record.digest),
        }
    }

    /// The slot holding `id`'s record, or the empty slot where it would go.
    fn probe(&self, id: &str) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut slot = home_slot(stable_hash(id.as_bytes()), mask);
        loop {
            let entry = self.slots.get(slot).copied().unwrap_or(EMPTY);
            if entry == EMPTY {
                return Err(slot);
            }
            if let Some(record) = self.records.get(entry as usize) {
                if self.id_of(record) == id {
                    return Ok(slot);
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    fn record_index(&self, id: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = self.probe(id).ok()?;
        self.slots.get(slot).map(|&r| r as usize)
    }

    /// The device `id`, if the table has it.
    pub(crate) fn get(&self, id: &str) -> Option<DeviceView<'_>> {
        let record = self.records.get(self.record_index(id)?)?;
        Some(self.view(record))
    }

    /// Whether the table has device `id`.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.record_index(id).is_some()
    }

    /// Every device, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = DeviceView<'_>> + '_ {
        self.records.iter().map(|r| self.view(r))
    }

    /// The product index of `name`, interning it.
    fn intern(&mut self, name: &str) -> Result<ProductId, TableError> {
        if let Some(id) = self.product_ids.get(name) {
            return Ok(*id);
        }
        if self.products.len() >= MAX_PRODUCTS {
            return Err(TableError::TooManyProducts);
        }
        let id = ProductId(self.products.len() as u16);
        self.products.push(ProductSlot {
            name: name.into(),
            devices: 0,
        });
        self.product_ids.insert(name.into(), id);
        Ok(id)
    }

    /// Product names interned here, with how many devices use each.
    pub(crate) fn product_usage(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.products.iter().map(|p| (&*p.name, p.devices))
    }

    fn product_count(&mut self, product: ProductId) -> Option<&mut u32> {
        self.products
            .get_mut(usize::from(product.0))
            .map(|p| &mut p.devices)
    }

    /// Doubles the index (or creates it) and places every record again.
    fn grow_index(&mut self) {
        let new_len = (self.slots.len() * 2).max(16);
        let mask = new_len - 1;
        let mut slots = vec![EMPTY; new_len];
        for (index, record) in self.records.iter().enumerate() {
            let mut slot = home_slot(stable_hash(self.id_of(record).as_bytes()), mask);
            while slots.get(slot).is_some_and(|&s| s != EMPTY) {
                slot = (slot + 1) & mask;
            }
            if let Some(s) = slots.get_mut(slot) {
                *s = index as u32;
            }
        }
        self.slots = slots;
    }

    /// Adds device `id` or replaces its product and digest; `true` when it
    /// is new.
    pub(crate) fn upsert(
        &mut self,
        id: &str,
        product: &str,
        digest: SecretDigest,
    ) -> Result<bool, TableError> {
        let id_len = u8::try_from(id.len()).map_err(|_| TableError::IdTooLong(id.to_owned()))?;
        let product = self.intern(product)?;
        if let Some(index) = self.record_index(id) {
            let old = self.records.get(index).map(|r| r.product);
            if let Some(count) = old.and_then(|p| self.product_count(p)) {
                *count = count.saturating_sub(1);
            }
            if let Some(record) = self.records.get_mut(index) {
                record.product = product;
                record.digest = digest.0;
            }
            if let Some(count) = self.product_count(product) {
                *count += 1;
            }
            return Ok(false);
        }
        if (self.records.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow_index();
        }
        let id_start = u32::try_from(self.ids.len()).map_err(|_| TableError::ArenaFull)?;
        if u32::try_from(self.ids.len() + id.len()).is_err() {
            return Err(TableError::ArenaFull);
        }
        if self.records.len() >= EMPTY as usize {
            return Err(TableError::ArenaFull);
        }
        let Err(slot) = self.probe(id) else {
            return Ok(false);
        };
        self.ids.extend_from_slice(id.as_bytes());
        let index = self.records.len() as u32;
        self.records.push(Record {
            id_start,
            id_len,
            product,
            digest: digest.0,
        });
        if let Some(s) = self.slots.get_mut(slot) {
            *s = index;
        }
        if let Some(count) = self.product_count(product) {
            *count += 1;
        }
        Ok(true)
    }

    /// Removes device `id`; `false` when the table did not have it.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let Ok(slot) = self.probe(id) else {
            return false;
        };
        let index = self.slots.get(slot).copied().unwrap_or(EMPTY) as usize;
        self.clear_slot(slot);
        let Some(last) = self.records.len().checked_sub(1) else {
            return false;
        };
        if index > last {
            return false;
        }
        if index != last {
            // The last record moves into `index`: repoint its slot.
            self.repoint(last, index);
        }
        let removed = self.records.swap_remove(index);
        self.garbage_bytes += usize::from(removed.id_len);
        if let Some(count) = self.product_count(removed.product) {
            *count = count.saturating_sub(1);
        }
        if self.garbage_bytes > 64 * 1024 && self.garbage_bytes * 2 > self.ids.len() {
            self.compact_ids();
        }
        true
    }

    /// Makes the slot that holds record `from` hold `to` instead.
    fn repoint(&mut self, from: usize, to: usize) {
        let Some(record) = self.records.get(from) else {
            return;
        };
        let mask = self.slots.len() - 1;
        let mut slot = home_slot(stable_hash(self.id_of(record).as_bytes()), mask);
        loop {
            match self.slots.get_mut(slot) {
                Some(s) if *s == from as u32 => {
                    *s = to as u32;
                    return;
                }
                Some(s) if *s == EMPTY => return,
                None => return,
                Some(_) => slot = (slot + 1) & mask,
            }
        }
    }

    /// Empties `slot` and shifts back the entries after it that probed
    /// past it, so lookups never meet a hole before their entry.
    fn clear_slot(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        let mut next = (hole + 1) & mask;
        loop {
            let entry = self.slots.get(next).copied().unwrap_or(EMPTY);
            if entry == EMPTY {
                break;
            }
            let home = self.records.get(entry as usize).map_or(next, |r| {
                home_slot(stable_hash(self.id_of(r).as_bytes()), mask)
            });
            // Distance from home to `next` vs. to the hole, cyclically: the
            // entry may move into the hole only if the hole lies between
            // its home and its current slot.
            let from_home_to_next = next.wrapping_sub(home) & mask;
            let from_home_to_hole = hole.wrapping_sub(home) & mask;
            if from_home_to_hole < from_home_to_next {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = entry;
                }
                hole = next;
            }
            next = (next + 1) & mask;
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = EMPTY;
        }
    }

    /// Rewrites the arena without the ids of removed devices.
    fn compact_ids(&mut self) {
        let mut ids = Vec::with_capacity(self.ids.len() - self.garbage_bytes);
        for record in &mut self.records {
            let start = record.id_start as usize;
            let bytes = self
                .ids
                .get(start..start + usize::from(record.id_len))
                .unwrap_or_default();
            record.id_start = ids.len() as u32;
            ids.extend_from_slice(bytes);
        }
        self.ids = ids;
        self.garbage_bytes = 0;
    }

    /// Gives back what the growth of the table reserved beyond its size.
    pub(crate) fn shrink_to_fit(&mut self) {
        if self.garbage_bytes > 0 {
            self.compact_ids();
        }
        self.ids.shrink_to_fit();
        self.records.shrink_to_fit();
        self.product_ids.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> SecretDigest {
        SecretDigest([n; 16])
    }

    #[test]
    fn upsert_get_remove_keep_every_other_device_reachable() {
        let mut t = DeviceTable::default();
        for i in 0..5000u32 {
            assert!(t
                .upsert(&format!("dev-{i}"), "meter", digest(i as u8))
                .unwrap());
        }
        assert!(!t.upsert("dev-7", "valve", digest(99)).unwrap());
        assert_eq!(t.len(), 5000);
        let d = t.get("dev-7").unwrap();
        assert_eq!((d.product, d.digest), ("valve", digest(99)));
        // Remove every third one; the rest stay reachable.
        for i in (0..5000u32).step_by(3) {
            assert!(t.remove(&format!("dev-{i}")), "dev-{i}");
        }
        assert!(!t.remove("dev-0"));
        assert!(!t.remove("never"));
        for i in 0..5000u32 {
            let id = format!("dev-{i}");
            assert_eq!(t.contains(&id), i % 3 != 0, "{id}");
        }
        assert_eq!(t.len(), 5000 - 1667);
        let usage: HashMap<&str, u32> = t.product_usage().collect();
        assert_eq!(usage["valve"], 1);
        assert_eq!(usage["meter"], 5000 - 1667 - 1);
        assert_eq!(t.iter().count(), t.len());
        t.shrink_to_fit();
        assert!(t.get("dev-1").is_some());
        assert_eq!(t.garbage_bytes, 0);
    }

    /// Random upserts and removes over a small id space (many collisions,
    /// long probe chains, compactions) agree with a `HashMap`.
    #[test]
    fn random_changes_agree_with_a_hash_map() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut table = DeviceTable::default();
        let mut model: HashMap<String, (String, u8)> = HashMap::new();
        for round in 0..200_000u32 {
            let id = format!("device-{:x}", next() % 3000);
            if next() % 3 == 0 {
                assert_eq!(table.remove(&id), model.remove(&id).is_some(), "{id}");
            } else {
                let product = format!("p{}", next() % 5);
                let n = (next() % 250) as u8;
                let new = table.upsert(&id, &product, digest(n)).unwrap();
                assert_eq!(new, model.insert(id, (product, n)).is_none());
            }
            if round % 20_000 == 0 {
                table.shrink_to_fit();
            }
        }
        assert_eq!(table.len(), model.len());
        for (id, (product, n)) in &model {
            let d = table.get(id).unwrap();
            assert_eq!(
                (d.product, d.digest),
                (product.as_str(), digest(*n)),
                "{id}"
            );
        }
        let mut per_product: HashMap<&str, u32> = HashMap::new();
        for (product, _) in model.values() {
            *per_product.entry(product).or_default() += 1;
        }
        for (product, devices) in table.product_usage() {
            assert_eq!(per_product.get(product).copied().unwrap_or(0), devices);
        }
    }

    #[test]
    fn long_ids_are_refused() {
        let mut t = DeviceTable::default();
        assert!(matches!(
            t.upsert(&"x".repeat(256), "p", digest(1)),
            Err(TableError::IdTooLong(_))
        ));
        assert!(t.upsert(&"x".repeat(255), "p", digest(1)).unwrap());
    }
}
