//! Allocation-free helpers for reading `/proc` and `/sys`: files into reused buffers, byte-level
//! field parsing, the error classification shared by the readers, and the few libc calls they need.
//!
//! The collectors run every second on every node, so the hot paths read each file with one
//! `open` and as few `read`s as possible into a buffer whose capacity survives between samples,
//! and parse the bytes in place instead of building `String`s and `Vec`s per line.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Room kept free before each `read`: most of the files read here are smaller, so one `read`
/// takes them whole.
const READ_CHUNK: usize = 4096;

/// A read buffer reused for every file of a sample.
///
/// Its storage stays initialised up to the largest file read so far, so a read costs no
/// allocation and no zeroing (a `Vec` truncated and resized again would memset its spare room
/// before every `read`).
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    storage: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// The content of the last file read.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.storage[..self.len]
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[..self.len]
    }

    /// Replaces the content with the whole of `path`; on failure the content is empty.
    pub(crate) fn read(&mut self, path: &Path) -> io::Result<()> {
        self.len = 0;
        let mut file = File::open(path)?;
        self.fill(usize::MAX, false, |buf, _| file.read(buf))
    }

    /// Replaces the content with at most `limit` bytes from the start of `path`. Used where a
    /// file can be huge (a cmdline may be megabytes) but only its head is wanted.
    pub(crate) fn read_prefix(&mut self, path: &Path, limit: usize) -> io::Result<()> {
        self.len = 0;
        let mut file = File::open(path)?;
        self.fill(limit, false, |buf, _| file.read(buf))
    }

    /// Replaces the content with `file` read again from its start (`pread`), for a file kept
    /// open between samples.
    ///
    /// Only for procfs files of a single record, such as `/proc/<pid>/stat`: the kernel hands
    /// those over whole in one read when the buffer is large enough, so a short read is the end
    /// of the file and the second, empty read is saved.
    pub(crate) fn reread_record(&mut self, file: &File) -> io::Result<()> {
        self.fill(usize::MAX, true, |buf, offset| {
            file.read_at(buf, offset as u64)
        })
    }

    /// Like [`Self::reread_record`], for a file just opened.
    pub(crate) fn read_record(&mut self, path: &Path) -> io::Result<File> {
        self.len = 0;
        let file = File::open(path)?;
        self.reread_record(&file)?;
        Ok(file)
    }

    /// Reads with `read(buf, offset)` until end of file, `limit` bytes, or (with
    /// `short_is_end`) the first short read.
    fn fill(
        &mut self,
        limit: usize,
        short_is_end: bool,
        mut read: impl FnMut(&mut [u8], usize) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.len = 0;
        while self.len < limit {
            if self.storage.len() - self.len < READ_CHUNK / 4 {
                let grown = (self.storage.len() * 2).max(self.len + READ_CHUNK);
                self.storage.resize(grown, 0);
            }
            let end = self.storage.len().min(limit);
            let want = end - self.len;
            match read(&mut self.storage[self.len..end], self.len) {
                Ok(0) => break,
                Ok(n) => {
                    self.len += n;
                    if short_is_end && n < want {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.len = 0;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// A reusable path `<base>/<name>` built in one byte buffer, so the per-process paths
/// (`/proc/<pid>/stat`, …) cost no allocation after the first process.
#[derive(Debug, Default)]
pub(crate) struct PathBuffer {
    bytes: Vec<u8>,
    base_len: usize,
}

impl PathBuffer {
    /// Starts a new base: `root/<component>`.
    pub(crate) fn set_base(&mut self, root: &Path, component: impl std::fmt::Display) {
        use std::io::Write as _;
        self.bytes.clear();
        self.bytes.extend_from_slice(root.as_os_str().as_bytes());
        // Writing into a Vec<u8> cannot fail.
        let _ = write!(self.bytes, "/{component}");
        self.base_len = self.bytes.len();
    }

    /// The base itself.
    pub(crate) fn base(&mut self) -> &Path {
        self.bytes.truncate(self.base_len);
        Path::new(OsStr::from_bytes(&self.bytes))
    }

    /// `<base>/<name>`.
    pub(crate) fn join(&mut self, name: &str) -> &Path {
        self.bytes.truncate(self.base_len);
        self.bytes.push(b'/');
        self.bytes.extend_from_slice(name.as_bytes());
        Path::new(OsStr::from_bytes(&self.bytes))
    }
}

/// What a failed read of a per-process file means for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The process exited (or its pid was reaped) while it was being read.
    Vanished,
    /// Reading needs privileges the agent lacks (another user's `io` or `fd`, `hidepid`).
    Denied,
    /// Anything else: an I/O error, an unsupported file.
    Other,
}

impl Fault {
    pub(crate) fn of(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound => Self::Vanished,
            io::ErrorKind::PermissionDenied => Self::Denied,
            // procfs answers ESRCH on an already opened file whose task has gone.
            _ if err.raw_os_error() == Some(libc::ESRCH) => Self::Vanished,
            _ => Self::Other,
        }
    }
}

/// The lines of `buf`, without their `\n`.
pub(crate) fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// The whitespace-separated fields of `line`.
pub(crate) fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

/// A decimal without sign; `None` on anything else (including overflow).
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// A decimal with an optional leading `-`.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', digits)) => parse_u64(digits).and_then(|n| 0i64.checked_sub_unsigned(n)),
        _ => parse_u64(s).and_then(|n| i64::try_from(n).ok()),
    }
}

/// A decimal fraction such as `1234.56`, as `/proc/uptime` and `/proc/loadavg` write them.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `<key><sep>` followed by a number (e.g. `MemTotal:   16318600 kB` or `read_bytes: 4096`):
/// the first whitespace-separated field after the key.
pub(crate) fn keyed_u64(line: &[u8], key: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(key)?;
    fields(rest).next().and_then(parse_u64)
}

/// `sysconf(name)` as an unsigned value; `None` when the system does not define it.
pub(crate) fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf takes a plain integer, touches no memory of ours and reports unknown
    // names by returning -1.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

/// The soft limit on this process's open files (`u64::MAX` when unlimited).
// rlim_t is u32 on some 32-bit targets.
#[allow(clippy::useless_conversion)]
pub(crate) fn open_files_limit() -> Option<u64> {
    let mut lim = std::mem::MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: `lim` is writable memory of the size getrlimit fills, read only after success.
    let lim = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) != 0 {
            return None;
        }
        lim.assume_init()
    };
    Some(u64::from(lim.rlim_cur))
}

/// Capacity and usage of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsUsage {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

// The statvfs field types differ between targets (u32 on some 32-bit ones), hence u64::from.
#[allow(clippy::useless_conversion)]
pub(crate) fn statvfs(path: &Path) -> io::Result<FsUsage> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call, and `st` points
    // to writable memory of the size statvfs fills; it is only read after statvfs reports success.
    let st = unsafe {
        if libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        st.assume_init()
    };
    let frsize = u64::from(st.f_frsize);
    Ok(FsUsage {
        total_bytes: u64::from(st.f_blocks).saturating_mul(frsize),
        free_bytes: u64::from(st.f_bfree).saturating_mul(frsize),
        avail_bytes: u64::from(st.f_bavail).saturating_mul(frsize),
        inodes_total: u64::from(st.f_files),
        inodes_free: u64::from(st.f_ffree),
    })
}

/// Whether `path` is a mounted procfs (and not a fixture tree standing in for one).
pub(crate) fn is_procfs(path: &Path) -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: as for statvfs above: a valid C string and a writable out-parameter that is only
    // read after success.
    let st = unsafe {
        if libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) != 0 {
            return false;
        }
        st.assume_init()
    };
    // f_type's integer type differs between libc targets.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let f_type = i64::from(st.f_type);
    f_type == PROC_SUPER_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        fn check_u(input: &str, expected: Option<u64>) {
            assert_eq!(parse_u64(input.as_bytes()), expected, "{input:?}");
        }
        check_u("0", Some(0));
        check_u("18446744073709551615", Some(u64::MAX));
        check_u("18446744073709551616", None);
        check_u("", None);
        check_u("12a", None);
        check_u("-1", None);
        check_u("+1", None);

        fn check_i(input: &str, expected: Option<i64>) {
            assert_eq!(parse_i64(input.as_bytes()), expected, "{input:?}");
        }
        check_i("-20", Some(-20));
        check_i("19", Some(19));
        check_i("-", None);
        check_i("-9223372036854775808", Some(i64::MIN));
        check_i("9223372036854775808", None);

        assert_eq!(parse_f64(b"1234.56"), Some(1234.56));
        assert_eq!(parse_f64(b"x"), None);
    }

    #[test]
    fn fields_and_keys() {
        let got: Vec<&[u8]> = fields(b"  a\tbb  c \n").collect();
        assert_eq!(got, [&b"a"[..], b"bb", b"c"]);
        assert_eq!(
            keyed_u64(b"MemTotal:       16318600 kB", b"MemTotal:"),
            Some(16318600)
        );
        assert_eq!(keyed_u64(b"MemFree: 1 kB", b"MemTotal:"), None);
        assert_eq!(lines(b"a\n\nb\n").count(), 2);
    }

    #[test]
    fn fault_classification() {
        fn check(err: io::Error, expected: Fault) {
            assert_eq!(Fault::of(&err), expected, "{err:?}");
        }
        check(io::ErrorKind::NotFound.into(), Fault::Vanished);
        check(io::Error::from_raw_os_error(libc::ENOENT), Fault::Vanished);
        check(io::Error::from_raw_os_error(libc::ESRCH), Fault::Vanished);
        check(io::ErrorKind::PermissionDenied.into(), Fault::Denied);
        check(io::Error::from_raw_os_error(libc::EACCES), Fault::Denied);
        check(io::Error::from_raw_os_error(libc::EPERM), Fault::Denied);
        check(io::Error::from_raw_os_error(libc::EINVAL), Fault::Other);
    }

    #[test]
    fn reads_reuse_the_buffer_and_respect_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).expect("write");

        let mut buf = ReadBuf::default();
        buf.read(&path).expect("read");
        assert_eq!(buf.bytes(), content);
        let storage = buf.storage.len();
        buf.read(&path).expect("read again");
        assert_eq!(buf.bytes(), content);
        assert_eq!(
            buf.storage.len(),
            storage,
            "a second read of the same size must not grow"
        );

        buf.read_prefix(&path, 5000).expect("prefix");
        assert_eq!(buf.bytes(), &content[..5000]);
        buf.read_prefix(&path, 0).expect("empty prefix");
        assert!(buf.bytes().is_empty());

        let file = buf.read_record(&path).expect("record");
        assert_eq!(buf.bytes(), content, "a full buffer is not a short read");
        std::fs::write(&path, b"12 (x) S 1\n").expect("rewrite");
        buf.reread_record(&file).expect("reread");
        assert_eq!(buf.bytes(), b"12 (x) S 1\n");

        let err = buf
            .read(&dir.path().join("missing"))
            .expect_err("missing file");
        assert_eq!(Fault::of(&err), Fault::Vanished);
        assert!(buf.bytes().is_empty());
    }

    #[test]
    fn procfs_records_reread_in_place() {
        let mut buf = ReadBuf::default();
        let file = buf
            .read_record(Path::new("/proc/self/stat"))
            .expect("own stat");
        let first = buf.bytes().to_vec();
        assert!(first.ends_with(b"\n"));
        buf.reread_record(&file).expect("reread");
        let pid = std::process::id().to_string();
        assert!(buf.bytes().starts_with(pid.as_bytes()) && buf.bytes().ends_with(b"\n"));
        assert_eq!(
            buf.bytes().iter().filter(|&&b| b == b'\n').count(),
            1,
            "one record, once"
        );
    }

    /// The process collector keeps `stat` files open between samples and relies on procfs
    /// refusing to read them once their process is gone, even if the pid is reused.
    #[test]
    #[allow(clippy::disallowed_methods)] // a bare child suffices here; nothing outlives the test
    fn procfs_record_of_an_exited_process_reads_as_vanished() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let path = format!("/proc/{}/stat", child.id());
        let mut buf = ReadBuf::default();
        let file = buf.read_record(Path::new(&path)).expect("child's stat");
        assert!(buf.bytes().starts_with(child.id().to_string().as_bytes()));
        child.kill().expect("kill");
        child.wait().expect("reap");
        let err = buf.reread_record(&file).expect_err("reaped process");
        assert_eq!(Fault::of(&err), Fault::Vanished, "{err:?}");
    }

    #[test]
    fn path_buffer() {
        let mut p = PathBuffer::default();
        p.set_base(Path::new("/proc"), 42);
        assert_eq!(p.join("stat"), Path::new("/proc/42/stat"));
        assert_eq!(p.join("io"), Path::new("/proc/42/io"));
        assert_eq!(p.base(), Path::new("/proc/42"));
    }

    #[test]
    fn host_filesystems() {
        assert!(is_procfs(Path::new("/proc")));
        assert!(!is_procfs(Path::new("/")));
        let root = statvfs(Path::new("/")).expect("statvfs /");
        assert!(root.total_bytes > 0 && root.free_bytes <= root.total_bytes);
        assert!(statvfs(Path::new("/nonexistent/really")).is_err());
        assert!(open_files_limit().is_some_and(|n| n >= 3));
    }
}
