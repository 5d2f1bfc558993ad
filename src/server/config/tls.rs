//! The TLS flags of one side (the client port or the peer port), turned
//! into what its listeners serve with and how its URLs are dialed.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ConfigError, Listen, invalid};
use crate::tls::{Dialer, TlsInfo};

/// One side's TLS flags as given (the client port's, or the peer port's).
pub(super) struct Side {
    pub(super) name: &'static str,
    pub(super) cert_flag: &'static str,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) trusted_ca_file: Option<PathBuf>,
    pub(super) client_cert_auth: bool,
    pub(super) auto_tls: bool,
    pub(super) allowed_cn: Option<String>,
}

impl Side {
    /// What the side's `https://` listeners serve with, and how to dial its
    /// `https://` URLs. The files are read now, so a bad one is an error at
    /// start; an --auto-tls certificate is made now if the data directory
    /// has none.
    pub(super) fn build(
        self,
        data_dir: &std::path::Path,
        listens: &[Listen],
        urls: &[String],
    ) -> Result<(Option<Arc<rustls::ServerConfig>>, Dialer), ConfigError> {
        let field = self.cert_flag;
        let fail = |e: crate::tls::TlsError| invalid(field, e.to_string());
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(field, "a certificate and its key are given together (--*cert-file, --*key-file)"));
        }
        let given = TlsInfo {
            cert_file: self.cert_file,
            key_file: self.key_file,
            trusted_ca_file: self.trusted_ca_file,
            client_cert_auth: self.client_cert_auth,
            allowed_cn: self.allowed_cn,
            insecure_skip_verify: false,
        };
        let info = if !given.has_cert() && self.auto_tls {
            let hosts: Vec<String> = listens.iter().map(|l| l.addr.ip().to_string()).chain(url_hosts(urls)).collect();
            let dir = data_dir.join("fixtures").join(self.name);
            let made = crate::tls::auto::self_signed(&dir, &hosts).map_err(fail)?;
            TlsInfo { trusted_ca_file: given.trusted_ca_file, ..made }
        } else {
            given
        };
        let tls_listens = listens.iter().any(|l| l.tls);
        let server = if tls_listens {
            if !info.has_cert() {
                return Err(invalid(
                    field,
                    format!("`https://` {} URLs need --{field} and its key, or auto TLS", self.name),
                ));
            }
            Some(info.server_config().map_err(fail)?)
        } else {
            None
        };
        Ok((server, Dialer::new(&info).map_err(fail)?))
    }
}

/// The hosts of `https://` URLs (for an --auto-tls certificate's names).
fn url_hosts(urls: &[String]) -> impl Iterator<Item = String> + '_ {
    urls.iter().filter_map(|u| u.strip_prefix("https://")).filter_map(|hostport| {
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        Some(host.trim_start_matches('[').trim_end_matches(']').to_string()).filter(|h| !h.is_empty())
    })
}
