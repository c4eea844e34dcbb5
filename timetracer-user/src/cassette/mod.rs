//! Cassette format, builder, writer and reader.
//!
//! One cassette = one inbound HTTP request with its response and every dependency call, as JSON
//! (schema 2.0, a documented superset of the Python tool's 1.0; see `docs/cassette-format.md`).
//!
//! ```no_run
//! # use timetracer::cassette::{self, BuildOptions, Compression};
//! # fn f(rec: &timetracer::correlate::model::RecordedRequest) -> Result<(), cassette::Error> {
//! let c = cassette::build(rec, &BuildOptions::default());
//! let path = cassette::write(std::path::Path::new("cassettes"), &c, Compression::Zstd)?;
//! let back = cassette::read(&path)?;
//! assert_eq!(back, c);
//! # Ok(()) }
//! ```
use std::path::PathBuf;

pub mod body;
pub mod build;
pub mod crypt;
pub mod format;
pub mod naming;
pub mod reader;
pub mod writer;

pub use body::{body_bytes, sha256_tagged};
pub use build::{BuildOptions, build, build_startup};
pub use format::Cassette;
pub use reader::read;
pub use writer::{Compression, write, write_sealed};

/// Cassette I/O errors; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize cassette")]
    Serialize(#[source] serde_json::Error),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt or truncated {format} data", path.display())]
    Decompress {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Encrypted {
        path: PathBuf,
        #[source]
        source: crypt::OpenError,
    },
    #[error("{}: larger than {limit} bytes once decompressed", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: not JSON", path.display())]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: no schema_version (not a cassette?)", path.display())]
    MissingSchema { path: PathBuf },
    #[error("{}: unknown schema_version {found:?} (supported: 1.0, 2.0)", path.display())]
    UnknownSchema { path: PathBuf, found: String },
    #[error("{}: invalid cassette", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
