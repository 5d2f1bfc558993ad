//! The lines a long-running child process (a watch) prints, read on a
//! thread of their own so a test can wait for them with a bound.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `child`'s stdout (which must be piped) from now on.
    pub fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: Vec::new() }
    }

    /// Waits until `n` lines in all were read, each within `limit` of the
    /// one before, and returns what was read (fewer if the child went quiet).
    pub fn until(&mut self, n: usize, limit: Duration) -> Vec<String> {
        while self.seen.len() < n {
            match self.rx.recv_timeout(limit) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        self.seen.clone()
    }
}
