//! The replicated lease table: which leases exist, their granted TTLs, the
//! last checkpointed remaining TTL, and the keys attached to each.
//!
//! - Only what every member must agree on lives here. When a lease expires
//!   is the leader's knowledge alone (the server's `lease` module); it ends
//!   a lease by proposing its revocation, which every member applies alike.
//! - A key is attached to at most one lease, the one its live record names
//!   (`KeyValue::lease`), and a lease's key set holds exactly the live keys
//!   naming it: a put moves a key from its old lease to its new one, a
//!   delete detaches it, a revocation deletes every key it holds.
//! - The table is persistent, so the store's O(1) copy copies it too.

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use crate::proto::LeaseRecord;
use crate::proto::mvccpb::KeyValue;

/// One lease as every member knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// The remaining TTL the leader last checkpointed (0: none since the
    /// grant or the last renewal: the lease has its full TTL).
    pub remaining: i64,
    pub keys: OrdSet<Bytes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    table: OrdMap<i64, Lease>,
}

impl Leases {
    /// A table rebuilt from a snapshot: its lease records, and the live
    /// keys that name a lease.
    pub fn rebuilt<'a>(records: &[LeaseRecord], live: impl Iterator<Item = &'a KeyValue>) -> Leases {
        let mut leases = Leases::default();
        for r in records {
            leases.table.insert(r.id, Lease { ttl: r.ttl, remaining: r.remaining_ttl, keys: OrdSet::new() });
        }
        for kv in live.filter(|kv| kv.lease != 0) {
            leases.attach(kv.lease, kv.key.clone());
        }
        leases
    }

    /// The lease records a snapshot holds.
    pub fn records(&self) -> Vec<LeaseRecord> {
        self.table.iter().map(|(&id, l)| LeaseRecord { id, ttl: l.ttl, remaining_ttl: l.remaining }).collect()
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.table.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.table.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every lease, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.table.iter().map(|(&id, l)| (id, l))
    }

    /// Adds a lease; false (and nothing changes) if `id` is taken.
    pub fn grant(&mut self, id: i64, ttl: i64) -> bool {
        if self.table.contains_key(&id) {
            return false;
        }
        self.table.insert(id, Lease { ttl, remaining: 0, keys: OrdSet::new() });
        true
    }

    /// Removes a lease, giving back the keys it held.
    pub fn revoke(&mut self, id: i64) -> Option<OrdSet<Bytes>> {
        self.table.remove(&id).map(|l| l.keys)
    }

    /// Records a leader's checkpoint; leases since revoked are skipped.
    pub fn checkpoint(&mut self, id: i64, remaining: i64) {
        if let Some(lease) = self.table.get_mut(&id) {
            lease.remaining = remaining;
        }
    }

    /// Attaches `key` to lease `id` (0: no lease); the caller has checked
    /// that the lease exists.
    pub fn attach(&mut self, id: i64, key: Bytes) {
        if let Some(lease) = self.table.get_mut(&id) {
            lease.keys.insert(key);
        }
    }

    /// Detaches `key` from lease `id` (0: no lease).
    pub fn detach(&mut self, id: i64, key: &Bytes) {
        if let Some(lease) = self.table.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}
