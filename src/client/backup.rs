//! `raftkv snapshot save`: a backup of one member's applied state through
//! etcd's `Maintenance/Snapshot`, written aside, fsynced, verified (every
//! checksum of raftkv's snapshot format, and etcd's SHA-256 trailer) and
//! only then given its name. The file is what `etcdctl snapshot save`
//! writes from the same member.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::proto::etcdserverpb::SnapshotRequest;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;

use super::{Client, ClientError};

/// What a saved snapshot holds.
pub struct Saved {
    pub path: PathBuf,
    pub bytes: u64,
    pub revision: i64,
    pub keys: usize,
}

impl Client {
    /// Saves the connected member's snapshot at `path`.
    pub async fn save_snapshot(&mut self, path: &Path) -> Result<Saved, ClientError> {
        let partial = path.with_extension("part");
        let io = |source: std::io::Error| ClientError::Io { path: partial.clone(), source };
        let mut file = std::fs::File::create(&partial).map_err(io)?;
        let mut stream = MaintenanceClient::new(self.channel.clone()).snapshot(SnapshotRequest {}).await?.into_inner();
        let mut bytes = 0u64;
        let received: Result<(), ClientError> = async {
            while let Some(part) = stream.message().await? {
                file.write_all(&part.blob).map_err(io)?;
                bytes += part.blob.len() as u64;
            }
            file.sync_all().map_err(io)
        }
        .await;
        if let Err(e) = received {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        let loaded = match crate::snapshot::file::read_backup(&partial) {
            Ok(loaded) => loaded,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(ClientError::Corrupt(format!("the snapshot received does not verify: {e}")));
            }
        };
        std::fs::rename(&partial, path).map_err(io)?;
        // The records are the history; the live keys are what it ends in.
        let revision = loaded.header.revision;
        let keys = crate::kv::KvStore::from_snapshot(&loaded.header, loaded.records).len();
        Ok(Saved { path: path.to_path_buf(), bytes, revision, keys })
    }
}
