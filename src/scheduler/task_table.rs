//! A table keyed by task identity (tenant and id) that looks up with borrowed strings:
//! an operation hashes tenant and id once, in one pass (SipHash with a random key: ids
//! are chosen by submitters), and copies nothing; an entry keeps its hash, so growing the
//! table or removing by hash hashes nothing again. Adding an entry allocates its key once.

use std::hash::{BuildHasher, RandomState};

use hashbrown::hash_table::{Entry, HashTable};

/// Values of type `V` by task (tenant, id).
#[derive(Debug)]
pub struct TaskTable<V> {
    table: HashTable<Slot<V>>,
    hasher: RandomState,
}

/// An entry: tenant and id in one allocation (the tenant is its first `tenant_len` bytes).
#[derive(Debug)]
struct Slot<V> {
    hash: u64,
    tenant_len: usize,
    key: Box<str>,
    value: V,
}

impl<V> Slot<V> {
    fn new(hash: u64, tenant: &str, id: &str, value: V) -> Self {
        let mut key = String::with_capacity(tenant.len() + id.len());
        key.push_str(tenant);
        key.push_str(id);
        Self {
            hash,
            tenant_len: tenant.len(),
            key: key.into_boxed_str(),
            value,
        }
    }

    fn is(&self, tenant: &str, id: &str) -> bool {
        self.tenant_len == tenant.len()
            && self.key.len() == tenant.len() + id.len()
            && self.key.starts_with(tenant)
            && self.key.ends_with(id)
    }
}

impl<V> Default for TaskTable<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<V> TaskTable<V> {
    /// The hash of task `id` of `tenant` in this table.
    pub fn hash(&self, tenant: &str, id: &str) -> u64 {
        // `Hash for str` ends each string with a marker: ("ab", "c") and ("a", "bc") differ.
        self.hasher.hash_one((tenant, id))
    }

    /// The value of task `id` of `tenant`, with the hash it is kept under: made by `make`
    /// when the task is not in the table yet (then `true`).
    pub fn get_or_insert_with(
        &mut self,
        tenant: &str,
        id: &str,
        make: impl FnOnce() -> V,
    ) -> (&mut V, u64, bool) {
        let hash = self.hash(tenant, id);
        match self.table.entry(hash, |s| s.is(tenant, id), |s| s.hash) {
            Entry::Occupied(known) => (&mut known.into_mut().value, hash, false),
            Entry::Vacant(place) => {
                let slot = place.insert(Slot::new(hash, tenant, id, make()));
                (&mut slot.into_mut().value, hash, true)
            }
        }
    }

    /// Sets the value of task `id` of `tenant`.
    pub fn insert(&mut self, tenant: &str, id: &str, value: V) {
        let hash = self.hash(tenant, id);
        match self.table.entry(hash, |s| s.is(tenant, id), |s| s.hash) {
            Entry::Occupied(mut known) => known.get_mut().value = value,
            Entry::Vacant(place) => {
                place.insert(Slot::new(hash, tenant, id, value));
            }
        }
    }

    /// The value of task `id` of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<&V> {
        if self.table.is_empty() {
            return None;
        }
        let hash = self.hash(tenant, id);
        self.table
            .find(hash, |s| s.is(tenant, id))
            .map(|s| &s.value)
    }

    /// Removes task `id` of `tenant`; its value.
    pub fn remove(&mut self, tenant: &str, id: &str) -> Option<V> {
        if self.table.is_empty() {
            return None;
        }
        let hash = self.hash(tenant, id);
        let found = self.table.find_entry(hash, |s| s.is(tenant, id)).ok()?;
        Some(found.remove().0.value)
    }

    /// Removes the entry kept under `hash` whose value `pick` chooses; its value.
    pub fn remove_by_hash(&mut self, hash: u64, pick: impl Fn(&V) -> bool) -> Option<V> {
        let found = self.table.find_entry(hash, |s| pick(&s.value)).ok()?;
        Some(found.remove().0.value)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_and_id_are_not_confused_across_their_boundary() {
        let mut t = TaskTable::default();
        t.insert("ab", "c", 1);
        assert_eq!(t.get("ab", "c"), Some(&1));
        assert_eq!(t.get("a", "bc"), None);
        assert_eq!(t.get("abc", ""), None);
        assert_eq!(t.remove("a", "bc"), None);
        t.insert("ab", "c", 2);
        assert_eq!(t.len(), 1, "set again, not added twice");
        assert_eq!(t.remove("ab", "c"), Some(2));
        assert!(t.is_empty());
    }

    #[test]
    fn many_entries_survive_growth_and_are_removed_by_hash() {
        let mut t = TaskTable::default();
        let mut hashes = Vec::new();
        for i in 0..10_000 {
            let (_, hash, new) = t.get_or_insert_with("acme", &i.to_string(), || i);
            assert!(new);
            hashes.push(hash);
        }
        assert!((0..10_000).all(|i| t.get("acme", &i.to_string()) == Some(&i)));
        for (i, hash) in hashes.iter().enumerate() {
            assert_eq!(t.remove_by_hash(*hash, |v| *v == i), Some(i));
        }
        assert!(t.is_empty());
    }
}
