//! Certificates for a local cluster (`raftkv dev --tls`) and for tests: a
//! CA of its own, and certificates it signs for both server and client use
//! (as etcd's own test fixtures are), written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

/// A certificate authority, its certificate written to [`Authority::cert_file`].
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub cert_file: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

fn failed(e: rcgen::Error) -> TlsError {
    TlsError::Settings(format!("cannot make a certificate: {e}"))
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

impl Authority {
    /// A new CA named `name`, its certificate written to `<dir>/<name>.pem`.
    pub fn create(dir: &Path, name: &str) -> Result<Authority, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.to_path_buf(), source })?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(failed)?).map_err(failed)?;
        let cert_file = dir.join(format!("{name}.pem"));
        write(&cert_file, &issuer.pem())?;
        Ok(Authority { issuer, cert_file })
    }

    /// A certificate for `hosts` (names or IP addresses) with the common
    /// name `common_name`, for server and client use, written to
    /// `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
    pub fn issue(&self, dir: &Path, name: &str, common_name: &str, hosts: &[&str]) -> Result<Issued, TlsError> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(hosts).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        let issued =
            Issued { cert_file: dir.join(format!("{name}.pem")), key_file: dir.join(format!("{name}-key.pem")) };
        write(&issued.key_file, &key.serialize_pem())?;
        write(&issued.cert_file, &cert.pem())?;
        Ok(issued)
    }
}
