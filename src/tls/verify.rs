//! Whose certificates a handshake accepts, and what this end presents.
//!
//! The verifiers wrap rustls's own (webpki) ones, built again from the CA
//! file when it changes; they add only what etcd adds: a client
//! certificate's allowed common name, and no verification at all of a
//! self-signed (`--auto-tls`) server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::reload::Reloading;
use super::{TlsError, common_name, load_roots, provider};

/// This end's certificate, as it is on disk now (server or client side).
#[derive(Debug)]
pub struct OwnCert(pub Reloading<CertifiedKey>);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client certificates signed by the trusted CA (as the file is now).
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Reloading<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    allowed_cn: Option<String>,
}

impl ClientVerifier {
    pub fn new(ca: &Path, mandatory: bool, allowed_cn: Option<String>) -> Result<ClientVerifier, TlsError> {
        fn build(paths: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
            WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(&paths[0])?), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Pem { path: paths[0].clone(), reason: e.to_string() })
        }
        Ok(ClientVerifier {
            inner: Reloading::new("trusted CA", vec![ca.to_path_buf()], build)?,
            mandatory,
            allowed_cn,
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: every client sends the certificate it has (Go's and
    /// rustls's clients send theirs when the list is empty).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.current().verify_client_cert(end_entity, intermediates, now)?;
        if let Some(allowed) = &self.allowed_cn
            && common_name(end_entity).as_deref() != Some(allowed.as_str())
        {
            tracing::warn!(allowed, "refused a peer certificate with another common name");
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.current().supported_verify_schemes()
    }
}

/// Server certificates signed by the trusted CA (as the file is now), or
/// by one of the system's roots when no CA file was given.
#[derive(Debug)]
pub struct ServerVerifier(Reloading<Arc<WebPkiServerVerifier>>);

impl ServerVerifier {
    pub fn new(ca: Option<&Path>) -> Result<ServerVerifier, TlsError> {
        fn build(paths: &[PathBuf]) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
            let roots = match paths.first() {
                Some(ca) => load_roots(ca)?,
                None => {
                    let mut roots = rustls::RootCertStore::empty();
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                    roots
                }
            };
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Settings(format!("no usable trusted CA: {e}")))
        }
        let paths = ca.map(|p| vec![p.to_path_buf()]).unwrap_or_default();
        Ok(ServerVerifier(Reloading::new("trusted CA", paths, build)?))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// Any server certificate (a self-signed `--auto-tls` side); the handshake's
/// signatures are still checked, so the connection is encrypted to whoever
/// holds that certificate's key.
#[derive(Debug)]
pub struct Unverified(pub Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
