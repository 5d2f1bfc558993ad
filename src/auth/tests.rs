use super::requests::check_command;
use super::*;
use crate::kv::{KvStore, put_command, txn_command};
use crate::proto::authpb::permission::Type;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};

fn change(c: auth_change::Change) -> AuthChange {
    AuthChange { change: Some(c) }
}

fn add_user(auth: &mut AuthStore, name: &str) -> Result<(), AuthError> {
    let user = User { name: name.as_bytes().to_vec().into(), password: "$2b$04$hash".into(), ..Default::default() };
    auth.apply(&change(auth_change::Change::UserAdd(user)), None)
}

fn add_role(auth: &mut AuthStore, name: &str) -> Result<(), AuthError> {
    auth.apply(&change(auth_change::Change::RoleAdd(AuthRoleAddRequest { name: name.into() })), None)
}

fn grant_role(auth: &mut AuthStore, user: &str, role: &str) -> Result<(), AuthError> {
    let req = AuthUserGrantRoleRequest { user: user.into(), role: role.into() };
    auth.apply(&change(auth_change::Change::UserGrantRole(req)), None)
}

fn grant_perm(auth: &mut AuthStore, role: &str, t: Type, key: &str, range_end: &str) -> Result<(), AuthError> {
    let perm = Permission {
        perm_type: t as i32,
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
    };
    let req = AuthRoleGrantPermissionRequest { name: role.into(), perm: Some(perm) };
    auth.apply(&change(auth_change::Change::RoleGrantPermission(req)), None)
}

fn enable(auth: &mut AuthStore) -> Result<(), AuthError> {
    auth.apply(&change(auth_change::Change::Enable(AuthEnableRequest {})), None)
}

/// root (with the root role) and `app`, who may read and write `app/`
/// and only read `shared`.
fn cluster_with_app_user() -> AuthStore {
    let mut auth = AuthStore::default();
    add_user(&mut auth, ROOT).unwrap();
    grant_role(&mut auth, ROOT, ROOT).unwrap();
    add_user(&mut auth, "app").unwrap();
    add_role(&mut auth, "app-rw").unwrap();
    grant_perm(&mut auth, "app-rw", Type::Readwrite, "app/", "app0").unwrap();
    grant_perm(&mut auth, "app-rw", Type::Read, "shared", "").unwrap();
    grant_role(&mut auth, "app", "app-rw").unwrap();
    enable(&mut auth).unwrap();
    auth
}

fn put(key: &str) -> PutRequest {
    PutRequest { key: key.as_bytes().to_vec().into(), value: "v".into(), ..Default::default() }
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: end.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

#[test]
fn enabling_needs_a_root_user_with_the_root_role_and_a_refusal_changes_nothing() {
    let mut auth = AuthStore::default();
    assert_eq!(enable(&mut auth), Err(AuthError::RootUserMissing));
    add_user(&mut auth, ROOT).unwrap();
    let before = auth.clone();
    assert_eq!(enable(&mut auth), Err(AuthError::RootRoleMissing));
    assert_eq!(auth, before);
    grant_role(&mut auth, ROOT, ROOT).unwrap();
    enable(&mut auth).unwrap();
    assert!(auth.enabled());
}

#[test]
fn every_change_raises_the_revision_and_a_change_of_nothing_does_not() {
    let mut auth = AuthStore::default();
    let start = auth.revision();
    add_user(&mut auth, "a").unwrap();
    add_role(&mut auth, "r").unwrap();
    grant_role(&mut auth, "a", "r").unwrap();
    assert_eq!(auth.revision(), start + 3);
    grant_role(&mut auth, "a", "r").unwrap();
    auth.apply(&change(auth_change::Change::Disable(AuthDisableRequest {})), None).unwrap();
    assert_eq!(auth.revision(), start + 3);
}

#[test]
fn names_must_be_new_and_not_empty() {
    let mut auth = AuthStore::default();
    assert_eq!(add_user(&mut auth, ""), Err(AuthError::UserEmpty));
    add_user(&mut auth, "a").unwrap();
    assert_eq!(add_user(&mut auth, "a"), Err(AuthError::UserAlreadyExists));
    assert_eq!(add_role(&mut auth, ""), Err(AuthError::RoleEmpty));
    add_role(&mut auth, "r").unwrap();
    assert_eq!(add_role(&mut auth, "r"), Err(AuthError::RoleAlreadyExists));
    assert_eq!(grant_role(&mut auth, "a", "nope"), Err(AuthError::RoleNotFound));
    assert_eq!(grant_role(&mut auth, "nobody", "r"), Err(AuthError::UserNotFound));
    let revoke = AuthUserRevokeRoleRequest { name: "a".into(), role: "r".into() };
    assert_eq!(auth.apply(&change(auth_change::Change::UserRevokeRole(revoke)), None), Err(AuthError::RoleNotGranted));
}

#[test]
fn while_enabled_root_can_neither_be_deleted_nor_lose_its_role_nor_the_role_go() {
    let mut auth = cluster_with_app_user();
    let before = auth.clone();
    let delete = AuthUserDeleteRequest { name: ROOT.into() };
    assert_eq!(auth.apply(&change(auth_change::Change::UserDelete(delete)), None), Err(AuthError::InvalidManagement));
    let revoke = AuthUserRevokeRoleRequest { name: ROOT.into(), role: ROOT.into() };
    assert_eq!(
        auth.apply(&change(auth_change::Change::UserRevokeRole(revoke)), None),
        Err(AuthError::InvalidManagement)
    );
    let role = AuthRoleDeleteRequest { role: ROOT.into() };
    assert_eq!(auth.apply(&change(auth_change::Change::RoleDelete(role)), None), Err(AuthError::InvalidManagement));
    assert_eq!(auth, before);
}

#[test]
fn only_root_changes_the_store_while_enabled() {
    let mut auth = cluster_with_app_user();
    let as_app = AuthStamp { user: "app".into(), revision: auth.revision() };
    let add = change(auth_change::Change::RoleAdd(AuthRoleAddRequest { name: "x".into() }));
    assert_eq!(auth.apply(&add, Some(&as_app)), Err(AuthError::PermissionDenied));
    let anonymous = AuthStamp { user: String::new(), revision: auth.revision() };
    assert_eq!(auth.apply(&add, Some(&anonymous)), Err(AuthError::UserEmpty));
    let as_root = AuthStamp { user: ROOT.into(), revision: auth.revision() };
    auth.apply(&add, Some(&as_root)).unwrap();
}

#[test]
fn a_limited_user_reads_and_writes_its_prefix_only_and_root_bypasses() {
    let auth = cluster_with_app_user();
    let app = Some("app");
    assert_eq!(auth.check(app, Access::Write, b"app/x", b""), Ok(()));
    assert_eq!(auth.check(app, Access::Read, b"app/", b"app0"), Ok(()));
    assert_eq!(auth.check(app, Access::Write, b"other", b""), Err(AuthError::PermissionDenied));
    assert_eq!(auth.check(app, Access::Read, b"other", b""), Err(AuthError::PermissionDenied));
    assert_eq!(auth.check(app, Access::Read, b"shared", b""), Ok(()));
    assert_eq!(auth.check(app, Access::Write, b"shared", b""), Err(AuthError::PermissionDenied));
    assert_eq!(auth.check(Some(ROOT), Access::Write, &[0], &[0]), Ok(()));
    assert_eq!(auth.check(None, Access::Read, b"app/x", b""), Err(AuthError::UserEmpty));
    assert_eq!(auth.check(Some("ghost"), Access::Read, b"app/x", b""), Err(AuthError::PermissionDenied));
}

#[test]
fn a_txn_needs_every_key_it_compares_reads_or_writes_in_either_branch() {
    let auth = cluster_with_app_user();
    let kv = KvStore::new();
    let app = Some("app");
    let op = |r: request_op::Request| RequestOp { request: Some(r) };
    let allowed = TxnRequest {
        compare: vec![Compare { key: "shared".into(), ..Default::default() }],
        success: vec![op(request_op::Request::RequestPut(put("app/a")))],
        failure: vec![op(request_op::Request::RequestRange(range("app/", "app0")))],
    };
    assert_eq!(check_command(&auth, app, &txn_command(allowed.clone()), kv.leases()), Ok(()));
    let mut writes_outside = allowed.clone();
    writes_outside.failure.push(op(request_op::Request::RequestPut(put("other"))));
    let denied = check_command(&auth, app, &txn_command(writes_outside), kv.leases());
    assert_eq!(denied, Err(AuthError::PermissionDenied));
    let mut compares_outside = allowed.clone();
    compares_outside.compare.push(Compare { key: "secret".into(), ..Default::default() });
    let denied = check_command(&auth, app, &txn_command(compares_outside), kv.leases());
    assert_eq!(denied, Err(AuthError::PermissionDenied));
    let nested = TxnRequest { success: vec![op(request_op::Request::RequestTxn(allowed))], ..Default::default() };
    assert_eq!(check_command(&auth, app, &txn_command(nested), kv.leases()), Ok(()));
    assert_eq!(check_command(&auth, app, &put_command(put("shared")), kv.leases()), Err(AuthError::PermissionDenied));
}

#[test]
fn a_put_that_returns_the_previous_value_needs_read_too() {
    let mut auth = cluster_with_app_user();
    grant_perm(&mut auth, "app-rw", Type::Write, "drop", "").unwrap();
    let kv = KvStore::new();
    assert_eq!(check_command(&auth, Some("app"), &put_command(put("drop")), kv.leases()), Ok(()));
    let with_prev = PutRequest { prev_kv: true, ..put("drop") };
    let denied = check_command(&auth, Some("app"), &put_command(with_prev), kv.leases());
    assert_eq!(denied, Err(AuthError::PermissionDenied));
}

#[test]
fn granting_again_changes_the_type_and_revoking_needs_the_same_keys() {
    let mut auth = cluster_with_app_user();
    grant_perm(&mut auth, "app-rw", Type::Readwrite, "shared", "").unwrap();
    assert_eq!(auth.check(Some("app"), Access::Write, b"shared", b""), Ok(()));
    let wrong =
        AuthRoleRevokePermissionRequest { role: "app-rw".into(), key: "app/".into(), range_end: Default::default() };
    let revoke = change(auth_change::Change::RoleRevokePermission(wrong));
    assert_eq!(auth.apply(&revoke, None), Err(AuthError::PermissionNotGranted));
    let right = AuthRoleRevokePermissionRequest { role: "app-rw".into(), key: "app/".into(), range_end: "app0".into() };
    auth.apply(&change(auth_change::Change::RoleRevokePermission(right)), None).unwrap();
    assert_eq!(auth.check(Some("app"), Access::Write, b"app/x", b""), Err(AuthError::PermissionDenied));
}

#[test]
fn deleting_a_role_takes_it_from_every_user() {
    let mut auth = cluster_with_app_user();
    let delete = AuthRoleDeleteRequest { role: "app-rw".into() };
    auth.apply(&change(auth_change::Change::RoleDelete(delete)), None).unwrap();
    assert!(auth.user("app").unwrap().roles.is_empty());
    assert_eq!(auth.check(Some("app"), Access::Read, b"app/x", b""), Err(AuthError::PermissionDenied));
}

#[test]
fn the_store_survives_its_record() {
    let auth = cluster_with_app_user();
    assert_eq!(AuthStore::from_record(Some(&auth.record())), auth);
    assert_eq!(AuthStore::from_record(None), AuthStore::default());
}

#[test]
fn the_store_refuses_a_write_checked_at_an_older_auth_revision_and_changes_nothing() {
    use crate::proto::raftkvpb::{Command, command};
    let mut kv = KvStore::new();
    let auth = |c: auth_change::Change, user: &str, revision: u64| Command {
        request: Some(command::Request::Auth(change(c))),
        stamp: Some(AuthStamp { user: user.into(), revision }),
    };
    let root = User { name: "root".into(), password: "$2b$04$hash".into(), ..Default::default() };
    kv.apply(&auth(auth_change::Change::UserAdd(root), "", 1)).unwrap();
    let grant = AuthUserGrantRoleRequest { user: ROOT.into(), role: ROOT.into() };
    kv.apply(&auth(auth_change::Change::UserGrantRole(grant), "", 1)).unwrap();
    kv.apply(&auth(auth_change::Change::Enable(AuthEnableRequest {}), "", 1)).unwrap();
    let checked_at = kv.auth().revision();
    let stamped =
        |revision| Command { stamp: Some(AuthStamp { user: ROOT.into(), revision }), ..put_command(put("k")) };
    assert_eq!(kv.apply(&stamped(checked_at)).map(|_| ()), Ok(()));
    let role = AuthRoleAddRequest { name: "r".into() };
    kv.apply(&auth(auth_change::Change::RoleAdd(role), ROOT, checked_at)).unwrap();
    let revision = kv.revision();
    let refused = kv.apply(&stamped(checked_at));
    assert_eq!(refused.map(|_| ()), Err(crate::kv::KvError::Auth(AuthError::OldRevision)));
    assert_eq!(kv.revision(), revision);
    // The cluster's own commands carry no stamp and are not held back.
    assert!(kv.apply(&put_command(put("k"))).is_ok());
}
