//! Mock servers: one per recorded destination, answering from its [`Destination`].
//!
//! Each `serve` function runs one accepted connection until the app closes it. When the
//! recording was TLS, [`serve`] terminates it the way the protocol does: HTTP and Redis start
//! with the TLS handshake; PostgreSQL (`SSLRequest` → `S`) and MySQL (`CLIENT_SSL` in the
//! greeting, the client's SSL request packet) upgrade the plaintext connection mid-handshake
//! ([`drive`] swaps the transport when the session asks, [`WireSession::take_tls_upgrade`]).
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_rustls::TlsAcceptor;

/// A connection a mock serves: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub mod http;
pub mod mongodb;
pub mod mysql;
mod pg_rules;
pub mod postgres;
pub mod redis;

#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::Arc;

use super::ledger::{Destination, Protocol};

/// Serves one connection to `dest` with its protocol's mock; `tls` (the mock CA's acceptor
/// for the recorded server names) when the recording was TLS.
///
/// # Errors
/// Transport errors of the connection. A failed TLS handshake is a miss of the destination
/// (the app does not trust the mock CA), not an error.
pub async fn serve(
    dest: Arc<Destination>,
    io: impl Io + 'static,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    match dest.protocol {
        // TLS from the first byte (MongoDB's `tls=true` too).
        Protocol::Http | Protocol::Redis | Protocol::Mongodb => match tls {
            Some(acc) => match acc.accept(io).await {
                Ok(s) => serve_plain(dest, s).await,
                Err(e) => {
                    tls_failed(&dest, &e);
                    Ok(())
                }
            },
            None => serve_plain(dest, io).await,
        },
        Protocol::Postgres => postgres::serve_upgrading(dest, io, tls).await,
        Protocol::Mysql => mysql::serve_upgrading(dest, io, tls).await,
    }
}

async fn serve_plain(dest: Arc<Destination>, io: impl Io + 'static) -> anyhow::Result<()> {
    match dest.protocol {
        Protocol::Http => http::serve(dest, io).await,
        Protocol::Postgres => postgres::serve(dest, io).await,
        Protocol::Mysql => mysql::serve(dest, io).await,
        Protocol::Redis => redis::serve(dest, io).await,
        Protocol::Mongodb => mongodb::serve(dest, io).await,
    }
}

/// The ALPN protocol a TLS mock of `protocol` offers: what the real servers answer
/// (`http/1.1`; `postgresql`, which libpq 17 sends and PostgreSQL 17 requires for direct TLS).
#[must_use]
pub fn tls_alpn(protocol: Protocol) -> Option<&'static [u8]> {
    match protocol {
        Protocol::Http => Some(b"http/1.1"),
        Protocol::Postgres => Some(b"postgresql"),
        Protocol::Mysql | Protocol::Redis | Protocol::Mongodb => None,
    }
}

/// A TLS handshake with the app failed: the destination's miss, naming the likely cause.
fn tls_failed(dest: &Destination, e: &std::io::Error) {
    dest.miss(
        "TLS handshake",
        &format!(
            "TLS handshake with the app failed: {e} (does the app trust the mock CA? see docs/replay.md)"
        ),
    );
}

/// A database/cache mock's per-connection state machine: bytes in, answers out.
pub(crate) trait WireSession {
    /// Consumes what it can of `buf`, appending answers to [`WireSession::out`].
    fn feed(&mut self, buf: &mut BytesMut);
    fn out(&mut self) -> &mut Vec<u8>;
    /// The session ended (the app quit, or a fatal protocol error).
    fn closed(&self) -> bool;
    /// The session accepted the app's TLS request (its answer, if any, is in
    /// [`WireSession::out`]): the transport must become TLS before anything else is read.
    /// Reading it clears it.
    fn take_tls_upgrade(&mut self) -> Option<TlsStart> {
        None
    }
    /// The destination served (for misses the transport reports).
    fn destination(&self) -> &Destination;
}

/// How the client starts TLS after its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsStart {
    /// After the server's answer (PostgreSQL's `S`): bytes already sent are not TLS and are
    /// refused, as servers do (CVE-2021-23214).
    AfterAnswer,
    /// At once (MySQL: the SSL request packet has no answer): bytes already read are the
    /// start of the TLS handshake.
    Immediate,
}

/// A transport whose first bytes were already read: `head`, then `inner`. Written by hand
/// because tokio's `AsyncReadExt::chain` gives a reader only, and the TLS acceptor needs the
/// writer too.
struct Prefixed<T> {
    head: BytesMut,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.head.is_empty() {
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.head.len().min(buf.remaining());
        buf.put_slice(&self.head.split_to(n));
        std::task::Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs a [`WireSession`] over a connection until the app or the session closes it,
/// upgrading the connection to TLS with `tls` when the session accepts the app's request.
async fn drive(
    s: &mut impl WireSession,
    io: impl Io + 'static,
    tls: Option<&TlsAcceptor>,
) -> anyhow::Result<()> {
    let mut io: Box<dyn Io> = Box::new(io);
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        s.feed(&mut buf);
        if !s.out().is_empty() {
            io.write_all(s.out()).await?;
            io.flush().await?;
            s.out().clear();
        }
        if s.closed() {
            let _ = io.shutdown().await;
            return Ok(());
        }
        if let Some(start) = s.take_tls_upgrade() {
            let Some(acc) = tls else {
                // Sessions only accept when they were given an acceptor.
                anyhow::bail!("TLS upgrade accepted without a certificate");
            };
            if start == TlsStart::AfterAnswer && !buf.is_empty() {
                // Bytes sent after the TLS request and before the handshake would be taken as
                // if they had come through TLS; servers refuse them (CVE-2021-23214).
                s.destination().miss(
                    "TLS request followed by plaintext",
                    "the app sent bytes after its TLS request before the TLS handshake: connection closed",
                );
                return Ok(());
            }
            let head = buf.split();
            io = match acc.accept(Prefixed { head, inner: io }).await {
                Ok(t) => Box::new(t),
                Err(e) => {
                    tls_failed(s.destination(), &e);
                    return Ok(());
                }
            };
            continue;
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
