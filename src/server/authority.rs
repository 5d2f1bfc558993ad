//! Accepting the `:authority` that etcd's Go clients send.
//!
//! etcdctl 3.4 (grpc-go) sends an endpoint written as a URL
//! (`--endpoints=http://127.0.0.1:2379`, and every endpoint of
//! `endpoint status --cluster`) as the HTTP/2 `:authority` itself, scheme
//! included. etcd's Go server takes it; the `h2` crate under tonic and axum
//! resets every such stream with PROTOCOL_ERROR, and offers no setting to
//! relax that. So client connections pass through [`ClientIo`], which reads
//! the first header block of an HTTP/2 connection: when its `:authority` is
//! one `h2` accepts (every other client), the connection is passed through
//! untouched from then on; when it is not, every header block of that
//! connection is decoded and encoded again with the authority repaired
//! (`http://host:port` → `host:port`; dropped if still invalid).
//!
//! Invariant: the bytes `h2` reads are a valid HTTP/2 stream whose HPACK
//! state is that of the encoder they came from: the client's (passed through
//! from the first block on), or this module's own (re-encoded from the first
//! block on). The two are never mixed on one connection. HTTP/1 connections
//! are recognised by their first bytes and never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::MaybeTls;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame a peer may send before the server raises the limit
/// (h2's default SETTINGS_MAX_FRAME_SIZE): re-encoded blocks are split to it.
const MAX_FRAME: usize = 16_384;

enum Mode {
    /// Not yet known: HTTP/1, or HTTP/2 before its preface is complete.
    Sniffing,
    /// HTTP/2, up to and including the first header block.
    FirstBlock,
    /// Every header block is re-encoded with its authority repaired.
    Repairing,
    /// Bytes go through as they come.
    Passing,
}

/// A client connection whose HTTP/2 `:authority` is repaired if needed.
pub struct ClientIo<T> {
    inner: T,
    mode: Mode,
    /// Bytes read from the client, not yet processed.
    input: BytesMut,
    /// Processed bytes, waiting to be read by the server.
    output: BytesMut,
    /// A header block being collected: the HEADERS frame's stream, flags,
    /// priority bytes, and the fragments so far.
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    eof: bool,
}

struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
}

impl<T> ClientIo<T> {
    pub fn new(inner: T) -> ClientIo<T> {
        ClientIo {
            inner,
            mode: Mode::Sniffing,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            eof: false,
        }
    }

    /// Moves what can be processed from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passing => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                Mode::Sniffing => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passing;
                    } else if n == PREFACE.len() {
                        let preface = self.input.split_to(n);
                        self.output.unsplit(preface);
                        self.mode = Mode::FirstBlock;
                    } else {
                        return Ok(());
                    }
                }
                Mode::FirstBlock | Mode::Repairing => {
                    if !self.next_frame()? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Processes one whole frame from `input`; false if none is complete.
    fn next_frame(&mut self) -> io::Result<bool> {
        if self.input.len() < FRAME_HEADER {
            return Ok(false);
        }
        let len = (usize::from(self.input[0]) << 16) | (usize::from(self.input[1]) << 8) | usize::from(self.input[2]);
        if self.input.len() < FRAME_HEADER + len {
            return Ok(false);
        }
        let (kind, flags) = (self.input[3], self.input[4]);
        let stream = u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]]) & 0x7fff_ffff;
        let mut frame = self.input.split_to(FRAME_HEADER + len);
        match (kind, &mut self.block) {
            (HEADERS, None) => {
                let mut payload = frame.split_off(FRAME_HEADER);
                let pad = if flags & PADDED != 0 { usize::from(take_u8(&mut payload)?) } else { 0 };
                let priority = if flags & PRIORITY != 0 {
                    if payload.len() < 5 {
                        return Err(malformed("HEADERS frame too short for its priority"));
                    }
                    let mut p = [0u8; 5];
                    payload.copy_to_slice(&mut p);
                    Some(p)
                } else {
                    None
                };
                if pad > payload.len() {
                    return Err(malformed("HEADERS padding longer than the frame"));
                }
                payload.truncate(payload.len() - pad);
                self.block = Some(Block { stream, flags, priority, fragment: payload });
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                block.fragment.extend_from_slice(&frame[FRAME_HEADER..]);
                block.flags |= flags & END_HEADERS;
            }
            // Anything else between HEADERS and its last CONTINUATION is a
            // protocol error: let h2 see it and say so.
            _ => {
                self.output.unsplit(frame);
                return Ok(true);
            }
        }
        if self.block.as_ref().is_some_and(|b| b.flags & END_HEADERS != 0) {
            let block = self.block.take().expect("checked above");
            self.finish_block(block)?;
        }
        Ok(true)
    }

    fn finish_block(&mut self, block: Block) -> io::Result<()> {
        let headers = self.decoder.decode(&block.fragment).map_err(|e| malformed(&format!("HPACK: {e:?}")))?;
        if let Mode::FirstBlock = self.mode {
            let fine =
                headers.iter().all(|(n, v)| n != b":authority" || axum::http::uri::Authority::try_from(&v[..]).is_ok());
            if fine {
                // h2's decoder must see the client's own bytes, as ours did.
                Self::write_block(&mut self.output, &block, &block.fragment);
                self.mode = Mode::Passing;
                return Ok(());
            }
            tracing::debug!("repairing the :authority of a client connection");
            self.mode = Mode::Repairing;
        }
        let repaired: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .filter_map(|(n, v)| if n == b":authority" { repair(&v).map(|v| (n, v)) } else { Some((n, v)) })
            .collect();
        let fragment = self.encoder.encode(repaired.iter().map(|(n, v)| (&n[..], &v[..])));
        Self::write_block(&mut self.output, &block, &fragment);
        Ok(())
    }

    /// Writes a header block as one HEADERS frame and as many CONTINUATION
    /// frames as the frame size limit needs.
    fn write_block(output: &mut BytesMut, block: &Block, fragment: &[u8]) {
        let mut first = Vec::with_capacity(5 + fragment.len());
        let mut flags = block.flags & END_STREAM;
        if let Some(p) = block.priority {
            first.extend_from_slice(&p);
            flags |= PRIORITY;
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = fragment.split_at(fragment.len().min(room));
        first.extend_from_slice(head);
        let mut kind = HEADERS;
        let mut payload = first;
        loop {
            if rest.is_empty() {
                flags |= END_HEADERS;
            }
            output.put_uint(payload.len() as u64, 3);
            output.put_u8(kind);
            output.put_u8(flags);
            output.put_u32(block.stream);
            output.extend_from_slice(&payload);
            if rest.is_empty() {
                return;
            }
            let (next, after) = rest.split_at(rest.len().min(MAX_FRAME));
            payload = next.to_vec();
            rest = after;
            kind = CONTINUATION;
            flags = 0;
        }
    }
}

/// `http://host:port/` → `host:port`; none if that is no authority either.
fn repair(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or_default();
    axum::http::uri::Authority::try_from(host).ok().map(|_| host.as_bytes().to_vec())
}

fn take_u8(buf: &mut BytesMut) -> io::Result<u8> {
    if buf.is_empty() {
        return Err(malformed("frame too short"));
    }
    Ok(buf.get_u8())
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed HTTP/2 from a client: {what}"))
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let (Mode::Passing, true) = (&this.mode, this.input.is_empty()) {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // What is left is an incomplete frame: the client hung up.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                // An HTTP/1 request shorter than the preface.
                if let Mode::Sniffing = this.mode {
                    this.mode = Mode::Passing;
                }
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The client listener: TCP connections with Nagle off, read through
/// [`ClientIo`].
/// A client port's listener: plain text, or TLS (handshakes done elsewhere,
/// [`crate::tls::accept`]), every connection's authority repaired alike.
pub enum ClientListener {
    Plain(tokio::net::TcpListener),
    Tls(crate::tls::TlsIncoming),
}

impl ClientListener {
    /// Serves `listener` through TLS with `tls` when given.
    pub fn new(
        listener: tokio::net::TcpListener,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
        side: &'static str,
    ) -> io::Result<ClientListener> {
        Ok(match tls {
            Some(config) => ClientListener::Tls(crate::tls::TlsIncoming::new(listener, config, side)?),
            None => ClientListener::Plain(listener),
        })
    }
}

/// A client connection as requests see it (axum's `ConnectInfo`): its
/// address, and the common name of its verified certificate, if any.
#[derive(Clone, Debug)]
pub struct ClientPeer {
    pub addr: std::net::SocketAddr,
    pub common_name: Option<std::sync::Arc<str>>,
}

impl ClientPeer {
    fn plain(addr: std::net::SocketAddr) -> ClientPeer {
        ClientPeer { addr, common_name: None }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ClientListener>> for ClientPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, ClientListener>) -> ClientPeer {
        stream.remote_addr().clone()
    }
}

impl axum::serve::Listener for ClientListener {
    type Io = ClientIo<MaybeTls>;
    type Addr = ClientPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            ClientListener::Plain(listener) => loop {
                match tokio::net::TcpListener::accept(listener).await {
                    Ok((tcp, addr)) => {
                        // Requests and answers are small: never wait for Nagle.
                        let _ = tcp.set_nodelay(true);
                        return (ClientIo::new(MaybeTls::Plain(tcp)), ClientPeer::plain(addr));
                    }
                    Err(e) => {
                        // Too many open files and the like: wait, as axum does.
                        tracing::warn!("accepting a client connection failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            },
            ClientListener::Tls(incoming) => match incoming.accept().await {
                Some((io, addr)) => {
                    let cert = io.peer_certificates().and_then(|certs| certs.first());
                    let common_name = cert.and_then(crate::tls::common_name).map(std::sync::Arc::from);
                    (ClientIo::new(io), ClientPeer { addr, common_name })
                }
                // The accept loop only ends when the server is going away.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match self {
            ClientListener::Plain(listener) => listener.local_addr().map(ClientPeer::plain),
            ClientListener::Tls(incoming) => Ok(ClientPeer::plain(incoming.local_addr())),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = BytesMut::new();
        f.put_uint(payload.len() as u64, 3);
        f.put_u8(kind);
        f.put_u8(flags);
        f.put_u32(stream);
        f.extend_from_slice(payload);
        f.to_vec()
    }

    /// Feeds `input` through a ClientIo and returns what the server reads.
    async fn through(input: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut io = ClientIo::new(server);
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        out
    }

    fn headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), b"/etcdserverpb.Maintenance/Status".to_vec()),
            (b":authority".to_vec(), authority.as_bytes().to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    /// Decodes the header blocks of frames read by the server.
    fn blocks(mut out: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(out.starts_with(PREFACE));
        out = &out[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut found = Vec::new();
        while out.len() >= FRAME_HEADER {
            let len = (usize::from(out[0]) << 16) | (usize::from(out[1]) << 8) | usize::from(out[2]);
            if out[3] == HEADERS {
                found.push(decoder.decode(&out[FRAME_HEADER..FRAME_HEADER + len]).unwrap());
            }
            out = &out[FRAME_HEADER + len..];
        }
        found
    }

    fn connection(authorities: &[&str]) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for (i, a) in authorities.iter().enumerate() {
            let h = headers(a);
            let block = encoder.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            input.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i as u32, &block));
            input.extend(frame(0x0, END_STREAM, 1 + 2 * i as u32, b"data"));
        }
        input
    }

    #[tokio::test]
    async fn a_valid_authority_passes_through_byte_for_byte() {
        let input = connection(&["127.0.0.1:2379", "127.0.0.1:2379"]);
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn a_url_as_authority_is_repaired_on_every_request() {
        let out = through(connection(&["http://127.0.0.1:2379", "http://127.0.0.1:2379"])).await;
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            assert_eq!(block, headers("127.0.0.1:2379"));
        }
    }

    #[tokio::test]
    async fn an_authority_beyond_repair_is_dropped() {
        let out = through(connection(&["#initially=[http://a:1]"])).await;
        let blocks = blocks(&out);
        assert!(blocks[0].iter().all(|(n, _)| n != b":authority"), "{:?}", blocks[0]);
    }

    #[tokio::test]
    async fn http1_is_never_touched() {
        for request in [&b"GET /healthz HTTP/1.1\r\n\r\n"[..], b"PUT /v1/kv/a HTTP/1.1\r\n\r\nx", b"P"] {
            assert_eq!(through(request.to_vec()).await, request);
        }
    }

    #[tokio::test]
    async fn a_block_split_into_continuations_is_reassembled() {
        let mut encoder = loona_hpack::Encoder::new();
        let h = headers("http://127.0.0.1:2379");
        let block = encoder.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        let (a, b) = block.split_at(10);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED, 1, &[&[2u8][..], a, &[0, 0]].concat()));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        assert_eq!(blocks(&through(input).await), vec![headers("127.0.0.1:2379")]);
    }
}
