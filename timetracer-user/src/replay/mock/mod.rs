//! Mock servers: one per recorded destination, answering from its [`Destination`].
//!
//! Each `serve` function runs one accepted connection (already TLS-terminated when the
//! recording was TLS) until the app closes it.
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection a mock serves: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
