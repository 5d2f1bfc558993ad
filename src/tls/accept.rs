//! Accepting connections on a listener that may speak TLS. Each handshake
//! runs on a task of its own, bounded in time, so a slow or silent client
//! never holds up the next; a connection whose handshake fails (plain text
//! on a TLS port, no client certificate where one is required, one from
//! another CA) is closed there and logged with its address, as etcd logs
//! "rejected connection".

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A handshake not done by then is given up (etcd allows 10 s too).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Connections whose handshake is done, waiting for the server to take them.
const ACCEPTED: usize = 64;

/// A client connection, in plain text or TLS.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// The certificates the client presented (TLS with a client certificate).
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            MaybeTls::Plain(_) => None,
            MaybeTls::Tls(tls) => tls.get_ref().1.peer_certificates(),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for MaybeTls {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Connections of a TLS listener whose handshakes succeeded. The listener
/// closes when this is dropped.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<(MaybeTls, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// Starts accepting on `listener` (on the current runtime).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>, side: &'static str) -> std::io::Result<TlsIncoming> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accepting = async move {
            loop {
                let (tcp, addr) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Too many open files and the like: wait, as axum does.
                            tracing::warn!("accepting a {side} connection failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((MaybeTls::Tls(Box::new(tls)), addr)).await;
                        }
                        Ok(Err(e)) => tracing::warn!(remote = %addr, "rejected {side} connection: {e}"),
                        Err(_) => {
                            tracing::warn!(remote = %addr, "rejected {side} connection: no TLS handshake within 10 s")
                        }
                    }
                });
            }
        };
        tokio::spawn(tracing::Instrument::instrument(accepting, tracing::Span::current()));
        Ok(TlsIncoming { accepted, local })
    }

    /// The next connection whose handshake is done; None once the accept
    /// loop ended.
    pub async fn accept(&mut self) -> Option<(MaybeTls, SocketAddr)> {
        self.accepted.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The connections as a stream, for tonic's server.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = std::io::Result<MaybeTls>> {
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(self.accepted), |(io, _)| Ok(io))
    }
}
