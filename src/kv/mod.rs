//! The replicated state machine: an ordered key-value map with etcd's
//! revisions.
//!
//! - The store's revision starts at 1 and grows by one for every command that
//!   changes something (a put, a delete that deleted a key, a transaction with
//!   any such write); every write of one command carries that revision.
//! - Per key: `create_revision` (revision of its creation), `mod_revision`
//!   (of its last change) and `version` (changes since creation).
//! - A command either applies completely or not at all. A put or delete
//!   checks everything before its single change and works on the live map; a
//!   transaction runs against an O(1) copy of the persistent map that replaces
//!   the live one only on success. The same O(1) copy is the snapshot's cut.
//!
//! - Every revision since the compaction point is kept ([`history`]), so a
//!   read may ask for any revision from [`KvStore::compact_revision`] on; a
//!   compaction (itself a command, so every member compacts at the same
//!   point) drops what reads from then on cannot see.
//!
//! - The member table travels with the map (in snapshots, and in the O(1)
//!   copy watchers and readers get), but this module only carries it: the
//!   server's `membership` module owns what it means and how it changes.
//! - So do the raised alarms (etcd's alarm store), which the server's
//!   `alarms` module changes. The store enforces one rule of theirs, so
//!   every member refuses alike: while a NOSPACE alarm is raised, a command
//!   that could add data (a put, a transaction with a put in either branch)
//!   is refused and changes nothing; deletes, reads and compactions go on.
//! - Leases ([`leases`]) are part of the map's state: a put names the lease
//!   its key lives under, which must exist; revoking a lease deletes every
//!   key attached to it in one revision (none: the revision stays).
//! - So is the auth store ([`crate::auth`]), which this module carries and
//!   changes by its commands. A key-value command stamped with an auth
//!   revision older than the store's was checked against permissions that
//!   may have changed since: it is refused (etcd's "revision of auth store
//!   is old") and changes nothing; the caller checks again and retries.

mod history;
mod leases;
mod range;
mod txn;

use bytes::Bytes;
use imbl::OrdMap;

use crate::auth::{AuthError, AuthStore};
use crate::proto::etcdserverpb::{AlarmMember, AlarmType};
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseOp, response_op,
};
use crate::proto::mvccpb::KeyValue;
use crate::proto::raftkvpb::{Command, command};
use crate::proto::{Membership, SnapshotHeader, SnapshotMeta};

pub use history::{Change, History};
pub use leases::{Lease, Leases};
pub use range::{KeyRange, prefix_end};

/// Most operations one transaction may hold (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// Why a request was refused. The messages are etcd's, so clients that match
/// on them keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("etcdserver: key is not provided")]
    KeyNotProvided,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("command carries no request")]
    EmptyCommand,
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

#[derive(Clone, Debug)]
pub struct KvStore {
    /// The live keys at `revision`: what most reads want, without a walk
    /// through history.
    map: OrdMap<Bytes, KeyValue>,
    history: History,
    revision: i64,
    /// The cluster's member table at the same point of the log.
    membership: std::sync::Arc<Membership>,
    /// The alarms raised at the same point of the log.
    alarms: std::sync::Arc<Vec<AlarmMember>>,
    leases: Leases,
    /// Users, roles and permissions at the same point of the log.
    auth: std::sync::Arc<AuthStore>,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore {
            map: OrdMap::new(),
            history: History::starting_at(1),
            revision: 1,
            membership: Default::default(),
            alarms: Default::default(),
            leases: Leases::default(),
            auth: Default::default(),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Every revision since the compaction point.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The oldest revision a read may ask for.
    pub fn compact_revision(&self) -> i64 {
        self.history.oldest()
    }

    /// A store rebuilt from a snapshot's records, in any order: every
    /// record from `oldest` on (tombstones included), at `revision`.
    pub fn from_records(revision: i64, oldest: i64, records: impl IntoIterator<Item = KeyValue>) -> KvStore {
        let mut records: Vec<KeyValue> = records.into_iter().collect();
        history::sort_records(&mut records);
        // The live map beside the history's two indexes, on this thread.
        let (history, map) = std::thread::scope(|s| {
            let history = s.spawn(|| History::rebuilt(oldest, &records));
            (history.join().expect("rebuilding history does not panic"), live_map(&records))
        });
        KvStore {
            map,
            history,
            revision,
            membership: Default::default(),
            alarms: Default::default(),
            leases: Leases::default(),
            auth: Default::default(),
        }
    }

    /// A store rebuilt from a snapshot with this header.
    pub fn from_snapshot(header: &SnapshotHeader, records: impl IntoIterator<Item = KeyValue>) -> KvStore {
        // Written before history was kept: live keys only.
        let oldest = if header.compact_revision > 0 { header.compact_revision } else { header.revision };
        let mut kv = KvStore::from_records(header.revision, oldest, records);
        kv.membership = std::sync::Arc::new(header.membership.clone().unwrap_or_default());
        kv.alarms = std::sync::Arc::new(header.alarms.clone());
        kv.leases = Leases::rebuilt(&header.leases, kv.map.values());
        kv.auth = std::sync::Arc::new(AuthStore::from_record(header.auth.as_ref()));
        kv
    }

    /// The header of a snapshot of this store taken at `meta`.
    pub fn snapshot_header(&self, meta: SnapshotMeta) -> SnapshotHeader {
        SnapshotHeader {
            meta: Some(meta),
            revision: self.revision,
            compact_revision: self.compact_revision(),
            membership: Some((*self.membership).clone()),
            alarms: (*self.alarms).clone(),
            leases: self.leases.records(),
            auth: Some(self.auth.record()),
        }
    }

    /// The member table (empty when not known: a snapshot written before
    /// the table was kept).
    pub fn membership(&self) -> &std::sync::Arc<Membership> {
        &self.membership
    }

    pub fn set_membership(&mut self, membership: Membership) {
        self.membership = std::sync::Arc::new(membership);
    }

    /// The alarms raised, in the order they were raised.
    pub fn alarms(&self) -> &std::sync::Arc<Vec<AlarmMember>> {
        &self.alarms
    }

    pub fn set_alarms(&mut self, alarms: Vec<AlarmMember>) {
        self.alarms = std::sync::Arc::new(alarms);
    }

    /// The leases granted, with the keys attached to each.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The auth store: users, roles, and whether auth is enabled.
    pub fn auth(&self) -> &std::sync::Arc<AuthStore> {
        &self.auth
    }

    /// The encoded size of every record the history holds: what a snapshot
    /// writes, and what the space quota measures.
    pub fn data_bytes(&self) -> u64 {
        self.history.bytes()
    }

    /// Every record the history holds, tombstones included, in key then
    /// revision order: what a snapshot holds.
    pub fn records(&self) -> impl Iterator<Item = &KeyValue> {
        self.history.records()
    }

    /// Records the history holds: what a snapshot writes.
    pub fn records_len(&self) -> usize {
        self.history.record_count()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies a committed command. An error changes nothing.
    pub fn apply(&mut self, command: &Command) -> Result<ResponseOp, KvError> {
        if write_cost(command) > 0 && self.alarms.iter().any(|a| a.alarm == AlarmType::Nospace as i32) {
            return Err(KvError::NoSpace);
        }
        if let Some(stamp) = &command.stamp
            && self.auth.enabled()
            && stamp.revision < self.auth.revision()
            && !matches!(command.request, Some(command::Request::Auth(_)))
        {
            return Err(KvError::Auth(AuthError::OldRevision));
        }
        let response = match &command.request {
            // A put or delete checks everything before its one change, so it
            // can work on the live map: no path copying on the hot path.
            Some(command::Request::Put(req)) => {
                response_op::Response::ResponsePut(self.write_in_place(|w| w.put(req))?)
            }
            Some(command::Request::DeleteRange(req)) => {
                response_op::Response::ResponseDeleteRange(self.write_in_place(|w| w.delete_range(req))?)
            }
            // A transaction may fail after earlier operations changed the
            // map: it works on an O(1) copy that replaces the map on success.
            Some(command::Request::Txn(req)) => {
                let mut write = Write {
                    map: self.map.clone(),
                    history: self.history.clone(),
                    leases: self.leases.clone(),
                    revision: self.revision + 1,
                    changed: false,
                };
                let response = write.txn(req)?;
                if write.changed {
                    self.map = write.map;
                    self.history = write.history;
                    self.leases = write.leases;
                    self.revision = write.revision;
                }
                response_op::Response::ResponseTxn(response)
            }
            // A compaction answers with no response of its own: the caller
            // builds etcd's CompactionResponse around the revision.
            Some(command::Request::Compaction(req)) => {
                self.compact(req)?;
                return Ok(ResponseOp { response: None });
            }
            Some(command::Request::LeaseGrant(req)) => {
                if !self.leases.grant(req.id, req.ttl) {
                    return Err(KvError::LeaseExists);
                }
                return Ok(ResponseOp { response: None });
            }
            Some(command::Request::LeaseRevoke(req)) => {
                self.write_in_place(|w| w.revoke(req.id))?;
                return Ok(ResponseOp { response: None });
            }
            Some(command::Request::LeaseCheckpoint(req)) => {
                for c in &req.checkpoints {
                    self.leases.checkpoint(c.id, c.remaining_ttl);
                }
                return Ok(ResponseOp { response: None });
            }
            Some(command::Request::Auth(change)) => {
                let mut auth = (*self.auth).clone();
                auth.apply(change, command.stamp.as_ref())?;
                self.auth = std::sync::Arc::new(auth);
                return Ok(ResponseOp { response: None });
            }
            // Member table changes are applied by the server's membership
            // module; one reaching the map carries nothing for it.
            Some(command::Request::Member(_) | command::Request::Alarm(_)) | None => {
                return Err(KvError::EmptyCommand);
            }
        };
        Ok(ResponseOp { response: Some(response) })
    }

    /// Runs a single-change command on the live map.
    fn write_in_place<T>(&mut self, op: impl FnOnce(&mut Write) -> Result<T, KvError>) -> Result<T, KvError> {
        let map = std::mem::take(&mut self.map);
        let history = std::mem::take(&mut self.history);
        let leases = std::mem::take(&mut self.leases);
        let mut write = Write { map, history, leases, revision: self.revision + 1, changed: false };
        let result = op(&mut write);
        self.map = write.map;
        self.history = write.history;
        self.leases = write.leases;
        if write.changed {
            self.revision = write.revision;
        }
        result
    }

    /// The live keys in `keys`, in key order.
    pub fn scan<'a>(&'a self, keys: &KeyRange) -> impl Iterator<Item = &'a KeyValue> + 'a {
        keys.scan(&self.map).map(|(_, kv)| kv)
    }

    /// Serves a read against the current state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        read(&self.map, &self.history, self.revision, req)
    }

    /// etcd's compaction: reads below `req.revision` are refused from now
    /// on, and what only they could see is dropped.
    fn compact(&mut self, req: &CompactionRequest) -> Result<(), KvError> {
        if req.revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        // A new store's history starts at 1 uncompacted: etcd lets the first
        // compaction be at 1, and refuses any at or below one already done.
        let oldest = self.history.oldest();
        if req.revision < oldest || (req.revision == oldest && oldest > 1) {
            return Err(KvError::Compacted);
        }
        self.history.compact(req.revision);
        Ok(())
    }

    /// etcd's HashKV: a checksum of every record the history holds up to
    /// `revision` (0: the current one), tombstones included, equal on members
    /// that applied the same log; with the compaction point it starts from.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError> {
        let revision = if revision == 0 { self.revision } else { revision };
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        if revision < self.compact_revision() {
            return Err(KvError::Compacted);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&revision.to_be_bytes());
        for kv in self.history.records().filter(|kv| kv.mod_revision <= revision) {
            hash_record(&mut hasher, kv);
        }
        Ok((hasher.finalize(), self.compact_revision()))
    }
}

/// Answers `req` from `map`, the live keys at revision `current`, or from
/// `history` for an older revision.
fn read(
    map: &OrdMap<Bytes, KeyValue>,
    history: &History,
    current: i64,
    req: &RangeRequest,
) -> Result<RangeResponse, KvError> {
    let keys = KeyRange::new(&req.key, &req.range_end)?;
    if req.revision > current {
        return Err(KvError::FutureRevision);
    }
    if req.revision > 0 && req.revision < history.oldest() {
        return Err(KvError::Compacted);
    }
    if req.revision <= 0 || req.revision == current {
        return Ok(range::range(keys.scan(map).map(|(_, kv)| kv), req));
    }
    Ok(range::range(history.at(&keys, req.revision), req))
}

/// One command's writes, against a copy of the map, all at one revision.
struct Write {
    map: OrdMap<Bytes, KeyValue>,
    history: History,
    leases: Leases,
    revision: i64,
    changed: bool,
}

impl Write {
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, KvError> {
        if req.key.is_empty() {
            return Err(KvError::KeyNotProvided);
        }
        if req.ignore_value && !req.value.is_empty() {
            return Err(KvError::ValueProvided);
        }
        if req.ignore_lease && req.lease != 0 {
            return Err(KvError::LeaseProvided);
        }
        if req.lease != 0 && !self.leases.contains(req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        let prev = self.map.get(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != lease {
            self.leases.detach(old_lease, &req.key);
            self.leases.attach(lease, req.key.clone());
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.history.record(kv.clone());
        self.map.insert(req.key.clone(), kv);
        self.changed = true;
        Ok(PutResponse { header: None, prev_kv: if req.prev_kv { prev } else { None } })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, KvError> {
        let range = KeyRange::new(&req.key, &req.range_end)?;
        let keys: Vec<Bytes> = range.scan(&self.map).map(|(k, _)| k.clone()).collect();
        let mut prev_kvs = Vec::new();
        for key in &keys {
            let prev = self.map.remove(key).expect("key was just scanned");
            self.leases.detach(prev.lease, key);
            self.history.record_deletion(key.clone(), self.revision);
            if req.prev_kv {
                prev_kvs.push(prev);
            }
        }
        self.changed |= !keys.is_empty();
        Ok(DeleteRangeResponse { header: None, deleted: keys.len() as i64, prev_kvs })
    }

    /// Ends a lease: every key attached to it is deleted, all at this
    /// revision (etcd's lessor deletes them in one transaction).
    fn revoke(&mut self, id: i64) -> Result<(), KvError> {
        let keys = self.leases.revoke(id).ok_or(KvError::LeaseNotFound)?;
        for key in keys {
            if self.map.remove(&key).is_some() {
                self.history.record_deletion(key, self.revision);
                self.changed = true;
            }
        }
        Ok(())
    }
}

/// The live keys of records in key then revision order: each key's last
/// record, unless it is a tombstone.
fn live_map(records: &[KeyValue]) -> OrdMap<Bytes, KeyValue> {
    records
        .chunk_by(|a, b| a.key == b.key)
        .filter_map(|versions| versions.last().filter(|kv| kv.version > 0))
        .map(|kv| (kv.key.clone(), kv.clone()))
        .collect()
}

/// Bytes a command may add to the store, as etcd's quota counts them: a
/// put's key and value plus [`PUT_OVERHEAD`]; a transaction's larger branch
/// (only one runs); [`LEASE_OVERHEAD`] for a lease grant; nothing for reads,
/// deletes, compactions and the rest.
pub fn write_cost(command: &Command) -> u64 {
    match &command.request {
        Some(command::Request::Put(req)) => put_cost(req),
        Some(command::Request::Txn(req)) => txn_cost(req),
        Some(command::Request::LeaseGrant(_)) => LEASE_OVERHEAD,
        _ => 0,
    }
}

/// What etcd's quota adds to each put for its bookkeeping (`kvOverhead`).
pub const PUT_OVERHEAD: u64 = 256;

/// What etcd's quota counts for a lease grant (`leaseOverhead`).
pub const LEASE_OVERHEAD: u64 = 64;

fn put_cost(req: &PutRequest) -> u64 {
    (req.key.len() + req.value.len()) as u64 + PUT_OVERHEAD
}

fn txn_cost(req: &crate::proto::etcdserverpb::TxnRequest) -> u64 {
    use crate::proto::etcdserverpb::request_op::Request;
    let branch = |ops: &[crate::proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(r)) => put_cost(r),
                Some(Request::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    };
    branch(&req.success).max(branch(&req.failure))
}

/// Builds a command from a request, for proposing.
pub fn put_command(req: PutRequest) -> Command {
    Command::new(command::Request::Put(req))
}

pub fn delete_command(req: DeleteRangeRequest) -> Command {
    Command::new(command::Request::DeleteRange(req))
}

pub fn compaction_command(req: CompactionRequest) -> Command {
    Command::new(command::Request::Compaction(req))
}

pub fn txn_command(req: crate::proto::etcdserverpb::TxnRequest) -> Command {
    Command::new(command::Request::Txn(req))
}

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;

fn hash_record(hasher: &mut crc32fast::Hasher, kv: &KeyValue) {
    hasher.update(&(kv.key.len() as u64).to_be_bytes());
    hasher.update(&kv.key);
    hasher.update(&(kv.value.len() as u64).to_be_bytes());
    hasher.update(&kv.value);
    for n in [kv.create_revision, kv.mod_revision, kv.version] {
        hasher.update(&n.to_be_bytes());
    }
}
