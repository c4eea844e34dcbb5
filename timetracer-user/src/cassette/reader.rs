//! Cassette reader: plain, gzip or zstd (detected by magic bytes), schema 2.x and the Python
//! tool's 1.0 / 0.1, through size-capped decoders.
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use super::Error;
use super::format::Cassette;

/// Largest decompressed (or plain) cassette accepted.
pub const MAX_CASSETTE_BYTES: u64 = 256 * 1024 * 1024;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Schema versions this reader understands (`2.x` minor versions are accepted too).
pub const SUPPORTED: &[&str] = &["0.1", "1.0", "2.0"];

/// Read a cassette file (`.json`, `.json.gz`, `.json.zst`).
pub fn read(path: &Path) -> Result<Cassette, Error> {
    let bytes = read_decompressed(path, MAX_CASSETTE_BYTES)?;
    parse(path, &bytes)
}

/// Read and decompress a file, failing with [`Error::TooLarge`] past `limit` bytes.
pub fn read_decompressed(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(read_err)?);
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        let got = file.read(&mut magic[n..]).map_err(read_err)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = head.chain(file);
    if n >= 4 && magic == ZSTD_MAGIC {
        let dec = zstd::stream::read::Decoder::new(raw).map_err(read_err)?;
        capped(path, dec, "zstd", limit)
    } else if n >= 2 && magic[..2] == GZIP_MAGIC {
        capped(path, flate2::read::GzDecoder::new(raw), "gzip", limit)
    } else {
        capped(path, raw, "plain", limit)
    }
}

fn capped(path: &Path, r: impl Read, format: &'static str, limit: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| match format {
            "plain" => Error::Read {
                path: path.to_path_buf(),
                source,
            },
            _ => Error::Decompress {
                path: path.to_path_buf(),
                format,
                source,
            },
        })?;
    if out.len() as u64 > limit {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    schema_version: Option<serde_json::Value>,
}

/// Parse cassette JSON; `path` is only used in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Cassette, Error> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| Error::NotJson {
        path: path.to_path_buf(),
        source,
    })?;
    let version = match probe.schema_version {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => {
            return Err(Error::UnknownSchema {
                path: path.to_path_buf(),
                found: other.to_string(),
            });
        }
        None => {
            return Err(Error::MissingSchema {
                path: path.to_path_buf(),
            });
        }
    };
    if !(SUPPORTED.contains(&version.as_str()) || version.starts_with("2.")) {
        return Err(Error::UnknownSchema {
            path: path.to_path_buf(),
            found: version,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| Error::Invalid {
        path: path.to_path_buf(),
        source,
    })
}
