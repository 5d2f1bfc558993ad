//! etcd's auth store: users, roles and their permissions, whether auth is
//! enabled, and the store's revision. It is replicated state: every change
//! is a command in the log ([`AuthStore::apply`]), and the whole store
//! travels in snapshots ([`AuthStore::record`]), so every member decides
//! alike who may do what at each point of the log.
//!
//! Invariants, as etcd keeps them:
//! - Every change raises the revision by one; a change that changes nothing
//!   (enabling what is enabled, granting a role already granted) does not.
//! - Auth is enabled only while a `root` user holding the `root` role
//!   exists, and while it is that user cannot be deleted nor lose the role,
//!   and the `root` role cannot be deleted.
//! - While auth is enabled, only a caller with the `root` role changes the
//!   store; `root` is allowed everything, with or without permissions.
//! - Passwords are kept as bcrypt hashes ([`password`]), never in clear.
//! - A refused change changes nothing.

pub mod password;
pub mod perms;
pub mod requests;

use std::collections::BTreeMap;

use crate::proto::AuthRecord;
use crate::proto::authpb::{Permission, Role, User};
use crate::proto::raftkvpb::{AuthChange, AuthStamp, auth_change};
pub use perms::Access;

/// The user and role every cluster's administrator has.
pub const ROOT: &str = "root";

/// Why an auth request was refused, in etcd's words (clients match them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExists,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExists,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    NotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidToken,
    #[error("etcdserver: invalid auth management")]
    InvalidManagement,
    #[error("etcdserver: revision of auth store is old")]
    OldRevision,
    #[error("etcdserver: root user does not exist")]
    RootUserMissing,
    #[error("etcdserver: root user does not have root role")]
    RootRoleMissing,
    /// Too many failed authentications from one address (etcd's text for
    /// a request refused to protect the server).
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}

impl AuthError {
    /// The gRPC status etcd answers this error with.
    pub fn status(&self) -> tonic::Status {
        use tonic::Status;
        let message = self.to_string();
        match self {
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::PermissionNotGiven
            | AuthError::InvalidManagement
            | AuthError::OldRevision => Status::invalid_argument(message),
            AuthError::PermissionDenied => Status::permission_denied(message),
            AuthError::InvalidToken => Status::unauthenticated(message),
            AuthError::TooManyRequests => Status::resource_exhausted(message),
            _ => Status::failed_precondition(message),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore { enabled: false, revision: 1, users: BTreeMap::new(), roles: BTreeMap::new() }
    }
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl AuthStore {
    /// The store a snapshot recorded (an absent record: auth never used).
    pub fn from_record(record: Option<&AuthRecord>) -> AuthStore {
        let Some(record) = record else { return AuthStore::default() };
        AuthStore {
            enabled: record.enabled,
            revision: record.revision.max(1),
            users: record.users.iter().map(|u| (name_of(&u.name), u.clone())).collect(),
            roles: record.roles.iter().map(|r| (name_of(&r.name), r.clone())).collect(),
        }
    }

    /// What a snapshot keeps of the store.
    pub fn record(&self) -> AuthRecord {
        AuthRecord {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// User names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Role names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// The user `name`, who must exist: the caller of a request.
    fn caller(&self, name: Option<&str>) -> Result<&User, AuthError> {
        let name = name.filter(|n| !n.is_empty()).ok_or(AuthError::UserEmpty)?;
        // A user deleted since its token was issued is refused, as in etcd.
        self.users.get(name).ok_or(AuthError::PermissionDenied)
    }

    /// etcd's IsAdminPermitted: anyone while auth is disabled; then only an
    /// existing user with the `root` role.
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.caller(user)?;
        if user.roles.iter().any(|r| r == ROOT) { Ok(()) } else { Err(AuthError::PermissionDenied) }
    }

    /// Whether `user` may do `access` to every key of `(key, range_end)`:
    /// anyone while auth is disabled; `root` always; others as the
    /// permissions of their roles, together, allow.
    pub fn check(&self, user: Option<&str>, access: Access, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.caller(user)?;
        if user.roles.iter().any(|r| r == ROOT) {
            return Ok(());
        }
        let perms = user.roles.iter().filter_map(|r| self.roles.get(r)).flat_map(|r| r.key_permission.iter());
        if perms::covers(perms, access, key, range_end) { Ok(()) } else { Err(AuthError::PermissionDenied) }
    }

    /// etcd's check of a request that needs a known caller but no key's
    /// permission (a lease grant, a compaction).
    pub fn check_authenticated(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        self.caller(user).map(|_| ())
    }

    /// Applies one committed change. `stamp` is who asked (absent: the
    /// cluster itself). An error changes nothing.
    pub fn apply(&mut self, change: &AuthChange, stamp: Option<&AuthStamp>) -> Result<(), AuthError> {
        if let Some(stamp) = stamp {
            self.check_admin(Some(&stamp.user))?;
        }
        let Some(change) = &change.change else { return Err(AuthError::InvalidManagement) };
        match change {
            auth_change::Change::Enable(_) => {
                if self.enabled {
                    return Ok(());
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserMissing)?;
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Err(AuthError::RootRoleMissing);
                }
                self.enabled = true;
            }
            auth_change::Change::Disable(_) => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
            }
            auth_change::Change::UserAdd(user) => {
                let name = name_of(&user.name);
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserAlreadyExists);
                }
                let user = User { roles: Vec::new(), ..user.clone() };
                self.users.insert(name, user);
            }
            auth_change::Change::UserDelete(req) => {
                if self.enabled && req.name == ROOT {
                    return Err(AuthError::InvalidManagement);
                }
                self.users.remove(&req.name).ok_or(AuthError::UserNotFound)?;
            }
            auth_change::Change::UserChangePassword(user) => {
                let existing = self.users.get_mut(&name_of(&user.name)).ok_or(AuthError::UserNotFound)?;
                existing.password = user.password.clone();
            }
            auth_change::Change::UserGrantRole(req) => {
                // The `root` role needs no adding before it is granted.
                let role_exists = req.role == ROOT || self.roles.contains_key(&req.role);
                let user = self.users.get_mut(&req.user).ok_or(AuthError::UserNotFound)?;
                if !role_exists {
                    return Err(AuthError::RoleNotFound);
                }
                match user.roles.binary_search(&req.role) {
                    Ok(_) => return Ok(()),
                    Err(at) => user.roles.insert(at, req.role.clone()),
                }
            }
            auth_change::Change::UserRevokeRole(req) => {
                if self.enabled && req.name == ROOT && req.role == ROOT {
                    return Err(AuthError::InvalidManagement);
                }
                let user = self.users.get_mut(&req.name).ok_or(AuthError::UserNotFound)?;
                let at = user.roles.iter().position(|r| *r == req.role).ok_or(AuthError::RoleNotGranted)?;
                user.roles.remove(at);
            }
            auth_change::Change::RoleAdd(req) => {
                if req.name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&req.name) {
                    return Err(AuthError::RoleAlreadyExists);
                }
                self.roles.insert(
                    req.name.clone(),
                    Role { name: req.name.clone().into_bytes().into(), key_permission: vec![] },
                );
            }
            auth_change::Change::RoleDelete(req) => {
                if self.enabled && req.role == ROOT {
                    return Err(AuthError::InvalidManagement);
                }
                self.roles.remove(&req.role).ok_or(AuthError::RoleNotFound)?;
                // Nobody holds a role that no longer exists.
                for user in self.users.values_mut() {
                    user.roles.retain(|r| *r != req.role);
                }
            }
            auth_change::Change::RoleGrantPermission(req) => {
                let role = self.roles.get_mut(&req.name).ok_or(AuthError::RoleNotFound)?;
                let perm = req.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
                grant(&mut role.key_permission, perm);
            }
            auth_change::Change::RoleRevokePermission(req) => {
                let role = self.roles.get_mut(&req.role).ok_or(AuthError::RoleNotFound)?;
                let at = role
                    .key_permission
                    .iter()
                    .position(|p| p.key == req.key && p.range_end == req.range_end)
                    .ok_or(AuthError::PermissionNotGranted)?;
                role.key_permission.remove(at);
            }
        }
        self.revision += 1;
        Ok(())
    }
}

/// Adds `perm` to `perms`, kept in key order; one for the same keys is
/// replaced (its type changes), as etcd does.
fn grant(perms: &mut Vec<Permission>, perm: &Permission) {
    if let Some(same) = perms.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end) {
        same.perm_type = perm.perm_type;
        return;
    }
    let at = perms.partition_point(|p| p.key < perm.key);
    perms.insert(at, perm.clone());
}

#[cfg(test)]
mod tests;
