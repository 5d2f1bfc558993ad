//! What each key-value request needs of its caller, as etcd checks it: a
//! read needs read permission on its keys, a write write permission (and
//! read too when it returns the previous values), a transaction all of
//! its comparisons' and both branches' needs, and anything touching a
//! lease write permission on every key attached to it.

use super::{Access, AuthError, AuthStore};
use crate::kv::Leases;
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, request_op};
use crate::proto::raftkvpb::{Command, command};

pub fn check_range(auth: &AuthStore, user: Option<&str>, req: &RangeRequest) -> Result<(), AuthError> {
    auth.check(user, Access::Read, &req.key, &req.range_end)
}

fn check_put(auth: &AuthStore, user: Option<&str>, req: &PutRequest, leases: &Leases) -> Result<(), AuthError> {
    auth.check(user, Access::Write, &req.key, b"")?;
    if req.prev_kv {
        auth.check(user, Access::Read, &req.key, b"")?;
    }
    if req.lease != 0 {
        check_lease(auth, user, req.lease, leases)?;
    }
    Ok(())
}

fn check_delete(auth: &AuthStore, user: Option<&str>, req: &DeleteRangeRequest) -> Result<(), AuthError> {
    auth.check(user, Access::Write, &req.key, &req.range_end)?;
    if req.prev_kv {
        auth.check(user, Access::Read, &req.key, &req.range_end)?;
    }
    Ok(())
}

fn check_txn(auth: &AuthStore, user: Option<&str>, req: &TxnRequest, leases: &Leases) -> Result<(), AuthError> {
    for compare in &req.compare {
        auth.check(user, Access::Read, &compare.key, &compare.range_end)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(auth, user, r)?,
            Some(request_op::Request::RequestPut(r)) => check_put(auth, user, r, leases)?,
            Some(request_op::Request::RequestDeleteRange(r)) => check_delete(auth, user, r)?,
            Some(request_op::Request::RequestTxn(t)) => check_txn(auth, user, t, leases)?,
            None => {}
        }
    }
    Ok(())
}

/// Write permission on every key attached to `lease` (etcd's
/// checkLeasePuts): who may end a lease may delete its keys.
fn check_lease(auth: &AuthStore, user: Option<&str>, lease: i64, leases: &Leases) -> Result<(), AuthError> {
    if !auth.enabled() {
        return Ok(());
    }
    for key in leases.get(lease).into_iter().flat_map(|l| l.keys.iter()) {
        auth.check(user, Access::Write, key, b"")?;
    }
    Ok(())
}

/// Whether `user` may have `command` proposed.
pub fn check_command(
    auth: &AuthStore,
    user: Option<&str>,
    command: &Command,
    leases: &Leases,
) -> Result<(), AuthError> {
    match &command.request {
        Some(command::Request::Put(r)) => check_put(auth, user, r, leases),
        Some(command::Request::DeleteRange(r)) => check_delete(auth, user, r),
        Some(command::Request::Txn(r)) => check_txn(auth, user, r, leases),
        Some(command::Request::LeaseRevoke(r)) => {
            auth.check_authenticated(user)?;
            check_lease(auth, user, r.id, leases)
        }
        Some(command::Request::Compaction(_) | command::Request::LeaseGrant(_)) => auth.check_authenticated(user),
        // Checked again where the change is applied.
        Some(command::Request::Auth(_)) => auth.check_admin(user),
        Some(command::Request::Member(_) | command::Request::Alarm(_) | command::Request::LeaseCheckpoint(_))
        | None => auth.check_admin(user),
    }
}
