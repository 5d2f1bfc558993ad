//! etcd's `Auth` service on the client port.
//!
//! Changes go through the log as [`AuthChange`] commands, passwords already
//! hashed here (bcrypt, on a blocking thread: it is slow by design). Reads
//! (users, roles, status) and `Authenticate` first wait for a linearizable
//! read, so a user or password changed through another member counts at
//! once. A failed authentication is logged with the client's address and
//! the user name, never the password, and counts against the address's
//! [`super::limiter`].

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::Caller;
use crate::auth::{AuthError, password};
use crate::proto::authpb::{User, UserAddOptions};
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb::{AuthChange, Command, auth_change, command};
use crate::server::shared::Shared;

pub struct AuthService(pub Arc<Shared>);

fn refuse(e: AuthError) -> Status {
    e.status()
}

/// Hashes `password` off the async workers.
async fn hash(password: String, cost: u32) -> Result<bytes::Bytes, Status> {
    let hashed = tokio::task::spawn_blocking(move || password::hash(&password, cost))
        .await
        .map_err(|e| Status::internal(format!("hashing the password failed: {e}")))?
        .map_err(|e| Status::internal(format!("hashing the password failed: {e}")))?;
    Ok(hashed.into_bytes().into())
}

/// The hash of a password given as a bcrypt hash (etcd 3.5's
/// `hashedPassword`), or of `password`.
async fn hash_given(password: String, hashed: String, cost: u32) -> Result<bytes::Bytes, Status> {
    if hashed.is_empty() {
        return hash(password, cost).await;
    }
    if !password::is_hash(&hashed) {
        return Err(Status::invalid_argument("etcdserver: hashedPassword is not a bcrypt hash"));
    }
    Ok(hashed.into_bytes().into())
}

/// A hash to check against when the user does not exist, so a missing user
/// takes as long to refuse as a wrong password.
fn decoy(cost: u32) -> &'static User {
    static DECOY: OnceLock<User> = OnceLock::new();
    DECOY.get_or_init(|| User {
        password: password::hash("raftkv decoy", cost).unwrap_or_default().into_bytes().into(),
        ..Default::default()
    })
}

impl AuthService {
    /// Proposes `change` for `caller`; the header of the answer.
    async fn change(&self, caller: &Caller, change: auth_change::Change) -> Result<Option<ResponseHeader>, Status> {
        let command = Command::new(command::Request::Auth(AuthChange { change: Some(change) }));
        let (_, revision, term) = self.0.write_as(caller, command).await?;
        Ok(Some(self.0.header(revision, term)))
    }

    /// The auth store as of a linearizable read, for an admin caller.
    async fn read_as_admin(&self, caller: &Caller) -> Result<(crate::kv::KvStore, Option<ResponseHeader>), Status> {
        let kv = self.0.linearized().await?;
        kv.auth().check_admin(caller.user()).map_err(refuse)?;
        let header = Some(self.0.header(kv.revision(), self.0.status.borrow().term));
        Ok((kv, header))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::Enable(AuthEnableRequest {})).await?;
        tracing::info!(by = caller.user(), "auth enabled");
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::Disable(AuthDisableRequest {})).await?;
        tracing::info!(by = caller.user(), "auth disabled");
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(&self, _: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        let kv = self.0.linearized().await?;
        let header = Some(self.0.header(kv.revision(), self.0.status.borrow().term));
        let auth = kv.auth();
        Ok(Response::new(AuthStatusResponse { header, enabled: auth.enabled(), auth_revision: auth.revision() }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let addr = super::peer_of(request.extensions()).map(|p| p.addr);
        let AuthenticateRequest { name, password } = request.into_inner();
        let authenticator = &self.0.authenticator;
        if let Some(addr) = addr
            && !authenticator.limiter.allows(addr.ip(), Instant::now())
        {
            tracing::warn!(peer = %addr, user = %name, "authentication refused: too many failures from this address");
            return Err(refuse(AuthError::TooManyRequests));
        }
        let kv = self.0.linearized().await?;
        let auth = kv.auth();
        if !auth.enabled() {
            return Err(refuse(AuthError::NotEnabled));
        }
        let user = auth.user(&name).cloned();
        let cost = authenticator.bcrypt_cost;
        let checking = user.clone();
        let matches = tokio::task::spawn_blocking(move || match &checking {
            Some(user) => password::verify(user, &password),
            None => {
                let _ = password::verify(decoy(cost), &password);
                false
            }
        })
        .await
        .map_err(|e| Status::internal(format!("checking the password failed: {e}")))?;
        let Some(user) = user.filter(|_| matches) else {
            if let Some(addr) = addr {
                authenticator.limiter.failed(addr.ip(), Instant::now());
            }
            let peer = addr.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
            tracing::warn!(peer, user = %name, "authentication failed: invalid user ID or password");
            return Err(refuse(AuthError::AuthFailed));
        };
        let token = authenticator.tokens.issue(&name, &user.password, auth.revision()).map_err(refuse)?;
        let header = Some(self.0.header(kv.revision(), self.0.status.borrow().term));
        Ok(Response::new(AuthenticateResponse { header, token }))
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let caller = self.0.caller(&request)?;
        self.0.check_admin(&caller)?;
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(refuse(AuthError::UserEmpty));
        }
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password {
            bytes::Bytes::new()
        } else {
            hash_given(req.password, req.hashed_password, self.0.authenticator.bcrypt_cost).await?
        };
        let user = User {
            name: req.name.into_bytes().into(),
            password,
            roles: vec![],
            options: Some(UserAddOptions { no_password }),
        };
        let header = self.change(&caller, auth_change::Change::UserAdd(user)).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let (kv, header) = self.read_as_admin(&caller).await?;
        let user = kv.auth().user(&request.get_ref().name).ok_or_else(|| refuse(AuthError::UserNotFound))?;
        Ok(Response::new(AuthUserGetResponse { header, roles: user.roles.clone() }))
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let (kv, header) = self.read_as_admin(&caller).await?;
        Ok(Response::new(AuthUserListResponse { header, users: kv.auth().user_names() }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::UserDelete(request.into_inner())).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let caller = self.0.caller(&request)?;
        self.0.check_admin(&caller)?;
        let req = request.into_inner();
        let password = hash_given(req.password, req.hashed_password, self.0.authenticator.bcrypt_cost).await?;
        let user = User { name: req.name.into_bytes().into(), password, ..Default::default() };
        let header = self.change(&caller, auth_change::Change::UserChangePassword(user)).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::UserGrantRole(request.into_inner())).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::UserRevokeRole(request.into_inner())).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::RoleAdd(request.into_inner())).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let (kv, header) = self.read_as_admin(&caller).await?;
        let role = kv.auth().role(&request.get_ref().role).ok_or_else(|| refuse(AuthError::RoleNotFound))?;
        Ok(Response::new(AuthRoleGetResponse { header, perm: role.key_permission.clone() }))
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let (kv, header) = self.read_as_admin(&caller).await?;
        Ok(Response::new(AuthRoleListResponse { header, roles: kv.auth().role_names() }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::RoleDelete(request.into_inner())).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        if req.perm.is_none() {
            return Err(refuse(AuthError::PermissionNotGiven));
        }
        let header = self.change(&caller, auth_change::Change::RoleGrantPermission(req)).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let header = self.change(&caller, auth_change::Change::RoleRevokePermission(request.into_inner())).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
