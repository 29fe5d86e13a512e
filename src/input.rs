//! Bounded reads of the files snaproll is given (the spec, override templates).
//!
//! A path may name anything: a FIFO that never delivers, `/dev/zero` (or a symlink to it) that
//! never ends, a file that grows while it is read. Each file is opened without blocking, its
//! type checked on the opened handle (not the path, which may change in between), and read
//! through `Read::take(limit + 1)`, so memory and time stay bounded whatever it is. `-` names
//! standard input, read up to the same limit (as `kubectl apply -f -` does).

use std::io::Read;
use std::path::{Path, PathBuf};

/// The path that names standard input.
pub const STDIN: &str = "-";

/// How standard input is named in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening, inspecting or reading failed.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory, FIFO, socket or device rather than a regular file.
    #[error("{path}: not a regular file (it is a {kind}); expected a file or - for stdin")]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The file's size is over the limit.
    #[error("{name}: the file is {size} bytes, over the {limit}-byte limit")]
    TooLarge { name: String, size: u64, limit: u64 },
    /// Reading gave more than the limit: standard input, or a file that grew while read.
    #[error("{name}: more than {limit} bytes, over the limit")]
    StreamTooLarge { name: String, limit: u64 },
}

/// Whether `path` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN
}

/// How `path` is named in messages: `<stdin>` for `-`, else the path as given.
pub fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    }
}

/// Reads a regular file (or standard input for `-`) of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    if is_stdin(path) {
        return read_limited(std::io::stdin().lock(), STDIN_NAME, path, limit);
    }
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(InputError::NotAFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(InputError::TooLarge {
            name: path.display().to_string(),
            size: meta.len(),
            limit,
        });
    }
    // A regular file: O_NONBLOCK does not apply, and the file may still grow while it is read.
    read_limited(file, &path.display().to_string(), path, limit)
}

fn read_limited(
    reader: impl Read,
    name: &str,
    path: &Path,
    limit: u64,
) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(InputError::StreamTooLarge {
            name: name.to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Opens for reading without blocking: opening a FIFO with no writer would otherwise wait
/// forever, before the type could be checked.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_block_device() {
            return "block device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_before_reading() {
        let err = read_bounded(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero: not a regular file (it is a character device); expected a file or - for stdin"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read_bounded(dir.path(), 10).unwrap_err();
        assert!(
            matches!(
                err,
                InputError::NotAFile {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_limit_is_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        let err = read_bounded(&p, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the file is 5 bytes, over the 4-byte limit",
                p.display()
            )
        );
        let err = read_limited(std::io::repeat(0), "<stdin>", Path::new("-"), 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<stdin>: more than 4 bytes, over the limit"
        );
    }
}
