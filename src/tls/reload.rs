//! A value loaded from files and loaded again when one of them changes
//! (its modification time or size), looked at on every use: uses are TLS
//! handshakes, rare enough that a `stat` per file each time costs nothing.
//!
//! Invariant: a use always gets a value that loaded completely. A failed
//! load (a file half written during a rotation, a key that does not match
//! its certificate yet) keeps the value before and is logged once; the next
//! change of the files tries again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::TlsError;

type Stamp = Option<(SystemTime, u64)>;

pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: fn(&[PathBuf]) -> Result<T, TlsError>,
    state: Mutex<(Vec<Stamp>, Arc<T>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("what", &self.what).field("paths", &self.paths).finish()
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

impl<T> Reloading<T> {
    /// Loads the value now: a setting that does not load is an error at start.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: fn(&[PathBuf]) -> Result<T, TlsError>,
    ) -> Result<Reloading<T>, TlsError> {
        let seen = stamps(&paths);
        let value = Arc::new(load(&paths)?);
        Ok(Reloading { what, paths, load, state: Mutex::new((seen, value)) })
    }

    /// The value as the files are now.
    pub fn current(&self) -> Arc<T> {
        let now = stamps(&self.paths);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now != state.0 {
            state.0 = now;
            match (self.load)(&self.paths) {
                Ok(value) => {
                    tracing::info!(files = ?self.paths, "TLS {} reloaded", self.what);
                    state.1 = Arc::new(value);
                }
                Err(e) => tracing::warn!("TLS {} changed but does not load, the previous one stays: {e}", self.what),
            }
        }
        state.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(paths: &[PathBuf]) -> Result<u32, TlsError> {
        let text =
            std::fs::read_to_string(&paths[0]).map_err(|source| TlsError::Io { path: paths[0].clone(), source })?;
        text.trim().parse().map_err(|_| TlsError::Settings(format!("`{text}` is not a number")))
    }

    #[test]
    fn a_change_that_does_not_load_keeps_the_value_before_until_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let value = Reloading::new("number", vec![path.clone()], number).unwrap();
        assert_eq!(*value.current(), 1);
        // Half written, as a rotation caught in the middle would be.
        std::fs::write(&path, "x").unwrap();
        assert_eq!(*value.current(), 1);
        assert_eq!(*value.current(), 1, "a failed load is not retried until the files change again");
        std::fs::write(&path, "22").unwrap();
        assert_eq!(*value.current(), 22);
        // A file that went away keeps the last value too.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*value.current(), 22);
    }

    #[test]
    fn a_setting_that_does_not_load_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "not a number").unwrap();
        assert!(Reloading::new("number", vec![path], number).is_err());
    }
}
