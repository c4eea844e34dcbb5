//! Mock servers: one per recorded destination, answering from its [`Destination`].
//!
//! Each `serve` function runs one accepted connection (already TLS-terminated when the
//! recording was TLS) until the app closes it.
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection a mock serves: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub mod http;
pub mod mysql;
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
    }
}
