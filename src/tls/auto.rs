//! `--auto-tls` and `--peer-auto-tls`: a self-signed certificate for the
//! hosts a side listens on, made once and kept in the data directory where
//! etcd keeps its own (`fixtures/client`, `fixtures/peer`), so a restarted
//! member serves the same certificate.

use std::path::Path;

use super::{TlsError, TlsInfo};

/// The self-signed certificate of a side kept in `dir` (made now if there
/// is none yet), for `hosts` (names or IP addresses).
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<TlsInfo, TlsError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !(cert.exists() && key.exists()) {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let made = rcgen::generate_simple_self_signed(hosts.to_vec())
            .map_err(|e| TlsError::Settings(format!("cannot make a self-signed certificate: {e}")))?;
        // The key first: a certificate without its key is never left behind.
        write_private(&key, made.signing_key.serialize_pem().as_bytes()).map_err(io(&key))?;
        std::fs::write(&cert, made.cert.pem()).map_err(io(&cert))?;
        tracing::info!(cert = %cert.display(), "made a self-signed certificate");
    }
    Ok(TlsInfo { cert_file: Some(cert), key_file: Some(key), insecure_skip_verify: true, ..TlsInfo::default() })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
