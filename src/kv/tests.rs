//! etcd semantics of the state machine, rule by rule.

use bytes::Bytes;

use super::*;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{CompactionRequest, Compare, RequestOp, TxnRequest, TxnResponse, request_op};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(kv: &mut KvStore, key: &str, value: &str) -> PutResponse {
    let req = PutRequest { key: b(key), value: b(value), prev_kv: true, ..Default::default() };
    match kv.apply(&put_command(req)).unwrap().response {
        Some(response_op::Response::ResponsePut(r)) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn del(kv: &mut KvStore, key: &str, end: &str) -> DeleteRangeResponse {
    let req = DeleteRangeRequest { key: b(key), range_end: b(end), prev_kv: true };
    match kv.apply(&delete_command(req)).unwrap().response {
        Some(response_op::Response::ResponseDeleteRange(r)) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn get(kv: &KvStore, key: &str, end: &str) -> RangeResponse {
    kv.range(&RangeRequest { key: b(key), range_end: b(end), ..Default::default() }).unwrap()
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| String::from_utf8(kv.key.to_vec()).unwrap()).collect()
}

fn txn(kv: &mut KvStore, req: TxnRequest) -> Result<TxnResponse, KvError> {
    kv.apply(&txn_command(req)).map(|r| match r.response {
        Some(response_op::Response::ResponseTxn(t)) => t,
        other => panic!("unexpected {other:?}"),
    })
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })),
    }
}

fn op_get(key: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: b(key), ..Default::default() })) }
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget, operand: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        target_union: Some(operand),
        range_end: Bytes::new(),
    }
}

#[test]
fn revisions_follow_etcd() {
    let mut kv = KvStore::new();
    assert_eq!(kv.revision(), 1, "a new store is at revision 1");
    put(&mut kv, "a", "1");
    let a = &get(&kv, "a", "").kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 2, 1));
    let r = put(&mut kv, "a", "2");
    assert_eq!(r.prev_kv.unwrap().value, b("1"));
    let a = &get(&kv, "a", "").kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version, kv.revision()), (2, 3, 2, 3));

    // Deleting nothing changes no revision; deleting something does.
    assert_eq!(del(&mut kv, "zzz", "").deleted, 0);
    assert_eq!(kv.revision(), 3);
    let d = del(&mut kv, "a", "");
    assert_eq!((d.deleted, d.prev_kvs[0].value.clone(), kv.revision()), (1, b("2"), 4));
    // Re-created: a new life with a new create revision and version 1.
    put(&mut kv, "a", "3");
    let a = &get(&kv, "a", "").kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
}

#[test]
fn range_forms_limit_count_and_keys_only() {
    let mut kv = KvStore::new();
    for k in ["a", "ab", "abc", "b", "c"] {
        put(&mut kv, k, &format!("v-{k}"));
    }
    assert_eq!(keys(&get(&kv, "ab", "")), ["ab"]);
    assert_eq!(keys(&get(&kv, "a", "b")), ["a", "ab", "abc"], "prefix a: [a, b)");
    assert_eq!(keys(&get(&kv, "b", "\0")), ["b", "c"], "\\0: everything from the key on");
    assert_eq!(keys(&get(&kv, "\0", "\0")), ["a", "ab", "abc", "b", "c"]);
    assert!(get(&kv, "c", "a").kvs.is_empty(), "an inverted range is empty");

    let limited = kv.range(&RangeRequest { key: b("a"), range_end: b("\0"), limit: 2, ..Default::default() }).unwrap();
    assert_eq!((keys(&limited), limited.more, limited.count), (vec!["a".into(), "ab".into()], true, 5));
    let counted =
        kv.range(&RangeRequest { key: b("a"), range_end: b("b"), count_only: true, ..Default::default() }).unwrap();
    assert_eq!((counted.kvs.len(), counted.count, counted.more), (0, 3, false));
    let keys_only = kv.range(&RangeRequest { key: b("a"), keys_only: true, ..Default::default() }).unwrap();
    assert_eq!((keys_only.kvs[0].key.clone(), keys_only.kvs[0].value.is_empty()), (b("a"), true));
}

#[test]
fn range_sorts_and_filters() {
    let mut kv = KvStore::new();
    put(&mut kv, "b", "1"); // rev 2
    put(&mut kv, "a", "3"); // rev 3
    put(&mut kv, "c", "2"); // rev 4
    put(&mut kv, "b", "9"); // rev 5
    let sorted = |order: SortOrder, target: SortTarget| {
        let req = RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            sort_order: order as i32,
            sort_target: target as i32,
            ..Default::default()
        };
        keys(&kv.range(&req).unwrap())
    };
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Key), ["c", "b", "a"]);
    assert_eq!(sorted(SortOrder::Ascend, SortTarget::Mod), ["a", "c", "b"]);
    assert_eq!(sorted(SortOrder::None, SortTarget::Create), ["b", "a", "c"], "NONE with a target sorts ascending");
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Value), ["b", "a", "c"]);
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Version)[0], "b", "b was written twice");
    let req = RangeRequest { key: b("a"), range_end: b("\0"), min_mod_revision: 4, ..Default::default() };
    assert_eq!(keys(&kv.range(&req).unwrap()), ["b", "c"]);
}

fn at(kv: &KvStore, key: &str, end: &str, revision: i64) -> Result<RangeResponse, KvError> {
    kv.range(&RangeRequest { key: b(key), range_end: b(end), revision, ..Default::default() })
}

fn compact(kv: &mut KvStore, revision: i64) -> Result<ResponseOp, KvError> {
    kv.apply(&compaction_command(CompactionRequest { revision, physical: false }))
}

#[test]
fn range_at_a_past_revision_sees_the_state_then() {
    let mut kv = KvStore::new();
    put(&mut kv, "a", "1"); // 2
    put(&mut kv, "a", "2"); // 3
    put(&mut kv, "b", "1"); // 4
    del(&mut kv, "a", ""); // 5
    put(&mut kv, "a", "3"); // 6: a new life of "a"
    assert_eq!(at(&kv, "a", "", 99), Err(KvError::FutureRevision));
    assert_eq!(at(&kv, "a", "", 1).unwrap().kvs, vec![], "revision 1 is the empty store");
    assert_eq!(at(&kv, "a", "", 2).unwrap().kvs[0].value, b("1"));
    let a3 = at(&kv, "a", "", 3).unwrap().kvs[0].clone();
    assert_eq!((a3.value, a3.create_revision, a3.mod_revision, a3.version), (b("2"), 2, 3, 2));
    let five = at(&kv, "a", "\0", 5).unwrap();
    assert_eq!((keys(&five), five.count), (vec!["b".to_string()], 1), "deleted at 5");
    let a6 = at(&kv, "a", "", 6).unwrap().kvs[0].clone();
    assert_eq!((a6.create_revision, a6.version), (6, 1), "re-created: new create revision, version 1");
    assert_eq!(at(&kv, "a", "", 0).unwrap().kvs[0].value, b("3"), "0 is the current revision");
    assert_eq!(kv.range(&RangeRequest::default()), Err(KvError::KeyNotProvided));
}

#[test]
fn compaction_refuses_older_reads_and_keeps_newer_ones_exact() {
    let mut kv = KvStore::new();
    put(&mut kv, "a", "1"); // 2
    put(&mut kv, "b", "1"); // 3
    del(&mut kv, "b", ""); // 4
    put(&mut kv, "a", "2"); // 5
    put(&mut kv, "c", "1"); // 6
    let before: Vec<_> = (3..=6).map(|r| at(&kv, "a", "\0", r).unwrap()).collect();
    assert_eq!(compact(&mut kv, 99), Err(KvError::FutureRevision));
    compact(&mut kv, 3).unwrap();
    assert_eq!(compact(&mut kv, 3), Err(KvError::Compacted), "already compacted there");
    let mut fresh = KvStore::new();
    assert!(compact(&mut fresh, 1).is_ok(), "as in etcd, a new store may compact at 1");
    assert_eq!(compact(&mut kv, 2), Err(KvError::Compacted));
    assert_eq!(at(&kv, "a", "", 2), Err(KvError::Compacted));
    let after: Vec<_> = (3..=6).map(|r| at(&kv, "a", "\0", r).unwrap()).collect();
    assert_eq!(before, after, "reads from the compaction point on are unchanged");
    compact(&mut kv, 5).unwrap();
    assert_eq!(kv.compact_revision(), 5);
    assert_eq!(keys(&at(&kv, "a", "\0", 5).unwrap()), ["a"]);
    // Revisions from 5 on are kept whole (a watch may replay them); below,
    // only what a read at 5 still sees: a@2 until a@5 is compacted away.
    let left: Vec<_> = kv.records().map(|r| (r.key.clone(), r.mod_revision)).collect();
    assert_eq!(left, vec![(b("a"), 2), (b("a"), 5), (b("c"), 6)]);
    compact(&mut kv, 6).unwrap();
    let left: Vec<_> = kv.records().map(|r| (r.key.clone(), r.mod_revision)).collect();
    assert_eq!(left, vec![(b("a"), 5), (b("c"), 6)]);
    assert_eq!(kv.revision(), 6, "a compaction makes no revision");
}

#[test]
fn history_matches_a_model_of_every_revision() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    let names = ["a", "ab", "b", "ba", "c", "d"];
    for seed in 0..20u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut kv = KvStore::new();
        // The whole state at every revision.
        let mut model: BTreeMap<i64, BTreeMap<Bytes, KeyValue>> = BTreeMap::from([(1, BTreeMap::new())]);
        for step in 0..200 {
            let k = names[rng.random_range(0..names.len())];
            match rng.random_range(0..10) {
                0..=5 => {
                    put(&mut kv, k, &format!("{seed}-{step}"));
                }
                6 | 7 => {
                    let end = if rng.random_bool(0.5) { "" } else { names[rng.random_range(0..names.len())] };
                    del(&mut kv, k, end);
                }
                8 => {
                    let k2 = names[rng.random_range(0..names.len())];
                    let ops = if k == k2 { vec![op_put(k, "t")] } else { vec![op_put(k, "t1"), op_put(k2, "t2")] };
                    txn(&mut kv, TxnRequest { success: ops, ..Default::default() }).unwrap();
                }
                _ => {
                    let oldest = kv.compact_revision();
                    if kv.revision() > oldest {
                        let to = rng.random_range(oldest + 1..=kv.revision());
                        compact(&mut kv, to).unwrap();
                    }
                }
            }
            let now: BTreeMap<Bytes, KeyValue> =
                get(&kv, "\0", "\0").kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            model.insert(kv.revision(), now);
        }
        for (&revision, _) in model.range(..kv.compact_revision()) {
            assert_eq!(at(&kv, "a", "\0", revision), Err(KvError::Compacted), "seed {seed} rev {revision}");
        }
        // Revisions without an entry did not exist as states of their own:
        // each answers as the newest state at or before it.
        for revision in kv.compact_revision()..=kv.revision() {
            let (_, want) = model.range(..=revision).next_back().unwrap();
            let (start, end) = (names[rng.random_range(0..names.len())], names[rng.random_range(0..names.len())]);
            let got = at(&kv, start, end, revision).unwrap();
            let want: Vec<KeyValue> = want
                .values()
                .filter(|kv| kv.key.as_ref() >= start.as_bytes() && kv.key.as_ref() < end.as_bytes())
                .cloned()
                .collect();
            assert_eq!((got.kvs, got.count), (want.clone(), want.len() as i64), "seed {seed} rev {revision}");
            let all = at(&kv, "\0", "\0", revision).unwrap();
            let want_all: Vec<KeyValue> = model.range(..=revision).next_back().unwrap().1.values().cloned().collect();
            assert_eq!(all.kvs, want_all, "seed {seed} rev {revision}");
        }
        // A snapshot of the store rebuilds the same history.
        let header = kv.snapshot_header(crate::proto::SnapshotMeta::default());
        let restored = KvStore::from_snapshot(&header, kv.records().cloned());
        // From the records in any order, too (given twice, the last wins).
        let mut shuffled: Vec<KeyValue> = kv.records().cloned().collect();
        shuffled.reverse();
        shuffled.extend(kv.records().take(3).cloned());
        let reordered = KvStore::from_snapshot(&header, shuffled);
        assert_eq!(reordered.data_bytes(), kv.data_bytes(), "seed {seed}");
        assert_eq!(reordered.hash_kv(0), kv.hash_kv(0), "seed {seed}");
        let everything = super::KeyRange::From(Bytes::new());
        let changes = |s: &KvStore| -> Vec<KeyValue> {
            s.history()
                .changes_in(s.compact_revision()..=s.revision(), &everything, true)
                .map(|c| c.kv.clone())
                .collect()
        };
        assert_eq!(changes(&reordered), changes(&restored), "seed {seed}");
        for revision in kv.compact_revision()..=kv.revision() {
            assert_eq!(at(&restored, "\0", "\0", revision), at(&kv, "\0", "\0", revision), "seed {seed}");
            assert_eq!(at(&reordered, "\0", "\0", revision), at(&kv, "\0", "\0", revision), "seed {seed}");
        }
        if kv.compact_revision() > 1 {
            assert_eq!(at(&restored, "a", "", kv.compact_revision() - 1), Err(KvError::Compacted));
        }
    }
}

#[test]
fn put_options_and_bad_puts_change_nothing() {
    let mut kv = KvStore::new();
    let apply = |kv: &mut KvStore, req: PutRequest| kv.apply(&put_command(req));
    assert_eq!(apply(&mut kv, PutRequest { key: Bytes::new(), ..Default::default() }), Err(KvError::KeyNotProvided));
    let ignore = PutRequest { key: b("a"), ignore_value: true, ..Default::default() };
    assert_eq!(apply(&mut kv, ignore.clone()), Err(KvError::KeyNotFound));
    let leased = PutRequest { key: b("a"), lease: 7, ..Default::default() };
    assert_eq!(apply(&mut kv, leased), Err(KvError::LeaseNotFound));
    assert_eq!((kv.revision(), kv.len()), (1, 0), "refused puts changed the store");

    put(&mut kv, "a", "kept");
    let with_value = PutRequest { key: b("a"), value: b("x"), ignore_value: true, ..Default::default() };
    assert_eq!(apply(&mut kv, with_value), Err(KvError::ValueProvided));
    apply(&mut kv, ignore).unwrap();
    let a = &get(&kv, "a", "").kvs[0];
    assert_eq!((a.value.clone(), a.version), (b("kept"), 2), "ignore_value keeps the value, bumps the version");
}

#[test]
fn txn_compare_and_swap() {
    let mut kv = KvStore::new();
    put(&mut kv, "k", "old");
    let cas = |expected: &str, new: &str| TxnRequest {
        compare: vec![cmp("k", CompareResult::Equal, CompareTarget::Value, TargetUnion::Value(b(expected)))],
        success: vec![op_put("k", new)],
        failure: vec![op_get("k")],
    };
    let won = txn(&mut kv, cas("old", "new")).unwrap();
    assert!(won.succeeded);
    assert_eq!(get(&kv, "k", "").kvs[0].value, b("new"));
    let lost = txn(&mut kv, cas("old", "newer")).unwrap();
    assert!(!lost.succeeded);
    match &lost.responses[0].response {
        Some(response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b("new")),
        other => panic!("failure branch answered {other:?}"),
    }
    assert_eq!(kv.revision(), 3, "a transaction that wrote nothing keeps the revision");
}

#[test]
fn txn_compares_on_revisions_and_missing_keys() {
    let mut kv = KvStore::new();
    put(&mut kv, "k", "v"); // rev 2
    let check = |kv: &mut KvStore, c: Compare| {
        txn(kv, TxnRequest { compare: vec![c], ..Default::default() }).unwrap().succeeded
    };
    assert!(check(&mut kv, cmp("k", CompareResult::Equal, CompareTarget::Mod, TargetUnion::ModRevision(2))));
    assert!(check(&mut kv, cmp("k", CompareResult::Greater, CompareTarget::Create, TargetUnion::CreateRevision(1))));
    assert!(check(&mut kv, cmp("k", CompareResult::Less, CompareTarget::Version, TargetUnion::Version(2))));
    assert!(check(&mut kv, cmp("k", CompareResult::NotEqual, CompareTarget::Value, TargetUnion::Value(b("w")))));
    // The create-if-absent idiom: a missing key has version 0 ...
    assert!(check(&mut kv, cmp("absent", CompareResult::Equal, CompareTarget::Version, TargetUnion::Version(0))));
    // ... and any value comparison on it fails, even "not equal".
    assert!(!check(&mut kv, cmp("absent", CompareResult::NotEqual, CompareTarget::Value, TargetUnion::Value(b("x")))));
}

#[test]
fn txn_writes_share_one_revision_and_reads_see_earlier_writes() {
    let mut kv = KvStore::new();
    let resp = txn(
        &mut kv,
        TxnRequest { success: vec![op_put("a", "1"), op_put("b", "2"), op_get("a")], ..Default::default() },
    )
    .unwrap();
    assert_eq!(kv.revision(), 2);
    assert_eq!(get(&kv, "a", "").kvs[0].mod_revision, 2);
    assert_eq!(get(&kv, "b", "").kvs[0].mod_revision, 2);
    match &resp.responses[2].response {
        Some(response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b("1")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refused_txns_change_nothing() {
    let mut kv = KvStore::new();
    put(&mut kv, "a", "1");
    let dup = TxnRequest { success: vec![op_put("x", "1"), op_put("x", "2")], ..Default::default() };
    assert_eq!(txn(&mut kv, dup), Err(KvError::DuplicateKey));
    let too_many = TxnRequest {
        success: (0..=MAX_TXN_OPS).map(|i| op_put(&format!("k{i}"), "v")).collect(),
        ..Default::default()
    };
    assert_eq!(txn(&mut kv, too_many), Err(KvError::TooManyOps));
    // A failure after a successful op leaves no trace of it.
    let bad_second = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b("missing"),
            ignore_value: true,
            ..Default::default()
        })),
    };
    let half = TxnRequest { success: vec![op_put("y", "1"), bad_second], ..Default::default() };
    assert_eq!(txn(&mut kv, half), Err(KvError::KeyNotFound));
    assert_eq!((kv.revision(), kv.len()), (2, 1));
    assert!(get(&kv, "y", "").kvs.is_empty());
    // A nested transaction writing one key in both branches is fine.
    let inner = TxnRequest { success: vec![op_put("z", "s")], failure: vec![op_put("z", "f")], ..Default::default() };
    let nested = RequestOp { request: Some(request_op::Request::RequestTxn(inner)) };
    txn(&mut kv, TxnRequest { success: vec![nested], ..Default::default() }).unwrap();
    assert_eq!(get(&kv, "z", "").kvs[0].value, b("s"));
}

#[test]
fn hash_is_equal_for_equal_histories() {
    let (mut a, mut b2) = (KvStore::new(), KvStore::new());
    for kv in [&mut a, &mut b2] {
        put(kv, "x", "1");
        put(kv, "y", "2");
    }
    assert_eq!(a.hash_kv(0), b2.hash_kv(0));
    let at_three = a.hash_kv(3).unwrap();
    put(&mut a, "x", "1");
    assert_ne!(a.hash_kv(0), b2.hash_kv(0), "same values, different revisions");
    // A revision's hash stays what it was: later writes are not in it.
    assert_eq!(a.hash_kv(3).unwrap(), at_three);
    assert_eq!(a.hash_kv(9), Err(KvError::FutureRevision));
}

#[test]
fn nospace_refuses_what_could_add_data_and_lets_deletes_reads_and_compaction_through() {
    let mut kv = KvStore::new();
    put(&mut kv, "a", "1");
    put(&mut kv, "b", "2");
    kv.set_alarms(vec![AlarmMember { member_id: 7, alarm: AlarmType::Nospace as i32 }]);
    let before = (kv.revision(), kv.data_bytes());
    let refused = kv.apply(&put_command(PutRequest { key: b("c"), value: b("3"), ..Default::default() }));
    assert_eq!(refused, Err(KvError::NoSpace));
    // A transaction with a put in either branch could add data; one that
    // only reads and deletes cannot.
    let with_put = TxnRequest { failure: vec![op_put("c", "3")], ..Default::default() };
    assert_eq!(txn(&mut kv, with_put), Err(KvError::NoSpace));
    assert_eq!((kv.revision(), kv.data_bytes()), before, "a refused write changed something");
    let reads_and_deletes = TxnRequest {
        success: vec![
            op_get("a"),
            RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b("a"),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert!(txn(&mut kv, reads_and_deletes).unwrap().succeeded);
    assert_eq!(del(&mut kv, "b", "").deleted, 1);
    assert_eq!(keys(&get(&kv, "a", "z")), Vec::<String>::new());
    let revision = kv.revision();
    compact(&mut kv, revision).unwrap();
}

#[test]
fn the_data_size_counts_every_record_held_and_survives_a_snapshot_with_the_alarms() {
    let mut kv = KvStore::new();
    assert_eq!(kv.data_bytes(), 0);
    put(&mut kv, "a", "1");
    put(&mut kv, "a", "22");
    del(&mut kv, "a", "");
    put(&mut kv, "b", "333");
    let encoded: u64 = kv.records().map(|r| prost::Message::encoded_len(r) as u64).sum();
    assert_eq!(kv.data_bytes(), encoded);
    kv.set_alarms(vec![AlarmMember { member_id: 7, alarm: AlarmType::Nospace as i32 }]);
    let header = kv.snapshot_header(SnapshotMeta::default());
    let restored = KvStore::from_snapshot(&header, kv.records().cloned());
    assert_eq!((restored.data_bytes(), restored.alarms()), (kv.data_bytes(), kv.alarms()));
    // Compaction frees what it drops: a's superseded records and tombstone.
    let revision = kv.revision();
    compact(&mut kv, revision).unwrap();
    let encoded: u64 = kv.records().map(|r| prost::Message::encoded_len(r) as u64).sum();
    assert_eq!(kv.data_bytes(), encoded);
    assert_eq!(kv.records().count(), 1);
}
