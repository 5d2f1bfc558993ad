//! Who is asking, and whether they may: the server's side of etcd's auth.
//!
//! - A request's caller ([`Caller`]) is the user its token names (gRPC
//!   metadata `token`, or `authorization` as etcd's gateway sends it), or,
//!   with `--client-cert-auth` and no token, the common name of the
//!   client's verified certificate; else nobody. While auth is disabled
//!   there is no caller and nothing is checked (a token is not even read).
//! - Writes are checked here against the applied permissions and then
//!   stamped with the caller and the auth revision they were checked at;
//!   the state machine refuses one whose revision is older than its own
//!   ([`crate::kv`]), so a permission revoked in between is never bypassed.
//! - Reads are checked by the node against the very state they read.
//! - Management (users, roles, enabling) needs the `root` role, checked
//!   here and again where the change is applied.
//!
//! [`tokens`] issues and checks tokens; [`limiter`] slows down password
//! guessing per client address; [`service`] is etcd's `Auth` service.

pub mod limiter;
pub mod service;
pub mod tokens;

use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

use super::authority::ClientPeer;
use super::shared::{Shared, WriteResult};
use crate::auth::{AuthError, AuthStore, requests};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};
use crate::proto::raftkvpb::{AuthStamp, Command};

/// What `--auth-token`, `--auth-token-ttl` and `--bcrypt-cost` set.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub token: tokens::TokenKind,
    pub simple_ttl: Duration,
    pub bcrypt_cost: u32,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            token: tokens::TokenKind::Simple,
            simple_ttl: tokens::DEFAULT_SIMPLE_TTL,
            bcrypt_cost: crate::auth::password::DEFAULT_COST,
        }
    }
}

/// The caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    user: Option<String>,
    /// The auth revision the caller's identity stands for.
    revision: u64,
}

impl Caller {
    /// The server itself, or anyone while auth is disabled.
    pub fn nobody(revision: u64) -> Caller {
        Caller { user: None, revision }
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn stamp(&self) -> AuthStamp {
        AuthStamp { user: self.user.clone().unwrap_or_default(), revision: self.revision }
    }
}

/// This member's tokens and its limit on failed authentications.
pub struct Authenticator {
    pub tokens: tokens::Tokens,
    pub limiter: limiter::Limiter,
    pub bcrypt_cost: u32,
    /// Whether a client certificate's common name is a user (etcd does so
    /// only with --client-cert-auth).
    cert_users: bool,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, client_cert_auth: bool) -> Authenticator {
        Authenticator {
            tokens: tokens::Tokens::new(settings.token.clone(), settings.simple_ttl),
            limiter: limiter::Limiter::default(),
            bcrypt_cost: settings.bcrypt_cost,
            cert_users: client_cert_auth,
        }
    }

    /// The caller of a request with `metadata` over `peer`'s connection.
    pub fn caller(
        &self,
        auth: &AuthStore,
        metadata: &MetadataMap,
        peer: Option<&ClientPeer>,
    ) -> Result<Caller, AuthError> {
        if !auth.enabled() {
            return Ok(Caller::nobody(auth.revision()));
        }
        if let Some(token) = token_of(metadata) {
            let info = self.tokens.verify(token, |name| auth.user(name).map(|u| u.password.clone()))?;
            return Ok(Caller { user: Some(info.user), revision: info.revision.unwrap_or(auth.revision()) });
        }
        if self.cert_users
            && let Some(name) = peer.and_then(|p| p.common_name.as_deref())
        {
            return Ok(Caller { user: Some(name.to_owned()), revision: auth.revision() });
        }
        Ok(Caller::nobody(auth.revision()))
    }
}

/// A request's token: metadata `token` (etcd's clients), or `authorization`
/// (etcd's gateway passes the HTTP header on), with or without "Bearer ".
fn token_of(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("token").or_else(|| metadata.get("authorization"))?;
    let token = value.to_str().ok()?.trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token);
    (!token.is_empty()).then_some(token)
}

/// The connection a request came over, as the client listener saw it.
pub fn peer_of(extensions: &http::Extensions) -> Option<&ClientPeer> {
    extensions.get::<axum::extract::ConnectInfo<ClientPeer>>().map(|c| &c.0)
}

impl Shared {
    /// The caller of `request` (gRPC, or the gateway's request built the
    /// same way).
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, Status> {
        self.caller_of(request.metadata(), peer_of(request.extensions()))
    }

    /// The caller of an HTTP request with `headers`.
    pub fn caller_from_headers(&self, headers: &http::HeaderMap, peer: Option<&ClientPeer>) -> Result<Caller, Status> {
        {
            // Headers are copied into metadata only when they matter.
            let kv = self.applied.borrow();
            if !kv.auth().enabled() {
                return Ok(Caller::nobody(kv.auth().revision()));
            }
        }
        self.caller_of(&MetadataMap::from_headers(headers.clone()), peer)
    }

    pub fn caller_of(&self, metadata: &MetadataMap, peer: Option<&ClientPeer>) -> Result<Caller, Status> {
        let auth = self.applied.borrow().auth().clone();
        self.authenticator.caller(&auth, metadata, peer).map_err(|e| e.status())
    }

    /// Applies `command` for `caller`: refused unless the applied
    /// permissions allow it, and stamped so the state machine refuses it if
    /// they changed before it is applied.
    pub async fn write_as(&self, caller: &Caller, mut command: Command) -> Result<WriteResult, Status> {
        {
            let kv = self.applied.borrow();
            let auth = kv.auth();
            if auth.enabled() {
                if caller.revision < auth.revision() {
                    return Err(AuthError::OldRevision.status());
                }
                requests::check_command(auth, caller.user(), &command, kv.leases()).map_err(|e| e.status())?;
            }
        }
        command.stamp = Some(caller.stamp());
        self.write(command).await
    }

    /// Serves `req` for `caller`, checked against the state it reads.
    pub async fn range_as(&self, caller: &Caller, req: RangeRequest) -> Result<(RangeResponse, i64), Status> {
        {
            let auth = self.applied.borrow().auth().clone();
            if auth.enabled() && caller.revision < auth.revision() {
                return Err(AuthError::OldRevision.status());
            }
        }
        self.range_for(req, Some(caller.stamp())).await
    }

    /// Refuses `request` unless its caller may administer the cluster.
    pub fn require_admin<T>(&self, request: &tonic::Request<T>) -> Result<(), Status> {
        let caller = self.caller(request)?;
        self.check_admin(&caller)
    }

    /// etcd's IsAdminPermitted for `caller`, against the applied state.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), Status> {
        self.applied.borrow().auth().check_admin(caller.user()).map_err(|e| e.status())
    }

    /// Whether `caller` may read `(key, range_end)` now (a watch's start).
    pub fn check_read(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        let auth = self.applied.borrow().auth().clone();
        if auth.enabled() && caller.revision < auth.revision() {
            return Err(AuthError::OldRevision);
        }
        auth.check(caller.user(), crate::auth::Access::Read, key, range_end)
    }

    /// A request that needs a known caller (any user) while auth is on.
    pub fn check_authenticated(&self, caller: &Caller) -> Result<(), Status> {
        self.applied.borrow().auth().check_authenticated(caller.user()).map_err(|e| e.status())
    }
}
