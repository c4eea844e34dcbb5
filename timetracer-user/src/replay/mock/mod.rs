//! Mock servers: one per recorded destination, answering from its [`Destination`].
//!
//! Each `serve` function runs one accepted connection (already TLS-terminated when the
//! recording was TLS) until the app closes it.
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

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

/// Serves one connection to `dest` with its protocol's mock.
///
/// # Errors
/// Transport errors of the connection.
pub async fn serve(dest: Arc<Destination>, io: impl Io + 'static) -> anyhow::Result<()> {
    match dest.protocol {
        Protocol::Http => http::serve(dest, io).await,
        Protocol::Postgres => postgres::serve(dest, io).await,
        Protocol::Mysql => mysql::serve(dest, io).await,
        Protocol::Redis => redis::serve(dest, io).await,
        Protocol::Mongodb => mongodb::serve(dest, io).await,
    }
}

/// A database/cache mock's per-connection state machine: bytes in, answers out.
pub(crate) trait WireSession {
    /// Consumes what it can of `buf`, appending answers to [`WireSession::out`].
    fn feed(&mut self, buf: &mut BytesMut);
    fn out(&mut self) -> &mut Vec<u8>;
    /// The session ended (the app quit, or a fatal protocol error).
    fn closed(&self) -> bool;
}

/// Runs a [`WireSession`] over a connection until the app or the session closes it.
async fn drive(s: &mut impl WireSession, mut io: impl Io) -> anyhow::Result<()> {
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
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
