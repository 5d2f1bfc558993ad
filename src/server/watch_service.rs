//! etcd's Watch service: one bidirectional stream per client, carrying many
//! watchers, each over a key, a range or a prefix.
//!
//! Invariants:
//! - A watcher reports every change to its keys exactly once, in revision
//!   order, from its start revision on, with no gap: its cursor `next` moves
//!   only past revisions it has reported.
//! - Events are read from the member's applied state (the O(1) copy the node
//!   publishes after each turn), so every member serves watches, and a member
//!   without a leader sends nothing it has not applied.
//! - A slow client slows only its own stream. The node publishes one latest
//!   state, never a queue; a stream that could not send for a while catches
//!   up from history. A watcher whose cursor falls below the compaction point
//!   is cancelled with etcd's compacted response.
//! - The stream and its watchers go when the client goes: nothing outlives
//!   the task that serves the stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::shared::Shared;
use crate::kv::{Change, KeyRange, KvStore};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::{Event, event::EventType};

/// The watch id of a progress response, which answers for every watcher.
const PROGRESS_WATCH_ID: i64 = -1;

/// Responses queued per stream before the stream waits for its client.
const STREAM_QUEUE: usize = 16;

pub struct WatchService(pub Arc<Shared>);

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(STREAM_QUEUE);
        let stream = WatchStream { shared: self.0.clone(), out, watchers: BTreeMap::new(), next_id: 0 };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

struct Watcher {
    range: KeyRange,
    /// The first revision not yet reported.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// Whether anything was sent since the last progress tick.
    quiet: bool,
}

/// The client went away: the stream ends.
struct Gone;

struct WatchStream {
    shared: Arc<Shared>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    /// The next id given to a watcher whose client did not choose one (etcd
    /// counts from 0 on each stream).
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut requests: Streaming<WatchRequest>) {
        let mut applied = self.shared.applied.clone();
        let mut progress = tokio::time::interval(self.shared.settings.watch_progress_notify_interval);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        progress.tick().await; // the first tick is immediate
        loop {
            let step = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    // The client closed its side, or the stream broke.
                    Ok(None) | Err(_) => return,
                },
                changed = applied.changed() => match changed {
                    Ok(()) => {
                        let kv = applied.borrow_and_update().clone();
                        self.deliver(&kv).await
                    }
                    Err(_) => {
                        // The node stopped: the client library retries elsewhere.
                        let _ = self.out.send(Err(Status::unavailable("etcdserver: server stopped"))).await;
                        return;
                    }
                },
                _ = progress.tick() => self.progress_notify().await,
                _ = self.out.closed() => return,
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                // As etcd: cancelling an unknown watcher answers nothing.
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let revision = self.current().revision();
                    self.send(WatchResponse { watch_id: cancel.watch_id, canceled: true, ..self.response(revision) })
                        .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Report everything applied first, so the revision promised
                // is one every watcher has been sent up to.
                let kv = self.current();
                self.deliver(&kv).await?;
                self.send(WatchResponse { watch_id: PROGRESS_WATCH_ID, ..self.response(kv.revision()) }).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let kv = self.current();
        let id = if create.watch_id != 0 { create.watch_id } else { self.unused_id() };
        let refuse = |id: i64, reason: String| WatchResponse {
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..self.response(kv.revision())
        };
        if self.watchers.contains_key(&id) {
            let reason = "mvcc: duplicate watch ID provided on the WatchStream".to_string();
            return self.send(refuse(id, reason)).await;
        }
        let range = match KeyRange::new(&create.key, &create.range_end) {
            Ok(range) => range,
            Err(e) => return self.send(refuse(id, e.to_string())).await,
        };
        let filters = |f: FilterType| create.filters.contains(&(f as i32));
        let next = if create.start_revision > 0 { create.start_revision } else { kv.revision() + 1 };
        self.send(WatchResponse { watch_id: id, created: true, ..self.response(kv.revision()) }).await?;
        if next < kv.compact_revision() {
            return self.send(self.compacted(id, &kv)).await;
        }
        let watcher = Watcher {
            range,
            next,
            prev_kv: create.prev_kv,
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            quiet: true,
        };
        self.watchers.insert(id, watcher);
        // History from the start revision, if it is in the past.
        self.deliver(&kv).await
    }

    /// Sends every watcher what `kv` holds for it beyond its cursor.
    async fn deliver(&mut self, kv: &KvStore) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watchers.get_mut(&id) else { continue };
            if w.next > kv.revision() {
                continue;
            }
            if w.next < kv.compact_revision() {
                self.watchers.remove(&id);
                self.send(self.compacted(id, kv)).await?;
                continue;
            }
            let events: Vec<Event> = kv
                .history()
                .changes_since(w.next, &w.range)
                .filter(|c| if c.kv.version == 0 { !w.no_delete } else { !w.no_put })
                .map(|c| event(c, w.prev_kv))
                .collect();
            w.next = kv.revision() + 1;
            if events.is_empty() {
                continue;
            }
            w.quiet = false;
            let fragment = w.fragment;
            let response = WatchResponse { watch_id: id, events, ..self.response(kv.revision()) };
            if fragment {
                for part in fragments(response, self.shared.settings.max_request_bytes) {
                    self.send(part).await?;
                }
            } else {
                self.send(response).await?;
            }
        }
        Ok(())
    }

    /// Tells each quiet watcher that asked for progress how far it is.
    async fn progress_notify(&mut self) -> Result<(), Gone> {
        let kv = self.current();
        self.deliver(&kv).await?;
        let quiet: Vec<i64> =
            self.watchers.iter().filter(|(_, w)| w.progress_notify && w.quiet).map(|(&id, _)| id).collect();
        for w in self.watchers.values_mut() {
            w.quiet = true;
        }
        for id in quiet {
            self.send(WatchResponse { watch_id: id, ..self.response(kv.revision()) }).await?;
        }
        Ok(())
    }

    fn current(&self) -> KvStore {
        self.shared.applied.borrow().clone()
    }

    fn unused_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn response(&self, revision: i64) -> WatchResponse {
        let term = self.shared.status.borrow().term;
        WatchResponse { header: Some(self.shared.header(revision, term)), ..Default::default() }
    }

    /// etcd's answer to a watcher whose start is below the compaction point.
    fn compacted(&self, id: i64, kv: &KvStore) -> WatchResponse {
        WatchResponse {
            watch_id: id,
            canceled: true,
            compact_revision: kv.compact_revision(),
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..self.response(kv.revision())
        }
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }
}

fn event(change: Change<'_>, with_prev: bool) -> Event {
    let kind = if change.kv.version == 0 { EventType::Delete } else { EventType::Put };
    Event {
        r#type: kind as i32,
        kv: Some(change.kv.clone()),
        prev_kv: if with_prev { change.prev.cloned() } else { None },
    }
}

/// Splits a response whose events exceed `limit` bytes into several, each
/// but the last marked `fragment` (etcd's `fragment` option). A single event
/// larger than the limit goes alone.
fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if response.encoded_len() <= limit {
        return vec![response];
    }
    let WatchResponse { events, .. } = &response;
    let mut parts: Vec<Vec<Event>> = vec![Vec::new()];
    let mut size = 0;
    for e in events {
        let len = e.encoded_len() + 8;
        let last = parts.last_mut().expect("one part at least");
        if !last.is_empty() && size + len > limit {
            parts.push(Vec::new());
            size = 0;
        }
        parts.last_mut().expect("one part at least").push(e.clone());
        size += len;
    }
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, events)| WatchResponse { events, fragment: i + 1 < count, ..response.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn put_event(i: usize, size: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue { key: format!("k{i}").into(), value: vec![b'v'; size].into(), ..Default::default() }),
            prev_kv: None,
        }
    }

    #[test]
    fn a_large_response_is_split_into_fragments_that_keep_every_event_in_order() {
        let events: Vec<Event> = (0..10).map(|i| put_event(i, 100)).collect();
        let response = WatchResponse { watch_id: 3, events: events.clone(), ..Default::default() };
        let parts = fragments(response.clone(), 350);
        assert!(parts.len() > 1);
        assert!(parts.iter().rev().skip(1).all(|p| p.fragment) && !parts.last().unwrap().fragment);
        assert!(parts.iter().all(|p| p.watch_id == 3 && !p.events.is_empty()));
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response], "small: one piece, not a fragment");
    }
}
