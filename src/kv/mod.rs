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
//! No history is kept: a read at an older revision is answered as etcd
//! answers a compacted one.

mod range;
mod txn;

use bytes::Bytes;
use imbl::OrdMap;

use crate::proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp,
    response_op,
};
use crate::proto::mvccpb::KeyValue;
use crate::proto::raftkvpb::{Command, command};

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
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("command carries no request")]
    EmptyCommand,
}

#[derive(Clone, Debug)]
pub struct KvStore {
    map: OrdMap<Bytes, KeyValue>,
    revision: i64,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore { map: OrdMap::new(), revision: 1 }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// A store rebuilt from a snapshot's records (in any order).
    pub fn from_records(revision: i64, records: impl IntoIterator<Item = KeyValue>) -> KvStore {
        KvStore { map: records.into_iter().map(|kv| (kv.key.clone(), kv)).collect(), revision }
    }

    /// Every key's record, in key order: what a snapshot holds.
    pub fn records(&self) -> impl Iterator<Item = &KeyValue> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies a committed command. An error changes nothing.
    pub fn apply(&mut self, command: &Command) -> Result<ResponseOp, KvError> {
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
                let mut write = Write { map: self.map.clone(), revision: self.revision + 1, changed: false };
                let response = write.txn(req)?;
                if write.changed {
                    self.map = write.map;
                    self.revision = write.revision;
                }
                response_op::Response::ResponseTxn(response)
            }
            None => return Err(KvError::EmptyCommand),
        };
        Ok(ResponseOp { response: Some(response) })
    }

    /// Runs a single-change command on the live map.
    fn write_in_place<T>(&mut self, op: impl FnOnce(&mut Write) -> Result<T, KvError>) -> Result<T, KvError> {
        let map = std::mem::take(&mut self.map);
        let mut write = Write { map, revision: self.revision + 1, changed: false };
        let result = op(&mut write);
        self.map = write.map;
        if write.changed {
            self.revision = write.revision;
        }
        result
    }

    /// Serves a read against the current state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        range::range(&self.map, self.revision, req)
    }

    /// A checksum of every key, value and revision, equal on members that
    /// applied the same commands.
    pub fn hash(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.revision.to_be_bytes());
        for kv in self.map.values() {
            hasher.update(&(kv.key.len() as u64).to_be_bytes());
            hasher.update(&kv.key);
            hasher.update(&(kv.value.len() as u64).to_be_bytes());
            hasher.update(&kv.value);
            for n in [kv.create_revision, kv.mod_revision, kv.version] {
                hasher.update(&n.to_be_bytes());
            }
        }
        hasher.finalize()
    }
}

/// One command's writes, against a copy of the map, all at one revision.
struct Write {
    map: OrdMap<Bytes, KeyValue>,
    revision: i64,
    changed: bool,
}

impl Write {
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, KvError> {
        if req.key.is_empty() {
            return Err(KvError::KeyNotProvided);
        }
        if req.lease != 0 {
            return Err(KvError::LeaseNotFound);
        }
        if req.ignore_value && !req.value.is_empty() {
            return Err(KvError::ValueProvided);
        }
        let prev = self.map.get(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease: 0,
        };
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
            if req.prev_kv {
                prev_kvs.push(prev);
            }
        }
        self.changed |= !keys.is_empty();
        Ok(DeleteRangeResponse { header: None, deleted: keys.len() as i64, prev_kvs })
    }
}

/// Builds a command from a request, for proposing.
pub fn put_command(req: PutRequest) -> Command {
    Command { request: Some(command::Request::Put(req)) }
}

pub fn delete_command(req: DeleteRangeRequest) -> Command {
    Command { request: Some(command::Request::DeleteRange(req)) }
}

pub fn txn_command(req: crate::proto::etcdserverpb::TxnRequest) -> Command {
    Command { request: Some(command::Request::Txn(req)) }
}

#[cfg(test)]
mod tests;
