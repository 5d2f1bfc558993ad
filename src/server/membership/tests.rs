use super::rules::ClusterView;
use super::*;

fn rec(id: u64, name: &str, url: &str) -> MemberRecord {
    MemberRecord { id, name: name.into(), peer_urls: vec![url.into()], client_urls: vec![] }
}

fn three() -> (Membership, ConfState) {
    let table = Membership {
        members: vec![rec(1, "a", "http://h:1"), rec(2, "b", "http://h:2"), rec(3, "c", "http://h:3")],
        removed: vec![],
    };
    (table, ConfState::with_voters([1, 2, 3]))
}

fn add(id: u64, url: &str, is_learner: bool) -> MemberChange {
    MemberChange { change: Some(member_change::Change::Add(rec(id, "", url))), is_learner }
}

fn change(c: member_change::Change) -> MemberChange {
    MemberChange { change: Some(c), is_learner: false }
}

fn check(
    table: &Membership,
    conf: &ConfState,
    down: &[u64],
    matched: u64,
    c: &MemberChange,
) -> Result<(), MembershipError> {
    let connected = |id: u64| !down.contains(&id);
    let matched = |_| matched;
    ClusterView { table, conf, leader: 1, connected: &connected, matched: &matched, last_index: 100, max_learners: 1 }
        .check(c)
}

#[test]
fn an_added_member_joins_the_table_unstarted_and_a_removed_one_never_comes_back() {
    let (table, conf) = three();
    let change = add(4, "http://h:4", true);
    let next = next_conf(&conf, &change).unwrap();
    assert_eq!(next, ConfState { voters: vec![1, 2, 3], learners: vec![4] });
    let table = apply_conf_change(&table, &conf, &next, Some(&change));
    let listed = to_etcd(&table, &next);
    assert_eq!(listed.len(), 4);
    assert!(listed[3].is_learner && listed[3].name.is_empty() && listed[3].client_ur_ls.is_empty());

    let remove = super::tests::change(member_change::Change::Remove(2));
    let after = next_conf(&next, &remove).unwrap();
    let table = apply_conf_change(&table, &next, &after, Some(&remove));
    assert!(record(&table, 2).is_none() && is_removed(&table, 2));
    assert_eq!(check(&table, &after, &[], 100, &remove), Err(MembershipError::NotFound));
}

#[test]
fn published_attributes_and_new_peer_urls_change_only_their_member() {
    let (table, _) = three();
    let publish = change(member_change::Change::Publish(MemberRecord {
        id: 2,
        name: "b2".into(),
        client_urls: vec!["http://h:12".into()],
        ..Default::default()
    }));
    let table = apply_command(&table, &publish);
    let update = change(member_change::Change::UpdatePeerUrls(rec(2, "", "http://h:22")));
    let table = apply_command(&table, &update);
    assert_eq!(
        record(&table, 2).unwrap(),
        &MemberRecord {
            id: 2,
            name: "b2".into(),
            peer_urls: vec!["http://h:22".into()],
            client_urls: vec!["http://h:12".into()]
        }
    );
    assert_eq!(record(&table, 1).unwrap(), &rec(1, "a", "http://h:1"));
}

#[test]
fn etcds_safety_rules_refuse_changes_that_endanger_the_quorum() {
    let (table, conf) = three();
    // One of three down: adding a voter (quorum 3 of 4) would need it.
    assert_eq!(check(&table, &conf, &[3], 100, &add(4, "http://h:4", false)), Err(MembershipError::NotEnoughStarted));
    assert_eq!(check(&table, &conf, &[], 100, &add(4, "http://h:4", false)), Ok(()));
    // A learner never counts in a quorum, but etcd adds nothing while a
    // voter is out of touch: the failed member is removed first.
    assert_eq!(check(&table, &conf, &[3], 100, &add(4, "http://h:4", true)), Err(MembershipError::Unhealthy));
    assert_eq!(check(&table, &conf, &[], 100, &add(4, "http://h:4", true)), Ok(()));
    // Removing the down member is safe; removing a live one is not.
    assert_eq!(check(&table, &conf, &[3], 100, &change(member_change::Change::Remove(3))), Ok(()));
    assert_eq!(
        check(&table, &conf, &[3], 100, &change(member_change::Change::Remove(2))),
        Err(MembershipError::NotEnoughStarted)
    );
    assert_eq!(check(&table, &conf, &[], 100, &add(4, "http://h:2", false)), Err(MembershipError::PeerUrlExists));
    assert_eq!(check(&table, &conf, &[], 100, &add(4, "ftp://h:4", false)), Err(MembershipError::BadUrls));
    assert_eq!(
        check(&table, &conf, &[], 100, &change(member_change::Change::Remove(9))),
        Err(MembershipError::NotFound)
    );
    assert_eq!(
        check(&table, &conf, &[], 100, &change(member_change::Change::Promote(2))),
        Err(MembershipError::NotLearner)
    );
}

#[test]
fn a_learner_is_promoted_only_in_sync_and_learners_are_limited() {
    let (table, conf) = three();
    let learner = add(4, "http://h:4", true);
    let with_learner = next_conf(&conf, &learner).unwrap();
    let table = apply_conf_change(&table, &conf, &with_learner, Some(&learner));
    let promote = change(member_change::Change::Promote(4));
    assert_eq!(check(&table, &with_learner, &[], 89, &promote), Err(MembershipError::LearnerNotReady));
    assert_eq!(check(&table, &with_learner, &[], 90, &promote), Ok(()));
    assert_eq!(
        check(&table, &with_learner, &[], 100, &add(5, "http://h:5", true)),
        Err(MembershipError::TooManyLearners)
    );
}

#[test]
fn peer_urls_must_be_http_host_port() {
    assert_eq!(check_urls(&["http://10.0.0.1:2380".into()]), Ok(()));
    for bad in ["", "http://h", "10.0.0.1:2380", "http://:80", "http://h:port"] {
        assert_eq!(check_urls(&[bad.into()]), Err(MembershipError::BadUrls), "{bad}");
    }
    assert_eq!(check_urls(&[]), Err(MembershipError::BadUrls));
}

#[test]
fn a_one_member_cluster_may_add_a_voter() {
    let table = Membership { members: vec![rec(1, "a", "http://h:1")], removed: vec![] };
    assert_eq!(check(&table, &ConfState::with_voters([1]), &[], 100, &add(2, "http://h:2", false)), Ok(()));
    // Two voters, one never started: a third voter would make a quorum of
    // two of which only one is started.
    let c = add(2, "http://h:2", false);
    let two = next_conf(&ConfState::with_voters([1]), &c).unwrap();
    let table = apply_conf_change(&table, &ConfState::with_voters([1]), &two, Some(&c));
    assert_eq!(check(&table, &two, &[2], 100, &add(3, "http://h:3", false)), Err(MembershipError::NotEnoughStarted));
}
