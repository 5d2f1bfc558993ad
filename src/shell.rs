//! `raftkv shell`: an interactive prompt over a cluster.
//!
//! Commands: `put KEY VALUE`, `get KEY`, `del KEY`, `scan [PREFIX]`,
//! `watch [--prefix] [--rev N] KEY`, `status`, `help`, `exit`. Values may
//! contain spaces (everything after the key). An error is printed and the
//! prompt goes on.
//!
//! Input is read on a thread of its own and handed over line by line, so a
//! watch can print changes as they come and still notice the line that
//! ends it.

use std::io::{BufRead, Write};

use tokio::sync::mpsc;

use crate::client::{Client, ClientError, ResumingWatch, output};
use crate::kv::prefix_end;
use crate::proto::etcdserverpb::{DeleteRangeRequest, RangeRequest, WatchCreateRequest};

const HELP: &str = "\
commands:
  put KEY VALUE    write KEY (VALUE is the rest of the line)
  get KEY          read KEY (linearizable)
  del KEY          delete KEY
  scan [PREFIX]    every key with PREFIX (all keys without one)
  watch [--prefix] [--rev N] KEY
                   print changes to KEY (or every key with the prefix KEY,
                   from revision N) as they apply; Enter ends the watch
  status           this endpoint's member, leader, term and revision
  help             this text
  exit             leave (Ctrl-D too)";

/// Runs the prompt on `input` until `exit` or end of input.
pub async fn run(
    endpoints: &[String],
    input: impl BufRead + Send + 'static,
    mut out: impl Write,
) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoints).await?;
    let _ = writeln!(out, "connected to {}; type `help` for commands", client.endpoint());
    let mut lines = read_lines(input);
    loop {
        let _ = write!(out, "raftkv> ");
        let _ = out.flush();
        let Some(line) = lines.recv().await else { break };
        let line = line.trim();
        let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let result = match command {
            "" => Ok(()),
            "exit" | "quit" => break,
            "help" => writeln!(out, "{HELP}").map_err(|_| ()).or(Ok(())),
            "put" => match rest.split_once(char::is_whitespace) {
                Some((key, value)) => client.put(key.to_string(), value.to_string()).await.map(|_| {
                    let _ = writeln!(out, "OK");
                }),
                None => {
                    let _ = writeln!(out, "usage: put KEY VALUE");
                    Ok(())
                }
            },
            "get" => {
                let req = RangeRequest { key: rest.to_string().into(), ..Default::default() };
                client.range(req).await.map(|r| {
                    let _ = match r.kvs.first() {
                        Some(kv) => writeln!(out, "{}", String::from_utf8_lossy(&kv.value)),
                        None => writeln!(out, "(not found)"),
                    };
                })
            }
            "del" => {
                let req = DeleteRangeRequest { key: rest.to_string().into(), ..Default::default() };
                client.delete(req).await.map(|r| {
                    let _ = writeln!(out, "{}", r.deleted);
                })
            }
            "scan" => {
                let (key, range_end) = if rest.is_empty() {
                    (vec![0], vec![0])
                } else {
                    (rest.as_bytes().to_vec(), prefix_end(rest.as_bytes()))
                };
                let req = RangeRequest { key: key.into(), range_end: range_end.into(), ..Default::default() };
                client.range(req).await.map(|r| {
                    for kv in r.kvs {
                        let _ = writeln!(
                            out,
                            "{} = {}",
                            String::from_utf8_lossy(&kv.key),
                            String::from_utf8_lossy(&kv.value)
                        );
                    }
                })
            }
            "watch" => match watch_request(rest) {
                Ok(create) => {
                    let mut watch = ResumingWatch::new(endpoints, create);
                    watch_until_input(&mut watch, &mut lines, &mut out).await
                }
                Err(usage) => {
                    let _ = writeln!(out, "{usage}");
                    Ok(())
                }
            },
            "status" => Client::status_of(client.endpoint()).await.map(|s| {
                let h = s.header.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "member {:x}  leader {:x}  term {}  commit {}  applied {}  revision {}",
                    h.member_id, s.leader, s.raft_term, s.raft_index, s.raft_applied_index, h.revision
                );
            }),
            other => {
                let _ = writeln!(out, "unknown command `{other}`; type `help`");
                Ok(())
            }
        };
        if let Err(e) = result {
            let _ = writeln!(out, "error: {e}");
        }
    }
    Ok(())
}

/// The lines of `input`, read on a thread of their own (reading blocks).
fn read_lines(input: impl BufRead + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in input.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The watch `watch [--prefix] [--rev N] KEY` asks for, or its usage.
fn watch_request(args: &str) -> Result<WatchCreateRequest, &'static str> {
    const USAGE: &str = "usage: watch [--prefix] [--rev N] KEY";
    let (mut prefix, mut start_revision, mut key) = (false, 0, None);
    let mut words = args.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "--prefix" => prefix = true,
            "--rev" => start_revision = words.next().and_then(|n| n.parse::<i64>().ok()).ok_or(USAGE)?,
            _ if key.is_none() && !word.starts_with("--") => key = Some(word.to_string()),
            _ => return Err(USAGE),
        }
    }
    let key = key.ok_or(USAGE)?;
    let range_end = if prefix { prefix_end(key.as_bytes()) } else { Vec::new() };
    Ok(WatchCreateRequest { key: key.into(), range_end: range_end.into(), start_revision, ..Default::default() })
}

/// Prints the watch's changes until a line of input (or its end) comes.
async fn watch_until_input(
    watch: &mut ResumingWatch,
    lines: &mut mpsc::UnboundedReceiver<String>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let _ = writeln!(out, "watching; press Enter to stop");
    loop {
        tokio::select! {
            response = watch.next() => {
                let _ = write!(out, "{}", output::simple(&response?));
                let _ = out.flush();
            }
            _ = lines.recv() => return Ok(()),
        }
    }
}
