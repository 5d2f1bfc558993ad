//! The snapshot directory: where snapshot files live and how one becomes
//! durable.
//!
//! A file is named `<term>-<index>.snap` (16 hex digits each, as etcd names
//! its snapshots). It is written under a `.tmp` name, fsynced, renamed, and
//! the directory fsynced, so a crash leaves either no file or a whole one;
//! leftovers of an interrupted write or transfer are removed on open.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::file::{self, Loaded};
use super::{Result, SnapshotError};
use crate::proto::mvccpb::KeyValue;
use crate::proto::{SnapshotHeader, SnapshotMeta};

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

/// A snapshot file found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub term: u64,
    pub path: PathBuf,
}

#[derive(Debug)]
pub struct SnapshotDir {
    path: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.into(), error: source }
}

impl SnapshotDir {
    /// Opens (creating) the directory and removes unfinished files.
    pub fn open(path: impl Into<PathBuf>) -> Result<SnapshotDir> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(io(&path))?;
        for entry in fs::read_dir(&path).map_err(io(&path))? {
            let entry = entry.map_err(io(&path))?;
            if entry.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                tracing::info!(file = %entry.path().display(), "removing an unfinished snapshot file");
                fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        Ok(SnapshotDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the snapshot at `index` of `term` lives.
    pub fn file_path(&self, index: u64, term: u64) -> PathBuf {
        self.path.join(format!("{term:016x}-{index:016x}{SUFFIX}"))
    }

    /// A fresh temporary name for a file being written or received.
    pub fn temp_path(&self, index: u64, term: u64) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nonce = NEXT.fetch_add(1, Ordering::Relaxed);
        self.path.join(format!("{term:016x}-{index:016x}.{}-{nonce}{TMP_SUFFIX}", std::process::id()))
    }

    /// Every complete snapshot file, newest (highest index) first.
    pub fn list(&self) -> Result<Vec<SnapshotFile>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io(&self.path))? {
            let entry = entry.map_err(io(&self.path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(SUFFIX) else { continue };
            let parsed = stem
                .split_once('-')
                .and_then(|(t, i)| Some((u64::from_str_radix(t, 16).ok()?, u64::from_str_radix(i, 16).ok()?)));
            match parsed {
                Some((term, index)) => files.push(SnapshotFile { index, term, path: entry.path() }),
                None => tracing::warn!(file = %entry.path().display(), "ignoring a file not named like a snapshot"),
            }
        }
        files.sort_by_key(|f| std::cmp::Reverse((f.index, f.term)));
        Ok(files)
    }

    /// Writes a snapshot durably and returns its path and size in bytes.
    pub fn save<'a>(
        &self,
        header: &SnapshotHeader,
        records: impl IntoIterator<Item = &'a KeyValue>,
    ) -> Result<(PathBuf, u64)> {
        let meta = header.meta.as_ref().expect("a snapshot header names its point");
        let tmp = self.temp_path(meta.index, meta.term);
        let written = (|| {
            let mut f = SyncedAsWritten { file: File::create(&tmp)?, unsynced: 0 };
            let size = file::write(&mut f, header, records)?;
            f.file.sync_all()?;
            Ok(size)
        })();
        let size = written.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            SnapshotError::Io { path: tmp.clone(), error: source }
        })?;
        let path = self.publish(&tmp, meta)?;
        Ok((path, size))
    }

    /// Verifies a received (already fsynced) temporary file, then gives it its
    /// final name. A file that fails verification is removed.
    pub fn accept(&self, tmp: &Path, expected: &SnapshotMeta) -> Result<(PathBuf, Loaded)> {
        let checked = file::read(tmp).and_then(|loaded| match &loaded.header.meta {
            Some(meta) if meta.index == expected.index && meta.term == expected.term => Ok(loaded),
            other => Err(SnapshotError::Corrupt {
                path: tmp.into(),
                offset: 0,
                reason: format!(
                    "header covers {:?}, offer was index {} term {}",
                    other.as_ref().map(|m| (m.index, m.term)),
                    expected.index,
                    expected.term
                ),
            }),
        });
        match checked {
            Ok(loaded) => Ok((self.publish(tmp, expected)?, loaded)),
            Err(e) => {
                let _ = fs::remove_file(tmp);
                Err(e)
            }
        }
    }

    /// Renames a durable temporary file into place and syncs the directory.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> Result<PathBuf> {
        let path = self.file_path(meta.index, meta.term);
        fs::rename(tmp, &path).map_err(io(&path))?;
        File::open(&self.path).and_then(|d| d.sync_all()).map_err(io(&self.path))?;
        Ok(path)
    }

    /// Removes the snapshots older than `index`.
    pub fn remove_older_than(&self, index: u64) -> Result<()> {
        for old in self.list()?.into_iter().filter(|f| f.index < index) {
            tracing::debug!(file = %old.path.display(), "removing an old snapshot");
            fs::remove_file(&old.path).map_err(io(&old.path))?;
        }
        Ok(())
    }
}

/// Most bytes a snapshot file holds unsynced while it is written.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A file synced every [`SYNC_EVERY_BYTES`] as it is written. Left to the
/// kernel, a snapshot's hundreds of megabytes sit dirty in the page cache and
/// are written back in one burst that the log's next synced write waits
/// behind (measured: 100-500 ms stalls of every write); a few megabytes at a
/// time keeps each such wait short.
struct SyncedAsWritten {
    file: File,
    unsynced: u64,
}

impl std::io::Write for SyncedAsWritten {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(index: u64, term: u64) -> SnapshotHeader {
        SnapshotHeader {
            meta: Some(SnapshotMeta { index, term, conf: None }),
            revision: 1,
            compact_revision: 1,
            membership: None,
            alarms: Vec::new(),
            leases: Vec::new(),
            auth: None,
        }
    }

    #[test]
    fn saves_lists_newest_first_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        for (index, term) in [(10, 1), (30, 2), (20, 2)] {
            dir.save(&header(index, term), []).unwrap();
        }
        let indexes: Vec<u64> = dir.list().unwrap().iter().map(|f| f.index).collect();
        assert_eq!(indexes, [30, 20, 10]);
        dir.remove_older_than(20).unwrap();
        let indexes: Vec<u64> = dir.list().unwrap().iter().map(|f| f.index).collect();
        assert_eq!(indexes, [30, 20]);
        assert_eq!(file::read(&dir.file_path(30, 2)).unwrap().header, header(30, 2));
    }

    #[test]
    fn unfinished_files_are_removed_on_open_and_bad_transfers_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        let partial = dir.temp_path(5, 1);
        fs::write(&partial, b"RAFTKVSN half a file").unwrap();
        let err = dir.accept(&partial, &SnapshotMeta { index: 5, term: 1, conf: None }).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        assert!(!partial.exists(), "a refused transfer is removed");
        fs::write(dir.temp_path(6, 1), b"left by a crash").unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
