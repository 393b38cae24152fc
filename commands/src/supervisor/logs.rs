//! Program log files: `<dir>/logs/<name>.out.log` and `.err.log`, size-rotated copy-truncate
//! style, and reading the last lines back.
//!
//! Design: the child's stdout and stderr ARE the log files (opened `O_APPEND` and handed over as
//! its fds), not pipes through the agent. A program therefore keeps logging while the agent is
//! down or restarting, and an adopted program's output is never lost to a broken pipe. The price
//! is rotation: the child's descriptor cannot be swapped, so rotation copies the file to `.1`
//! (after shifting the older ones) and truncates it in place; because the child writes with
//! `O_APPEND`, its next write lands at the new end (0), leaving no hole. Lines written between the
//! copy and the truncation are lost (a window of one file copy, milliseconds), and a file may grow
//! past `log_max_bytes` by what is written between two checks (about a second).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Which of a program's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Both: the stdout lines, then the stderr lines, each prefixed `out| ` or `err| `.
    Both,
}

impl LogStream {
    /// `stdout`, `stderr`, `both` (also `out`, `err`).
    pub fn from_name(s: &str) -> Option<LogStream> {
        match s {
            "stdout" | "out" => Some(Self::Stdout),
            "stderr" | "err" => Some(Self::Stderr),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

/// The most lines one `logs` call returns per stream.
pub const MAX_LINES: u32 = 10_000;

/// `<logs>/<name>.out.log` or `.err.log`.
pub(crate) fn log_path(logs: &Path, name: &str, stream: LogStream) -> PathBuf {
    let suffix = match stream {
        LogStream::Stderr => "err",
        LogStream::Stdout | LogStream::Both => "out",
    };
    logs.join(format!("{name}.{suffix}.log"))
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens a log file for a child: append-only, created `0640` if missing.
pub(crate) fn open_for_child(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// Rotates `path` if it holds at least `max` bytes; returns whether it did.
pub(crate) fn rotate_if_needed(path: &Path, max: u64, keep: u32) -> io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len < max {
        return Ok(false);
    }
    if keep > 0 {
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(path, n + 1))?;
            }
        }
        std::fs::copy(path, rotated(path, 1))?;
    }
    // Truncate through a new descriptor; the child's O_APPEND descriptor follows the new end.
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `n` lines of `path` and, going back, its rotated files `.1`, `.2`, … (at most
/// `keep`). Invalid UTF-8 is replaced.
pub(crate) fn tail(path: &Path, keep: u32, n: usize) -> io::Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    let files = std::iter::once(path.to_path_buf()).chain((1..=keep).map(|k| rotated(path, k)));
    for file in files {
        if lines.len() >= n {
            break;
        }
        let mut older = match tail_file(&file, n - lines.len()) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        older.append(&mut lines);
        lines = older;
    }
    Ok(lines)
}

/// The last `n` lines of one file, read backwards in chunks (log files can be large).
fn tail_file(path: &Path, n: usize) -> io::Result<Vec<String>> {
    const CHUNK: u64 = 64 * 1024;
    let mut f = File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    // A trailing newline ends the last line; it does not start an empty one.
    let mut newlines_needed = n + 1;
    while pos > 0 {
        let step = CHUNK.min(pos);
        pos -= step;
        f.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(0)];
        f.read_exact(&mut chunk)?;
        let found = chunk.iter().filter(|&&b| b == b'\n').count();
        chunk.extend_from_slice(&buf);
        buf = chunk;
        if found >= newlines_needed {
            break;
        }
        newlines_needed -= found;
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let all: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
    let start = all.len().saturating_sub(n);
    Ok(all[start..]
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_tails_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.out.log");
        assert_eq!(tail(&path, 3, 10).unwrap(), Vec::<String>::new());
        for round in 0..4 {
            let text: String = (0..10).map(|i| format!("r{round} l{i}\n")).collect();
            std::fs::write(&path, text).unwrap();
            assert!(rotate_if_needed(&path, 10, 2).unwrap());
        }
        // Rounds 3 and 2 were kept; 1 and 0 fell off.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(rotated(&path, 2).exists() && !rotated(&path, 3).exists());
        std::fs::write(&path, "live 1\nlive 2").unwrap();
        let t = tail(&path, 2, 4).unwrap();
        assert_eq!(t, ["r3 l8", "r3 l9", "live 1", "live 2"]);
        let t = tail(&path, 2, 100).unwrap();
        assert_eq!(t.len(), 22);
        assert_eq!(t[0], "r2 l0");
        assert!(!rotate_if_needed(&path, 1000, 2).unwrap());
    }

    #[test]
    fn tails_big_files_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let t = tail_file(&path, 3).unwrap();
        assert_eq!(t, ["line 49997", "line 49998", "line 49999"]);
        assert_eq!(tail_file(&path, 20_000).unwrap().len(), 20_000);
    }
}
