//! Member ids as etcd derives them, so an id tells the same story in
//! raftkv and etcd tools: the first 8 bytes (big-endian) of the SHA-1 of
//! the sorted peer URLs joined, the cluster token, and, for a member added
//! at runtime, the Unix time in seconds of the request (so re-adding the
//! same URLs later gives a new id).

use sha1::{Digest, Sha1};

pub fn member_id(peer_urls: &[String], token: &str, unix_secs: Option<u64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    if let Some(secs) = unix_secs {
        bytes.extend_from_slice(secs.to_string().as_bytes());
    }
    let hash = Sha1::digest(&bytes);
    u64::from_be_bytes(hash[..8].try_into().expect("SHA-1 has 20 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_etcds() {
        // etcd's defaults (token etcd-cluster, peer URL
        // http://localhost:2380) give its well-known member id.
        let id = member_id(&["http://localhost:2380".into()], "etcd-cluster", None);
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
    }
}
