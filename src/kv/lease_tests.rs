//! Leases in the state machine, rule by rule: grants, attachments (and
//! moving a key between leases), revocation, checkpoints, snapshots.

use bytes::Bytes;

use super::*;
use crate::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest, RequestOp, TxnRequest, request_op,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn grant(kv: &mut KvStore, id: i64, ttl: i64) -> Result<ResponseOp, KvError> {
    kv.apply(&Command::new(command::Request::LeaseGrant(LeaseGrantRequest { id, ttl })))
}

fn revoke(kv: &mut KvStore, id: i64) -> Result<ResponseOp, KvError> {
    kv.apply(&Command::new(command::Request::LeaseRevoke(LeaseRevokeRequest { id })))
}

fn put(kv: &mut KvStore, key: &str, lease: i64) -> Result<ResponseOp, KvError> {
    kv.apply(&put_command(PutRequest { key: b(key), value: b("v"), lease, ..Default::default() }))
}

fn lease_of(kv: &KvStore, key: &str) -> Option<i64> {
    let resp = kv.range(&RangeRequest { key: b(key), ..Default::default() }).unwrap();
    resp.kvs.first().map(|kv| kv.lease)
}

fn keys_of(kv: &KvStore, id: i64) -> Vec<String> {
    kv.leases().get(id).unwrap().keys.iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect()
}

#[test]
fn a_grant_adds_a_lease_once_and_a_second_grant_of_its_id_changes_nothing() {
    let mut kv = KvStore::new();
    grant(&mut kv, 7, 10).unwrap();
    assert_eq!(grant(&mut kv, 7, 99), Err(KvError::LeaseExists));
    assert_eq!(kv.leases().get(7).map(|l| l.ttl), Some(10));
    assert_eq!(kv.revision(), 1, "a grant writes no key");
}

#[test]
fn a_put_with_an_unknown_lease_is_refused_and_changes_nothing() {
    let mut kv = KvStore::new();
    assert_eq!(put(&mut kv, "k", 5), Err(KvError::LeaseNotFound));
    assert_eq!(lease_of(&kv, "k"), None);
    assert_eq!(kv.revision(), 1);
}

#[test]
fn a_put_moves_its_key_from_its_old_lease_to_its_new_one_and_a_delete_detaches_it() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 10).unwrap();
    grant(&mut kv, 2, 10).unwrap();
    put(&mut kv, "a", 1).unwrap();
    put(&mut kv, "b", 1).unwrap();
    assert_eq!(keys_of(&kv, 1), ["a", "b"]);
    put(&mut kv, "a", 2).unwrap();
    assert_eq!((keys_of(&kv, 1), keys_of(&kv, 2)), (vec!["b".to_string()], vec!["a".to_string()]));
    put(&mut kv, "a", 0).unwrap();
    assert!(keys_of(&kv, 2).is_empty(), "a put without a lease detaches the key");
    assert_eq!(lease_of(&kv, "a"), Some(0));
    kv.apply(&delete_command(DeleteRangeRequest { key: b("b"), ..Default::default() })).unwrap();
    assert!(keys_of(&kv, 1).is_empty());
}

#[test]
fn ignore_lease_keeps_the_keys_lease_and_refuses_a_lease_beside_it() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 10).unwrap();
    put(&mut kv, "a", 1).unwrap();
    let keep = PutRequest { key: b("a"), value: b("w"), ignore_lease: true, ..Default::default() };
    kv.apply(&put_command(keep)).unwrap();
    assert_eq!(lease_of(&kv, "a"), Some(1));
    assert_eq!(keys_of(&kv, 1), ["a"]);
    let both = PutRequest { key: b("a"), value: b("w"), ignore_lease: true, lease: 1, ..Default::default() };
    assert_eq!(kv.apply(&put_command(both)), Err(KvError::LeaseProvided));
    let missing = PutRequest { key: b("zz"), ignore_lease: true, ..Default::default() };
    assert_eq!(kv.apply(&put_command(missing)), Err(KvError::KeyNotFound));
}

#[test]
fn a_revocation_deletes_every_attached_key_in_one_revision_and_leaves_others() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 10).unwrap();
    put(&mut kv, "a", 1).unwrap();
    put(&mut kv, "b", 1).unwrap();
    put(&mut kv, "c", 0).unwrap();
    let before = kv.revision();
    revoke(&mut kv, 1).unwrap();
    assert_eq!(kv.revision(), before + 1, "one revision for both deletes");
    assert_eq!((lease_of(&kv, "a"), lease_of(&kv, "b"), lease_of(&kv, "c")), (None, None, Some(0)));
    let all = KeyRange::From(b("\0"));
    let deletes: Vec<_> = kv.history().changes_in(before + 1..=before + 1, &all, false).map(|c| c.kv.version).collect();
    assert_eq!(deletes, [0, 0], "watchers see both deletes at that revision");
    assert!(!kv.leases().contains(1));
    assert_eq!(revoke(&mut kv, 1), Err(KvError::LeaseNotFound));
}

#[test]
fn revoking_a_lease_without_keys_leaves_the_revision() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 10).unwrap();
    revoke(&mut kv, 1).unwrap();
    assert_eq!(kv.revision(), 1);
}

#[test]
fn a_transaction_with_a_put_under_an_unknown_lease_fails_whole() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 10).unwrap();
    let op = |key: &str, lease| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest { key: b(key), lease, ..Default::default() })),
    };
    let req = TxnRequest { compare: vec![], success: vec![op("a", 1), op("b", 9)], failure: vec![] };
    assert_eq!(kv.apply(&txn_command(req)), Err(KvError::LeaseNotFound));
    assert_eq!(lease_of(&kv, "a"), None);
    assert!(keys_of(&kv, 1).is_empty(), "the failed transaction attached nothing");
    let req = TxnRequest { compare: vec![], success: vec![op("a", 1)], failure: vec![] };
    kv.apply(&txn_command(req)).unwrap();
    assert_eq!(keys_of(&kv, 1), ["a"]);
}

#[test]
fn checkpoints_record_remaining_ttls_of_live_leases_only() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 60).unwrap();
    let checkpoints = vec![LeaseCheckpoint { id: 1, remaining_ttl: 42 }, LeaseCheckpoint { id: 2, remaining_ttl: 5 }];
    let cp = Command::new(command::Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }));
    kv.apply(&cp).unwrap();
    assert_eq!(kv.leases().get(1).map(|l| l.remaining), Some(42));
    assert!(!kv.leases().contains(2), "a checkpoint does not create a lease");
}

#[test]
fn a_snapshot_round_trips_leases_their_checkpoints_and_their_keys() {
    let mut kv = KvStore::new();
    grant(&mut kv, 1, 60).unwrap();
    grant(&mut kv, 2, 30).unwrap();
    put(&mut kv, "a", 1).unwrap();
    put(&mut kv, "b", 2).unwrap();
    put(&mut kv, "b", 1).unwrap();
    put(&mut kv, "c", 0).unwrap();
    kv.leases.checkpoint(1, 17);
    let header = kv.snapshot_header(crate::proto::SnapshotMeta::default());
    let restored = KvStore::from_snapshot(&header, kv.records().cloned());
    assert_eq!(restored.leases(), kv.leases());
    assert_eq!(keys_of(&restored, 1), ["a", "b"]);
    assert!(keys_of(&restored, 2).is_empty(), "b moved to lease 1 before the snapshot");
    assert_eq!(restored.leases().get(1).map(|l| (l.ttl, l.remaining)), Some((60, 17)));
}

#[test]
fn no_lease_is_granted_while_nospace_is_raised() {
    use crate::proto::etcdserverpb::{AlarmMember, AlarmType};
    let mut kv = KvStore::new();
    kv.set_alarms(vec![AlarmMember { member_id: 1, alarm: AlarmType::Nospace as i32 }]);
    assert_eq!(grant(&mut kv, 1, 10), Err(KvError::NoSpace));
    grant(&mut KvStore::new(), 1, 10).unwrap();
}
