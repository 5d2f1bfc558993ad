//! `raftkv shell`: an interactive prompt over a cluster.
//!
//! Commands: `put KEY VALUE`, `get KEY`, `del KEY`, `scan [PREFIX]`, `status`,
//! `help`, `exit`. Values may contain spaces (everything after the key). An
//! error is printed and the prompt goes on.

use std::io::{BufRead, Write};

use crate::client::{Client, ClientError};
use crate::kv::prefix_end;
use crate::proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};

const HELP: &str = "\
commands:
  put KEY VALUE    write KEY (VALUE is the rest of the line)
  get KEY          read KEY (linearizable)
  del KEY          delete KEY
  scan [PREFIX]    every key with PREFIX (all keys without one)
  status           this endpoint's member, leader, term and revision
  help             this text
  exit             leave (Ctrl-D too)";

/// Runs the prompt on `input` until `exit` or end of input.
pub async fn run(endpoints: &[String], input: impl BufRead, mut out: impl Write) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoints).await?;
    let _ = writeln!(out, "connected to {}; type `help` for commands", client.endpoint());
    let mut lines = input.lines();
    loop {
        let _ = write!(out, "raftkv> ");
        let _ = out.flush();
        let Some(Ok(line)) = lines.next() else { break };
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
