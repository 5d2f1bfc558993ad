//! Key ranges and Range requests, with etcd's meaning of `range_end`.

use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;

use super::KvError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};
use crate::proto::mvccpb::KeyValue;

/// The keys a (`key`, `range_end`) pair names: `key` alone when `range_end`
/// is empty, every key from `key` on when it is `"\0"`, else `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    One(Bytes),
    From(Bytes),
    Between(Bytes, Bytes),
}

impl KeyRange {
    pub fn new(key: &Bytes, range_end: &Bytes) -> Result<KeyRange, KvError> {
        if key.is_empty() {
            return Err(KvError::KeyNotProvided);
        }
        Ok(match range_end.as_ref() {
            [] => KeyRange::One(key.clone()),
            [0] => KeyRange::From(key.clone()),
            _ => KeyRange::Between(key.clone(), range_end.clone()),
        })
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::One(k) => key == k.as_ref(),
            KeyRange::From(k) => key >= k.as_ref(),
            KeyRange::Between(k, end) => key >= k.as_ref() && key < end.as_ref(),
        }
    }

    /// The entries of `map` in this range, in key order.
    pub fn scan<'a>(
        &self,
        map: &'a OrdMap<Bytes, KeyValue>,
    ) -> Box<dyn Iterator<Item = (&'a Bytes, &'a KeyValue)> + 'a> {
        match self {
            KeyRange::One(k) => Box::new(map.get_key_value(k.as_ref()).into_iter()),
            KeyRange::From(k) => Box::new(map.range::<_, [u8]>((Bound::Included(k.as_ref()), Bound::Unbounded))),
            KeyRange::Between(k, end) if k < end => {
                Box::new(map.range::<_, [u8]>((Bound::Included(k.as_ref()), Bound::Excluded(end.as_ref()))))
            }
            KeyRange::Between(..) => Box::new(std::iter::empty()),
        }
    }
}

/// Answers `req` from `live`, the live records of its range in key order
/// (the caller has checked the range and the revision).
pub(super) fn range<'a>(live: impl Iterator<Item = &'a KeyValue>, req: &RangeRequest) -> RangeResponse {
    let within = |n: i64, min: i64, max: i64| (min == 0 || n >= min) && (max == 0 || n <= max);
    let mut count = 0i64;
    let mut kvs: Vec<KeyValue> = Vec::new();
    for kv in live {
        count += 1;
        if req.count_only {
            continue;
        }
        if within(kv.mod_revision, req.min_mod_revision, req.max_mod_revision)
            && within(kv.create_revision, req.min_create_revision, req.max_create_revision)
        {
            kvs.push(kv.clone());
        }
    }
    sort(&mut kvs, req);
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse { header: None, kvs, more, count }
}

fn sort(kvs: &mut [KeyValue], req: &RangeRequest) {
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    if order == SortOrder::None || (order == SortOrder::Ascend && target == SortTarget::Key) {
        return; // already in key order
    }
    match target {
        SortTarget::Key => {}
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

/// The smallest key after every key that starts with `prefix` (etcd's
/// `--prefix`): the range end that makes `[prefix, end)` the prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // only 0xff bytes: every key from the prefix on
}
