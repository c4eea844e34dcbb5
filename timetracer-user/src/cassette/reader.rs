//! Cassette reader: plain, gzip or zstd, any of them age-encrypted (detected by magic bytes),
//! schema 2.x and the Python tool's 1.0 / 0.1, through size-capped decoders.
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use super::format::Cassette;
use super::{Error, crypt};

/// Largest decompressed (or plain) cassette accepted.
pub const MAX_CASSETTE_BYTES: u64 = 256 * 1024 * 1024;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Schema versions this reader understands (`2.x` minor versions are accepted too).
pub const SUPPORTED: &[&str] = &["0.1", "1.0", "2.0"];

/// Read a cassette file (`.json`, `.json.gz`, `.json.zst`, each optionally `.age`).
pub fn read(path: &Path) -> Result<Cassette, Error> {
    let bytes = read_decompressed(path, MAX_CASSETTE_BYTES)?;
    parse(path, &bytes)
}

/// Read, decrypt and decompress a file, failing with [`Error::TooLarge`] past `limit` bytes.
pub fn read_decompressed(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = BufReader::new(File::open(path).map_err(read_err)?);
    decompress(path, file, limit)
}

/// Decrypt and decompress the bytes of `raw` (a cassette file's contents, sniffed by magic),
/// failing with [`Error::TooLarge`] past `limit` bytes; `path` is only used in errors.
pub fn decompress(path: &Path, raw: impl Read, limit: u64) -> Result<Vec<u8>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let (magic, raw) = sniff(raw).map_err(read_err)?;
    if magic.starts_with(crypt::MAGIC) {
        let plain = crypt::open(raw).map_err(|source| Error::Encrypted {
            path: path.to_path_buf(),
            source,
        })?;
        let (magic, plain) = sniff(BufReader::new(plain)).map_err(|source| Error::Decompress {
            path: path.to_path_buf(),
            format: "age",
            source,
        })?;
        return decode(path, &magic, plain, limit, "age");
    }
    decode(path, &magic, raw, limit, "plain")
}

/// The first bytes of `r` (enough for every magic number) and a reader that still yields them.
fn sniff<R: Read>(mut r: R) -> std::io::Result<(Vec<u8>, impl Read)> {
    let mut magic = vec![0u8; crypt::MAGIC.len()];
    let mut n = 0;
    while n < magic.len() {
        let got = r.read(&mut magic[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    magic.truncate(n);
    Ok((magic.clone(), std::io::Cursor::new(magic).chain(r)))
}

/// Decompresses `raw` by its magic; `plain` names an uncompressed stream in errors.
fn decode(
    path: &Path,
    magic: &[u8],
    raw: impl Read,
    limit: u64,
    plain: &'static str,
) -> Result<Vec<u8>, Error> {
    if magic.starts_with(&ZSTD_MAGIC) {
        let dec = zstd::stream::read::Decoder::new(raw).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        capped(path, dec, "zstd", limit)
    } else if magic.starts_with(&GZIP_MAGIC) {
        capped(path, flate2::read::GzDecoder::new(raw), "gzip", limit)
    } else {
        capped(path, raw, plain, limit)
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

/// Whether `bytes` (decompressed, decrypted) are JSON with a `schema_version` this reader
/// supports: a cassette, as opposed to some other JSON file (retention deletes only those).
#[must_use]
pub fn has_supported_schema(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| {
        matches!(p.schema_version, Some(serde_json::Value::String(v))
            if SUPPORTED.contains(&v.as_str()) || v.starts_with("2."))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo xtask fuzz` (target `import_py`, issue #24): a timing read, written and
    /// read again came back 1 ulp off (`1.2551119998533977` → `…975`): serde_json's default
    /// float parser is not correctly rounded; `float_roundtrip` is.
    #[test]
    fn floats_survive_read_write_read() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/cassettes/py/GET__users_42__e92ca5c8.json"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["events"][0]["start_offset_ms"] = serde_json::json!(1.255_111_999_853_397_7);
        let c = parse(path, &serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(c.events[0].start_offset_ms, 1.255_111_999_853_397_7);
        let again = parse(path, &serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(
            again.events[0].start_offset_ms.to_bits(),
            c.events[0].start_offset_ms.to_bits()
        );
    }
}
