//! Watch: changes to keys, ranges and prefixes streamed to clients as they
//! are applied. This module is the engine, one task per stream carrying
//! many watchers; [`grpc`] serves it as etcd's Watch service and [`http`] as
//! newline-delimited JSON for curl.
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
//!   up from history, at most [`MAX_REVISIONS_PER_RESPONSE`] revisions per
//!   response (etcd's batch limit), so what one watcher holds at a time is
//!   bounded however far behind it is. A watcher whose cursor falls below
//!   the compaction point is cancelled with etcd's compacted response.
//! - The stream and its watchers go when the client goes: nothing outlives
//!   the task that serves the stream. An idle stream waits on the published
//!   state and its progress timer only: no work while nothing changes.

pub mod grpc;
pub mod http;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::auth::Caller;
use super::shared::Shared;
use crate::kv::{Change, KeyRange, KvStore};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::{Event, event::EventType};

/// The watch id of a progress response, which answers for every watcher.
const PROGRESS_WATCH_ID: i64 = -1;

/// Responses queued per stream before the stream waits for its client.
const STREAM_QUEUE: usize = 16;

/// The most revisions one response carries (etcd's `watchBatchMaxRevs`): a
/// watcher far behind catches up in several responses, never one unbounded
/// one. A revision's events are never split between responses (except by
/// `fragment`, which the client asked for).
pub const MAX_REVISIONS_PER_RESPONSE: usize = 1000;

/// The most revisions one batch looks at: a watcher of one key far behind,
/// whose revisions are mostly other keys', catches up in bounded scans with
/// the stream yielding between them, not in one scan that holds a worker.
const MAX_REVISIONS_SCANNED: i64 = 10_000;

/// How many watch streams and watchers a member has open (etcd's
/// `watch_stream_total` and `watcher_total`): what shows that a client's
/// going took its watchers with it.
#[derive(Debug, Default)]
pub struct Gauges {
    streams: AtomicUsize,
    watchers: AtomicUsize,
}

impl Gauges {
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// What a stream sends: responses, or the error that ends it.
pub type Responses = mpsc::Receiver<Result<WatchResponse, Status>>;

/// Serves one watch stream whose client sends `requests`, on a task of its
/// own, until the client goes (its requests end or it drops the receiver)
/// or the member stops (the last item is then `Unavailable`).
/// Each watcher `caller` creates must be allowed to read its keys then.
pub fn serve<R>(shared: Arc<Shared>, caller: Caller, requests: R) -> Responses
where
    R: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
{
    let (out, responses) = mpsc::channel(STREAM_QUEUE);
    shared.watches.streams.fetch_add(1, Ordering::Relaxed);
    let stream = WatchStream { shared, caller, out, watchers: BTreeMap::new(), next_id: 0 };
    tokio::spawn(stream.run(requests));
    responses
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

impl Watcher {
    /// The watcher's next response from `kv` (events of at most
    /// [`MAX_REVISIONS_PER_RESPONSE`] revisions, found among at most
    /// [`MAX_REVISIONS_SCANNED`]) and the cursor after it.
    fn batch(&self, kv: &KvStore) -> (Vec<Event>, i64) {
        let mut events = Vec::new();
        let (mut revisions, mut last) = (0, None);
        let wanted = |c: &Change<'_>| if c.kv.version == 0 { !self.no_delete } else { !self.no_put };
        let to = kv.revision().min(self.next + MAX_REVISIONS_SCANNED - 1);
        for change in kv.history().changes_in(self.next..=to, &self.range, self.prev_kv).filter(wanted) {
            let revision = change.kv.mod_revision;
            if last != Some(revision) {
                if revisions == MAX_REVISIONS_PER_RESPONSE {
                    return (events, revision);
                }
                revisions += 1;
                last = Some(revision);
            }
            events.push(event(change, self.prev_kv));
        }
        (events, to + 1)
    }
}

/// The client went away: the stream ends.
struct Gone;

struct WatchStream {
    shared: Arc<Shared>,
    /// Who opened the stream (its token's user, or its certificate's).
    caller: Caller,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    /// The next id given to a watcher whose client did not choose one (etcd
    /// counts from 0 on each stream).
    next_id: i64,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let gauges = &self.shared.watches;
        gauges.watchers.fetch_sub(self.watchers.len(), Ordering::Relaxed);
        gauges.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WatchStream {
    async fn run<R>(mut self, mut requests: R)
    where
        R: Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        let mut applied = self.shared.applied.clone();
        let mut progress = tokio::time::interval(self.shared.settings.watch_progress_notify_interval);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        progress.tick().await; // the first tick is immediate
        loop {
            let step = tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => self.handle(request).await,
                    // The client closed its side, or the stream broke.
                    None | Some(Err(_)) => return,
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
                if self.remove(cancel.watch_id) {
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
        // As etcd: a watch the caller may not read is refused with the
        // invalid watch id (-1), so the client library ends just that watch.
        if let Err(e) = self.shared.check_read(&self.caller, &create.key, &create.range_end) {
            return self.send(refuse(-1, e.to_string())).await;
        }
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
        self.shared.watches.watchers.fetch_add(1, Ordering::Relaxed);
        // History from the start revision, if it is in the past.
        self.deliver(&kv).await
    }

    /// Sends every watcher what `kv` holds for it beyond its cursor, in
    /// batches, until each is at `kv`'s revision.
    async fn deliver(&mut self, kv: &KvStore) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            while let Some(w) = self.watchers.get_mut(&id) {
                if w.next > kv.revision() {
                    break;
                }
                if w.next < kv.compact_revision() {
                    self.remove(id);
                    self.send(self.compacted(id, kv)).await?;
                    break;
                }
                let (events, next) = w.batch(kv);
                w.next = next;
                if events.is_empty() {
                    if next <= kv.revision() {
                        // A long scan with nothing to send, and more to scan: let others run.
                        tokio::task::yield_now().await;
                    }
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

    /// Forgets watcher `id`; whether there was one.
    fn remove(&mut self, id: i64) -> bool {
        let removed = self.watchers.remove(&id).is_some();
        if removed {
            self.shared.watches.watchers.fetch_sub(1, Ordering::Relaxed);
        }
        removed
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

    fn watcher(range: KeyRange, next: i64) -> Watcher {
        let (prev_kv, no_put, no_delete, progress_notify, fragment, quiet) = (true, false, false, false, false, true);
        Watcher { range, next, prev_kv, no_put, no_delete, progress_notify, fragment, quiet }
    }

    #[test]
    fn a_watcher_far_behind_catches_up_in_bounded_batches_that_miss_nothing() {
        let mut kv = KvStore::new();
        let total = 2 * MAX_REVISIONS_PER_RESPONSE + 10;
        for i in 0..total {
            // Two keys, so a revision's change and the one before it differ.
            let req = crate::proto::etcdserverpb::PutRequest {
                key: format!("k{}", i % 2).into(),
                value: i.to_string().into(),
                ..Default::default()
            };
            kv.apply(&crate::kv::put_command(req)).unwrap();
        }
        let mut w = watcher(KeyRange::From("k".into()), 1);
        let mut seen = Vec::new();
        while w.next <= kv.revision() {
            let (events, next) = w.batch(&kv);
            assert!(!events.is_empty() && events.len() <= MAX_REVISIONS_PER_RESPONSE, "{} events", events.len());
            let first = events[0].kv.as_ref().unwrap().mod_revision;
            if !seen.is_empty() {
                assert_eq!(first, w.next, "a batch starts where the last one stopped");
            }
            seen.extend(events);
            w.next = next;
        }
        let revisions: Vec<i64> = seen.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
        // The store's first write is revision 2, as in etcd.
        assert_eq!(revisions, (2..=total as i64 + 1).collect::<Vec<_>>(), "every revision once, in order");
        let prev = seen[5].prev_kv.as_ref().expect("prev_kv asked for");
        assert_eq!(prev.mod_revision, seen[5].kv.as_ref().unwrap().mod_revision - 2, "the key's record before");
    }

    #[test]
    fn a_watcher_of_one_key_far_behind_scans_in_bounded_steps_and_misses_nothing() {
        let mut kv = KvStore::new();
        let total = 3 * MAX_REVISIONS_SCANNED + 5;
        for i in 0..total {
            // "mine" changes only at a few revisions among many of others'.
            let key = if i % 9_000 == 0 { "mine".to_string() } else { format!("other{}", i % 7) };
            let req = crate::proto::etcdserverpb::PutRequest {
                key: key.into(),
                value: i.to_string().into(),
                ..Default::default()
            };
            kv.apply(&crate::kv::put_command(req)).unwrap();
        }
        let mut w = watcher(KeyRange::One("mine".into()), 1);
        let (mut seen, mut steps) = (Vec::new(), 0);
        while w.next <= kv.revision() {
            let (events, next) = w.batch(&kv);
            assert!(next - w.next <= MAX_REVISIONS_SCANNED, "one batch scanned {} revisions", next - w.next);
            seen.extend(events.into_iter().map(|e| e.kv.unwrap().value));
            w.next = next;
            steps += 1;
        }
        let want: Vec<bytes::Bytes> = (0..total).filter(|i| i % 9_000 == 0).map(|i| i.to_string().into()).collect();
        assert_eq!(seen, want, "every change to the key, once, in order");
        assert_eq!(steps, 4, "three full scans and the rest");
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
