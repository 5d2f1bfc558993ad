//! Connecting to a TLS listener: a connector tonic's channels dial through
//! when a URL is `https://`, with the host of the URL as the name the
//! server's certificate must carry (its IP address for an IP literal).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::{TlsError, TlsInfo};

#[derive(Clone, Debug)]
pub struct TlsConnector(Arc<ClientConfig>);

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector(config)
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.0.clone();
        Box::pin(async move {
            let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let host = uri.host().ok_or_else(|| invalid(format!("`{uri}` names no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // Requests and Raft messages are small: never wait for Nagle.
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// How connections to `https://` URLs are made: with the TLS settings of
/// the side they go to (or, given none, verified against the system's
/// roots). `http://` URLs are dialled in plain text.
#[derive(Clone, Debug, Default)]
pub struct Dialer(Option<Arc<ClientConfig>>);

impl Dialer {
    /// A dialer with `info`'s settings (none given: the defaults).
    pub fn new(info: &TlsInfo) -> Result<Dialer, TlsError> {
        if *info == TlsInfo::default() { Ok(Dialer(None)) } else { Ok(Dialer(Some(info.client_config()?))) }
    }

    /// The configuration for `target`, if it is `https://`.
    fn tls_for(&self, target: &Target) -> Option<Arc<ClientConfig>> {
        if !target.tls {
            return None;
        }
        match &self.0 {
            Some(config) => Some(config.clone()),
            None => match default_config() {
                Ok(config) => Some(config.clone()),
                Err(e) => {
                    tracing::warn!("no TLS settings to connect to {} with: {e}", target.endpoint.uri());
                    None
                }
            },
        }
    }

    /// Connects `target` now.
    pub async fn connect(&self, target: &Target) -> Result<Channel, tonic::transport::Error> {
        match self.tls_for(target) {
            Some(config) => target.endpoint.connect_with_connector(TlsConnector::new(config)).await,
            None => target.endpoint.connect().await,
        }
    }

    /// A channel to `target` that connects on first use (and again after
    /// a broken connection).
    pub fn connect_lazy(&self, target: &Target) -> Channel {
        match self.tls_for(target) {
            Some(config) => target.endpoint.connect_with_connector_lazy(TlsConnector::new(config)),
            None => target.endpoint.connect_lazy(),
        }
    }
}

/// The settings for `https://` URLs when none were given: the system's
/// roots, read once per process (reading them costs milliseconds).
fn default_config() -> &'static Result<Arc<ClientConfig>, String> {
    static DEFAULT: std::sync::OnceLock<Result<Arc<ClientConfig>, String>> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| TlsInfo::default().client_config().map_err(|e| e.to_string()))
}

/// A URL to dial: tonic's endpoint for it, and whether it speaks TLS.
///
/// For an `https://` URL the endpoint's own URI is `http://` with the real
/// URL as its origin (which requests carry as their scheme and authority):
/// tonic built with one of its TLS features (as a dependency of ours may
/// ask) refuses to dial an `https` URI through any connector but its own.
#[derive(Clone, Debug)]
pub struct Target {
    endpoint: Endpoint,
    tls: bool,
}

impl Target {
    pub fn new(url: &str) -> Result<Target, tonic::transport::Error> {
        let given = Endpoint::from_shared(url.to_string())?;
        let Some(rest) = url.strip_prefix("https://") else { return Ok(Target { endpoint: given, tls: false }) };
        let endpoint = Endpoint::from_shared(format!("http://{rest}"))?.origin(given.uri().clone());
        Ok(Target { endpoint, tls: true })
    }

    /// The same target with `configure`'s settings (timeouts, keepalive).
    pub fn with(self, configure: impl FnOnce(Endpoint) -> Endpoint) -> Target {
        Target { endpoint: configure(self.endpoint), ..self }
    }
}
