//! Disaster recovery, for when a quorum is gone for good:
//!
//! - [`restore`] seeds a new member's data directory from a saved snapshot
//!   (`raftkv snapshot save`, or `etcdctl snapshot save` against raftkv: the
//!   file is raftkv's checksummed snapshot format). Every member of the new
//!   cluster is restored from the same file with the same flags, so all
//!   start from the same snapshot at the same index, with the new cluster's
//!   members as configuration and member table.
//! - [`force_new_cluster`] turns one surviving member into a one-member
//!   cluster holding everything it had committed: its uncommitted tail is
//!   dropped and a configuration of itself alone is committed after it, so
//!   it elects itself and the others are removed for good (their data
//!   directories are refused if they come back). The cluster then grows
//!   back with `member add`.

use std::path::Path;

use super::config::Settings;
use super::{ServerError, membership};
use crate::proto::{ConfChange, ConfState, Entry, HardState, SnapshotMeta};
use crate::snapshot::{SnapshotDir, file};
use crate::storage::{LogStore, LogWrite, RocksStore};

/// What a restore wrote.
pub struct Restored {
    pub index: u64,
    pub revision: i64,
    pub keys: usize,
}

/// Writes a new data directory for `settings`' member from the snapshot
/// file at `from`. Refuses a data directory that already holds anything.
/// The directory is written beside its place and renamed into it once
/// complete, so a restore that fails (or is killed) leaves no partial data
/// directory that a server could start from.
pub fn restore(from: &Path, settings: &Settings) -> Result<Restored, ServerError> {
    let loaded = file::read_backup(from)?;
    let dir = &settings.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ServerError::Restore(format!(
            "data directory {} is not empty: restore into a new one",
            dir.display()
        )));
    }
    let mut staging = dir.as_os_str().to_owned();
    staging.push(".restoring");
    let staging = std::path::PathBuf::from(staging);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServerError::DataDir { path, source }
    };
    if staging.exists() {
        // Left by a restore that was killed: never started from.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let written = write_restored(&staging, loaded, settings);
    let restored = match written {
        Ok(restored) => restored,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io(dir))?;
    }
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    }
    Ok(restored)
}

/// Writes the restored member's data directory at `dir`.
fn write_restored(dir: &Path, loaded: file::Loaded, settings: &Settings) -> Result<Restored, ServerError> {
    let old = loaded.header.meta.clone().unwrap_or_default();
    let conf = ConfState::with_voters(settings.members.iter().map(|m| m.id));
    // The saved point's index and term, so every member restored from this
    // file starts from the same snapshot; a new leader's term is above it.
    let meta = SnapshotMeta { index: old.index.max(1), term: old.term.max(1), conf: Some(conf) };
    let mut header = loaded.header.clone();
    header.meta = Some(meta.clone());
    header.membership = Some(membership::initial(&settings.members));
    let snapshots = SnapshotDir::open(dir.join("snap"))?;
    snapshots.save(&header, &loaded.records)?;
    let raft_dir = dir.join("raft");
    std::fs::create_dir_all(&raft_dir).map_err(|source| ServerError::DataDir { path: raft_dir.clone(), source })?;
    let mut store = RocksStore::open(&raft_dir)?;
    let hard_state = HardState { term: meta.term, vote: 0, commit: meta.index };
    store.persist(LogWrite { snapshot: Some(&meta), entries: &[], hard_state: Some(&hard_state), sync: true })?;
    store.set_base_members(header.membership.as_ref().expect("set above"))?;
    store.set_identity(settings.cluster_id, settings.member_id)?;
    // The records are the history; the live keys are what it ends in.
    let keys = crate::kv::KvStore::from_snapshot(&header, loaded.records).len();
    Ok(Restored { index: meta.index, revision: header.revision, keys })
}

/// Commits, after everything this member had committed, a configuration of
/// itself alone. Blocking; runs before the member starts.
pub fn force_new_cluster(store: &mut RocksStore, me: u64) -> Result<(), ServerError> {
    let state = store.initial_state()?;
    let commit = state.hard_state.commit.max(state.offset_index);
    let term = state.hard_state.term.max(1);
    let conf = ConfState::with_voters([me]);
    let entry = Entry::conf_change(commit + 1, term, &ConfChange { conf: Some(conf), context: Default::default() });
    // The entry replaces any uncommitted tail: what was never committed
    // was never acknowledged.
    let dropped = store.last_index().saturating_sub(commit);
    let hard_state = HardState { term, vote: state.hard_state.vote, commit: commit + 1 };
    let entries = [entry];
    store.persist(LogWrite { snapshot: None, entries: &entries, hard_state: Some(&hard_state), sync: true })?;
    tracing::warn!(
        committed = commit,
        dropped_uncommitted = dropped,
        "--force-new-cluster: this member is now a cluster of one; grow it back with `member add`"
    );
    Ok(())
}
