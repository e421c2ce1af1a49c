//! Secret key files.
//!
//! Format (ASCII, exactly two lines, each ending in `\n`):
//!
//! ```text
//! netbill-<kind>-secret-key v1
//! <64 lower-case hex digits: the 32 secret bytes>
//! ```
//!
//! `<kind>` names what the key is for (e.g. `signing`, `seal`) and is 1–32 characters of
//! `a-z`, `0-9` and `-`; loading a file of another kind fails. Files are written atomically
//! (temporary file in the same directory, fsync, then link/rename, then fsync of the
//! directory), with mode 0600 on Unix, and never replace an existing key unless `force`
//! is given. Loading refuses (on Unix) a file that its group or others may read or write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a key file could not be saved or loaded; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// There is no key file at the path.
    #[error("no key file at {path}: create one first (or check the path)")]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// Saving would overwrite an existing key.
    #[error(
        "refusing to overwrite the existing key file {path}: move it away first, or force the overwrite if you are sure the old key is no longer needed"
    )]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file may be read or written by other users.
    #[error(
        "key file {path} is accessible to group or others (mode {mode:03o}): run `chmod 600 {path}` and check nobody copied the key"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds another kind of key.
    #[error("key file {path} holds a {found} key, not a {expected} key: use the right file")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The kind asked for.
        expected: String,
        /// The kind in the file.
        found: String,
    },
    /// The file is not a key file of this format.
    #[error(
        "key file {path} is malformed ({reason}): restore it from a backup or create a new key"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key kind is not a valid name.
    #[error("invalid key kind {0:?}: use 1-32 characters of a-z, 0-9 and '-'")]
    InvalidKind(String),
    /// An operating-system error.
    #[error("key file {path}: {source} (check the path, its directory and permissions)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The largest key file we read; real ones are under 100 bytes.
const MAX_FILE_LEN: u64 = 4096;

fn check_kind(kind: &str) -> Result<(), KeyFileError> {
    let ok = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyFileError::InvalidKind(kind.to_owned()))
    }
}

fn header(kind: &str) -> String {
    format!("netbill-{kind}-secret-key v1")
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `path` exclusively (mode 0600 on Unix).
fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Saves a 32-byte secret as a `kind` key file at `path`, atomically, mode 0600.
///
/// Fails with [`KeyFileError::AlreadyExists`] if `path` exists, unless `force`.
pub fn save_secret_key(
    path: impl AsRef<Path>,
    kind: &str,
    bytes: &[u8; 32],
    force: bool,
) -> Result<(), KeyFileError> {
    let path = path.as_ref();
    check_kind(kind)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| KeyFileError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(KeyFileError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let suffix = hex::encode(crate::random_bytes::<8>());
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{suffix}"));
    let tmp = dir.join(tmp_name);

    let contents = Zeroizing::new(format!("{}\n{}\n", header(kind), hex::encode(bytes)));
    let write = || -> io::Result<()> {
        let mut f = create_private(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    let placed = if force {
        fs::rename(&tmp, path).map_err(io_err(path))
    } else {
        // A hard link creates `path` atomically and only if it does not exist yet.
        let r = match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(KeyFileError::AlreadyExists {
                    path: path.to_owned(),
                })
            }
            // File systems without hard links: check, then rename (not race-free).
            Err(_) if fs::symlink_metadata(path).is_err() => {
                fs::rename(&tmp, path).map_err(io_err(path))
            }
            Err(e) => Err(io_err(path)(e)),
        };
        let _ = fs::remove_file(&tmp);
        r
    };
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    // Make the new directory entry durable.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Loads the 32-byte secret of a `kind` key file, refusing files others may access.
pub fn load_secret_key(path: impl AsRef<Path>, kind: &str) -> Result<[u8; 32], KeyFileError> {
    let path = path.as_ref();
    check_kind(kind)?;
    let f = File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            KeyFileError::NotFound {
                path: path.to_owned(),
            }
        } else {
            io_err(path)(e)
        }
    })?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(KeyFileError::Malformed {
            path: path.to_owned(),
            reason: "not a regular file",
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = Zeroizing::new(String::new());
    f.take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                KeyFileError::Malformed {
                    path: path.to_owned(),
                    reason: "not text",
                }
            } else {
                io_err(path)(e)
            }
        })?;
    let malformed = |reason| KeyFileError::Malformed {
        path: path.to_owned(),
        reason,
    };
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(malformed("too long"));
    }
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| malformed("missing final newline"))?;
    let (first, key_hex) = body
        .split_once('\n')
        .ok_or_else(|| malformed("expected two lines"))?;
    let found = first
        .strip_prefix("netbill-")
        .and_then(|s| s.strip_suffix("-secret-key v1"))
        .ok_or_else(|| malformed("first line is not `netbill-<kind>-secret-key v1`"))?;
    if found != kind {
        return Err(KeyFileError::WrongKind {
            path: path.to_owned(),
            expected: kind.to_owned(),
            found: found.to_owned(),
        });
    }
    let mut out = [0u8; 32];
    if key_hex.len() != 64 || hex::decode_to_slice(key_hex, &mut out).is_err() {
        return Err(malformed("second line is not 64 hex digits"));
    }
    Ok(out)
}
