//! File helpers: size-limited reads, private (0600) files, and crash-safe atomic replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Reads a whole file, refusing files larger than `max` bytes.
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, larger than the limit of {max}",
                path.display()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file grew past the size limit",
        ));
    }
    Ok(buf)
}

fn open_new(path: &Path, private: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if private { 0o600 } else { 0o644 });
    }
    let f = o.open(path)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Writes a file durably (fsync), creating it with mode 0600 when `private`.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> io::Result<()> {
    let mut f = open_new(path, private)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Path of the temporary file used by [`replace_atomically`].
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Flushes a directory entry table so a rename survives power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `data`: write a temp file, fsync, rename over, fsync the directory.
/// A crash leaves either the old or the new content, never a mix.
pub fn replace_atomically(path: &Path, data: &[u8], private: bool) -> io::Result<()> {
    let tmp = temp_path(path);
    write_file(&tmp, data, private)?;
    commit_temp(path)
}

/// Second half of [`replace_atomically`]: rename the temp file over `path` and sync the directory.
pub fn commit_temp(path: &Path) -> io::Result<()> {
    fs::rename(temp_path(path), path)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    sync_dir(parent.unwrap_or(Path::new(".")))
}
