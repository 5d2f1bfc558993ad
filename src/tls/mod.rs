//! TLS for the client and peer ports and for every connection raftkv makes
//! to them, with etcd's flags, on rustls (the `ring` provider; no OpenSSL).
//!
//! - What one side is given ([`TlsInfo`]: etcd's `--cert-file`,
//!   `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, or their
//!   `--peer-*` twins) becomes a rustls server configuration for its
//!   listener and a client configuration for connecting to that side.
//! - Certificates, keys and CA bundles are PEM files re-read when they
//!   change ([`reload`]), so an operator rotates them without a restart. A
//!   file that does not load leaves the one before in use, and says so.
//! - With client-cert-auth a server refuses, during the handshake, a client
//!   without a certificate signed by the trusted CA (on the peer port also
//!   one whose common name is not `--peer-cert-allowed-cn`, when given). A
//!   trusted CA without client-cert-auth verifies the certificates clients
//!   offer and lets clients without one in, as etcd does.
//! - `--auto-tls` certificates are self-signed ([`auto`]): whoever connects
//!   to such a side cannot verify it and does not try, as etcd's own peers do.
//! - Both ends offer ALPN `h2` (gRPC clients require it) and `http/1.1`.

pub mod accept;
pub mod auto;
pub mod connect;
pub mod generate;
mod reload;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use accept::{MaybeTls, TlsIncoming};
pub use connect::{Dialer, Target, TlsConnector};
use reload::Reloading;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Settings(String),
}

/// What one side (the client port or the peer port) is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate the trusted CA signed.
    pub client_cert_auth: bool,
    /// Only a client certificate with this common name is accepted.
    pub allowed_cn: Option<String>,
    /// Whoever connects to this side does not verify its certificate: it is
    /// self-signed (`--auto-tls`), or a client said so
    /// (`--insecure-skip-tls-verify`).
    pub insecure_skip_verify: bool,
}

impl TlsInfo {
    /// Whether this side was given a certificate to serve with.
    pub fn has_cert(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// The rustls configuration a listener of this side serves with.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            return Err(TlsError::Settings("a TLS listener needs a certificate and its key".into()));
        };
        let certified =
            Reloading::new("certificate", vec![cert.clone(), key.clone()], |p| certified_key(&p[0], &p[1]))?;
        let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
        let builder = match &self.trusted_ca_file {
            Some(ca) => builder.with_client_cert_verifier(Arc::new(verify::ClientVerifier::new(
                ca,
                self.client_cert_auth,
                self.allowed_cn.clone(),
            )?)),
            None if self.client_cert_auth => {
                return Err(TlsError::Settings("client-cert-auth needs a trusted CA file".into()));
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(verify::OwnCert(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The rustls configuration for connecting to a listener of this side:
    /// verified against the trusted CA (the system's roots without one, or
    /// not at all if the side's certificates are self-signed), presenting
    /// this side's certificate as the client's when it has one.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if self.insecure_skip_verify {
            Arc::new(verify::Unverified(provider()))
        } else {
            Arc::new(verify::ServerVerifier::new(self.trusted_ca_file.as_deref())?)
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let certified =
                    Reloading::new("certificate", vec![cert.clone(), key.clone()], |p| certified_key(&p[0], &p[1]))?;
                builder.with_client_cert_resolver(Arc::new(verify::OwnCert(certified)))
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The one crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// The common name of a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

/// Every certificate of a PEM file, in order (a chain, or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem { path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(pem("holds no certificate".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: format!("no PEM private key: {e}") })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    }
    Ok(roots)
}

/// A certificate chain with its key, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key = provider().key_provider.load_private_key(load_key(key)?)?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| TlsError::Pem { path: cert.to_path_buf(), reason: e.to_string() })?;
    Ok(certified)
}
