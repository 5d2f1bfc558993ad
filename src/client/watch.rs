//! A watch that outlives broken streams, as etcd's client library keeps one.
//!
//! When a stream breaks (its member stopped or was killed, the connection
//! dropped or went silent), the watch reconnects, to the same endpoint
//! first and then to the others in turn, and creates its watcher again from
//! the revision after the last one it delivered. So its caller sees every
//! change once, in revision order, with no gap, across any number of broken
//! streams. Only a cancel from the server (a start revision below the
//! compaction point, a bad range) or an error that no retry can mend ends
//! it.

use std::time::Duration;

use super::Channel;
use tonic::{Code, Streaming};

use super::ClientError;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse, watch_request};

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub struct ResumingWatch {
    endpoints: Vec<String>,
    /// The endpoint the current (or next) stream goes to.
    current: usize,
    create: WatchCreateRequest,
    /// The first revision not yet delivered; 0 until a stream says where
    /// "from now on" starts.
    next: i64,
    stream: Option<Streaming<WatchResponse>>,
    /// Whether a stream was ever opened: later `created` answers are the
    /// watch's own business, not its caller's.
    opened: bool,
    backoff: Duration,
    resumes: u64,
    /// Failed attempts since the last response.
    failures: u32,
}

impl ResumingWatch {
    /// A watch of `create`'s keys over `endpoints`, opened by the first call
    /// to [`ResumingWatch::next`]. `fragment` is not offered: a resumed
    /// stream could not join a response's fragments.
    pub fn new(endpoints: &[String], create: WatchCreateRequest) -> ResumingWatch {
        ResumingWatch {
            endpoints: endpoints.to_vec(),
            current: 0,
            next: create.start_revision.max(0),
            create: WatchCreateRequest { fragment: false, ..create },
            stream: None,
            opened: false,
            backoff: FIRST_BACKOFF,
            resumes: 0,
            failures: 0,
        }
    }

    /// The first revision not yet delivered (0 before the watch started).
    pub fn next_revision(&self) -> i64 {
        self.next
    }

    /// How many times a broken stream was replaced.
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// The endpoint the watch uses now.
    pub fn endpoint(&self) -> &str {
        self.endpoints.get(self.current).map_or("", String::as_str)
    }

    /// The next response: the first stream's `created` answer, then events
    /// and progress notifications. Waits (reconnecting as needed) until one
    /// comes; the caller bounds the wait if it wants one.
    pub async fn next(&mut self) -> Result<WatchResponse, ClientError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.open().await?;
                continue;
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    self.backoff = FIRST_BACKOFF;
                    self.failures = 0;
                    if let Some(response) = self.take(response)? {
                        return Ok(response);
                    }
                }
                Ok(None) => self.broken("the stream ended").await,
                Err(status) if retryable(status.code()) => self.broken(status.message()).await,
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Moves the cursor past what `response` delivers; `None` for what the
    /// caller need not see.
    fn take(&mut self, response: WatchResponse) -> Result<Option<WatchResponse>, ClientError> {
        if response.canceled {
            self.stream = None;
            return Err(ClientError::WatchCanceled {
                reason: response.cancel_reason,
                compact_revision: response.compact_revision,
            });
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        if let Some(last) = response.events.last().and_then(|e| e.kv.as_ref()) {
            self.next = last.mod_revision + 1;
        } else if !response.fragment && (self.next == 0 || !response.created) {
            // "From now on" starts after the created answer's revision; a
            // progress notification promises everything up to its own.
            self.next = self.next.max(revision + 1);
        }
        if response.created {
            let first = !self.opened;
            self.opened = true;
            return Ok(first.then_some(response));
        }
        Ok(Some(response))
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let create = WatchCreateRequest { start_revision: self.next, ..self.create.clone() };
        let request = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
        // The request side stays open for as long as the stream lives.
        let requests = tokio_stream::StreamExt::chain(tokio_stream::iter([request]), tokio_stream::pending());
        let Some(url) = self.endpoints.get(self.current) else {
            return Err(ClientError::BadEndpoint("no endpoints given".into()));
        };
        // As etcd's clients: a response may be as large as the server sends.
        let mut client = WatchClient::new(channel(url)?).max_decoding_message_size(i32::MAX as usize);
        match client.watch(requests).await {
            Ok(response) => self.stream = Some(response.into_inner()),
            Err(status) if retryable(status.code()) => self.broken(status.message()).await,
            Err(status) => return Err(status.into()),
        }
        Ok(())
    }

    /// The stream is gone: wait, then try the next endpoint.
    async fn broken(&mut self, why: &str) {
        self.failures += 1;
        // Said at powers of two, so a cluster that stays down is reported
        // without a line per attempt.
        if self.failures.is_power_of_two() {
            let (endpoint, next, failures) = (self.endpoint(), self.next, self.failures);
            tracing::warn!(endpoint, next, failures, why, "watch stream broken; resuming from revision next");
        }
        if self.stream.take().is_some() {
            self.resumes += 1;
        } else {
            self.current = (self.current + 1) % self.endpoints.len();
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Errors a new stream may mend: the member or the connection, not the
/// request.
fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            | Code::NotFound
            | Code::AlreadyExists
    )
}

/// A lazily connected channel to `url`, with HTTP/2 keepalive so a
/// connection that silently stops delivering is noticed and replaced.
pub(super) fn channel(url: &str) -> Result<Channel, ClientError> {
    let target = crate::tls::Target::new(url).map_err(|_| ClientError::BadEndpoint(url.to_string()))?;
    let endpoint = target.with(|e| {
        e.connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(4))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
    });
    Ok(Channel::new(super::dialer().connect_lazy(&endpoint)))
}
