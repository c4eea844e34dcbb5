//! Encryption at rest: cassettes written for age X25519 recipients (`.json.age`,
//! `.json.zst.age`), read back with the matching identity.
//!
//! The format and the cryptography are the `age` crate's (age v1, X25519 recipients): nothing
//! here is hand-written but the plumbing — where recipients and identities come from, and the
//! errors that name the fix.
//!
//! Identities for reading are process-wide: `--identity FILE` (every `timetracer` command and
//! `timetracer-agent replay`) or `TIMETRACER_IDENTITY`, loaded once.
use std::{
    fmt,
    io::{Read, Write},
    path::{Path, PathBuf},
    str::FromStr as _,
    sync::{Mutex, OnceLock},
};

use age::secrecy::ExposeSecret as _;

/// The first bytes of every age v1 file (binary, not armored).
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// File name suffix of an encrypted cassette (after `.json` / `.json.zst`).
pub const SUFFIX: &str = ".age";

/// Errors of reading recipients or identities.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{value:?} is not an age recipient (age1…) nor a readable file of them: {why} \
         (make one with `timetracer keygen -o key.txt`; it prints the recipient)"
    )]
    Recipient { value: String, why: String },
    #[error("no recipient given (pass --encrypt-to age1… or a file of recipients)")]
    NoRecipient,
    #[error("cannot read identity file {}: {source} (pass --identity FILE or set TIMETRACER_IDENTITY to an age identity file)", path.display())]
    IdentityRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no usable age identity (AGE-SECRET-KEY-1… lines): {why}", path.display())]
    IdentityParse { path: PathBuf, why: String },
}

/// The recipients cassettes are encrypted to.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(ToString::to_string))
            .finish()
    }
}

impl PartialEq for Recipients {
    fn eq(&self, other: &Self) -> bool {
        let s = |r: &Self| r.keys.iter().map(ToString::to_string).collect::<Vec<_>>();
        s(self) == s(other)
    }
}

impl Recipients {
    /// Recipients from `values`: each an `age1…` key, or a file with one per line (`#`
    /// comments and blank lines ignored), like age's `-R`. Values may be comma- or
    /// space-separated lists (`TIMETRACER_ENCRYPT_TO`).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for value in values
            .iter()
            .flat_map(|v| v.as_ref().split([',', ' ', '\t']))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            if value.starts_with("age1") {
                keys.push(parse_recipient(value, value)?);
                continue;
            }
            let text = std::fs::read_to_string(value).map_err(|e| KeyError::Recipient {
                value: value.to_owned(),
                why: e.to_string(),
            })?;
            for line in text.lines().map(str::trim) {
                if !line.is_empty() && !line.starts_with('#') {
                    keys.push(parse_recipient(line, value)?);
                }
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoRecipient);
        }
        Ok(Self { keys })
    }

    /// Encrypts everything written to the returned writer into `out`; call
    /// [`age::stream::StreamWriter::finish`] at the end.
    pub fn wrap<W: Write>(&self, out: W) -> std::io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(std::io::Error::other)?;
        encryptor.wrap_output(out)
    }
}

fn parse_recipient(s: &str, from: &str) -> Result<age::x25519::Recipient, KeyError> {
    age::x25519::Recipient::from_str(s).map_err(|why| KeyError::Recipient {
        value: from.to_owned(),
        why: why.to_string(),
    })
}

/// Identities loaded from one file.
struct Identities {
    path: PathBuf,
    keys: Vec<age::x25519::Identity>,
}

/// `--identity FILE`, set before the first read.
static IDENTITY_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);
static IDENTITIES: OnceLock<Result<Option<Identities>, String>> = OnceLock::new();

/// Use the identities in `path` to read encrypted cassettes (`--identity`); over
/// `TIMETRACER_IDENTITY`.
pub fn set_identity_file(path: &Path) {
    *IDENTITY_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
}

/// Reads the identities of an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
fn load_identities(path: &Path) -> Result<Identities, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::IdentityRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(age::x25519::Identity::from_str(line).map_err(|why| {
            KeyError::IdentityParse {
                path: path.to_path_buf(),
                why: why.to_string(),
            }
        })?);
    }
    if keys.is_empty() {
        return Err(KeyError::IdentityParse {
            path: path.to_path_buf(),
            why: "the file is empty".into(),
        });
    }
    Ok(Identities {
        path: path.to_path_buf(),
        keys,
    })
}

/// The process's identities (`None`: none configured), loaded on first use.
fn identities() -> Result<Option<&'static Identities>, String> {
    IDENTITIES
        .get_or_init(|| {
            let path = IDENTITY_FILE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .or_else(|| std::env::var_os("TIMETRACER_IDENTITY").map(PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty());
            path.map(|p| load_identities(&p))
                .transpose()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(Option::as_ref)
        .map_err(Clone::clone)
}

/// Why an encrypted file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "encrypted (age): pass --identity FILE or set TIMETRACER_IDENTITY to the identity it was \
         encrypted to"
    )]
    NoIdentity,
    #[error("{0}")]
    Identity(String),
    #[error(
        "encrypted (age) to another recipient: {} has no matching identity ({why})",
        path.display()
    )]
    WrongIdentity { path: PathBuf, why: String },
    #[error("corrupt or truncated age data: {0}")]
    Corrupt(String),
}

/// A reader of the plaintext of the age file `raw`, with the configured identities.
pub fn open<R: Read>(raw: R) -> Result<age::stream::StreamReader<R>, OpenError> {
    let ids = identities()
        .map_err(OpenError::Identity)?
        .ok_or(OpenError::NoIdentity)?;
    decrypt(raw, ids)
}

fn decrypt<R: Read>(raw: R, ids: &Identities) -> Result<age::stream::StreamReader<R>, OpenError> {
    let dec = age::Decryptor::new(raw).map_err(|e| OpenError::Corrupt(e.to_string()))?;
    dec.decrypt(ids.keys.iter().map(|k| k as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::WrongIdentity {
                path: ids.path.clone(),
                why: e.to_string(),
            },
            other => OpenError::Corrupt(other.to_string()),
        })
}

/// A new identity file's text (with its recipient in a comment, like `age-keygen`) and the
/// recipient.
#[must_use]
pub fn generate() -> (String, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        id.to_string().expose_secret()
    );
    (text, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_parse_keys_lists_and_files() {
        let (_, r1) = generate();
        let (_, r2) = generate();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("recipients.txt");
        std::fs::write(&file, format!("# team\n{r2}\n\n")).unwrap();
        let rs = Recipients::parse(&[format!("{r1}, {}", file.display())]).unwrap();
        assert_eq!(rs.keys.len(), 2);
        assert!(matches!(
            Recipients::parse(&["age1nope"]),
            Err(KeyError::Recipient { .. })
        ));
        assert!(matches!(
            Recipients::parse::<&str>(&[]),
            Err(KeyError::NoRecipient)
        ));
        let e = Recipients::parse(&["/no/such/file"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("timetracer keygen"), "{e}");
    }

    #[test]
    fn identity_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (text, _) = generate();
        let good = dir.path().join("key.txt");
        std::fs::write(&good, text).unwrap();
        assert_eq!(load_identities(&good).unwrap().keys.len(), 1);
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "AGE-SECRET-KEY-1NOPE\n").unwrap();
        assert!(matches!(
            load_identities(&bad),
            Err(KeyError::IdentityParse { .. })
        ));
        assert!(matches!(
            load_identities(&dir.path().join("missing")),
            Err(KeyError::IdentityRead { .. })
        ));
    }

    #[test]
    fn round_trip_and_wrong_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ids = |name: &str| {
            let (text, recipient) = generate();
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            (load_identities(&p).unwrap(), recipient)
        };
        let (mine, recipient) = ids("mine.txt");
        let (other, _) = ids("other.txt");
        let mut sealed = Vec::new();
        let mut w = Recipients::parse(&[recipient])
            .unwrap()
            .wrap(&mut sealed)
            .unwrap();
        w.write_all(b"{\"schema_version\": \"2.0\"}").unwrap();
        w.finish().unwrap();
        assert!(sealed.starts_with(MAGIC));
        let mut plain = String::new();
        decrypt(sealed.as_slice(), &mine)
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "{\"schema_version\": \"2.0\"}");
        let Err(e) = decrypt(sealed.as_slice(), &other) else {
            panic!("decrypted with another identity")
        };
        assert!(matches!(e, OpenError::WrongIdentity { .. }), "{e}");
        let Err(e) = decrypt(&sealed[..40], &mine) else {
            panic!("decrypted a truncated file")
        };
        assert!(matches!(e, OpenError::Corrupt(_)), "{e}");
    }
}
