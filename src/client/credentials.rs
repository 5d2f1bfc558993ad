//! Logging in: with `--user`, every connection this process makes to a
//! member authenticates there first (etcd's `Authenticate`) and sends the
//! token it got with each call, as etcd's clients do. A token is asked for
//! per connection, since a simple token is valid only on the member that
//! issued it. A cluster without auth enabled needs no token: the login is
//! skipped, as etcdctl skips it.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tokio::sync::OnceCell;
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::transport::Channel as Connection;

use crate::proto::etcdserverpb::AuthenticateRequest;
use crate::proto::etcdserverpb::auth_client::AuthClient;

/// A user name and password, for every connection of this process.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

static CREDENTIALS: RwLock<Option<Credentials>> = RwLock::new(None);

/// Logs this process's connections in as `credentials` from now on.
pub fn use_credentials(credentials: Credentials) {
    *CREDENTIALS.write().unwrap_or_else(|e| e.into_inner()) = Some(credentials);
}

fn credentials() -> Option<Arc<Credentials>> {
    CREDENTIALS.read().unwrap_or_else(|e| e.into_inner()).clone().map(Arc::new)
}

/// A connection to a member that logs in before its first call when this
/// process has credentials.
#[derive(Clone)]
pub struct Channel {
    inner: Connection,
    credentials: Option<Arc<Credentials>>,
    token: Arc<OnceCell<Option<http::HeaderValue>>>,
}

impl Channel {
    pub fn new(inner: Connection) -> Channel {
        Channel { inner, credentials: credentials(), token: Arc::default() }
    }
}

/// The token `credentials` get from the member behind `connection`; none
/// when that cluster has auth disabled.
async fn log_in(connection: Connection, credentials: &Credentials) -> Result<Option<http::HeaderValue>, tonic::Status> {
    let req = AuthenticateRequest { name: credentials.user.clone(), password: credentials.password.clone() };
    match AuthClient::new(connection).authenticate(req).await {
        Ok(resp) => {
            let token = resp.into_inner().token;
            http::HeaderValue::from_str(&token)
                .map(Some)
                .map_err(|_| tonic::Status::internal("the member answered with a token that is not a header value"))
        }
        Err(status) if status.message() == crate::auth::AuthError::NotEnabled.to_string() => Ok(None),
        Err(status) => Err(status),
    }
}

impl Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        // The connection polled ready is the one to call; a clone waits in
        // its place for the next call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let Some(credentials) = self.credentials.clone() else {
            return Box::pin(async move { inner.call(req).await.map_err(Into::into) });
        };
        let (token, login) = (self.token.clone(), self.inner.clone());
        Box::pin(async move {
            let token = token.get_or_try_init(|| log_in(login, &credentials)).await?;
            if let Some(token) = token {
                req.headers_mut().insert("token", token.clone());
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}
