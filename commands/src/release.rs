//! One program's installed releases on disk: verified unpacking, the atomic `current` switch,
//! the previous version for rollback, and pruning.
//!
//! Layout under a program's root (see `docs/releases.md`):
//!
//! ```text
//! <root>/current   -> releases/<version>      symlink, replaced atomically by rename
//! <root>/previous  -> releases/<version>      the version active before current
//! <root>/releases/<version>/                  the unpacked tree, never modified once in place
//! <root>/releases/<version>/.gridmon-release.json   {version, sha256_hex, installed_ms}
//! <root>/releases/.<version>.tmp-<pid>/       an install in progress (renamed into place)
//! ```
//!
//! Pure filesystem work, all blocking: async callers use `spawn_blocking`. Knows nothing of NATS;
//! the binary fetches the artifact and hands over its path and expected digest.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The metadata file inside every installed tree; an archive may not contain it.
pub const META_FILE: &str = ".gridmon-release.json";
/// An archive that unpacks to more than this is refused.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;
/// An archive with more entries than this is refused.
pub const MAX_ENTRIES: usize = 100_000;

const RELEASES_DIR: &str = "releases";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "invalid release version {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ + -, \
         not starting with '.' or '-'"
    )]
    InvalidVersion(String),
    #[error("artifact digest mismatch: expected sha256 {expected}, got {actual}; the artifact is corrupt or not the release that was pushed")]
    DigestMismatch { expected: String, actual: String },
    #[error("unsafe archive entry, nothing installed: {0}")]
    UnsafeEntry(String),
    #[error("release {0} is not installed; install it before activating it")]
    NotInstalled(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

/// What `list` reports about one installed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub version: String,
    /// When the tree was put in place, ms since the Unix epoch.
    pub installed_ms: i64,
    pub sha256_hex: String,
    /// `current` points at it.
    pub current: bool,
}

/// The file written into each installed tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    version: String,
    sha256_hex: String,
    installed_ms: i64,
}

/// One program's releases: `<root>/releases/<version>/` unpacked trees, `<root>/current` ->
/// symlink `releases/<version>`, plus a record of the previously active version
/// (`<root>/previous`, a symlink of the same form).
#[derive(Debug, Clone)]
pub struct Releases {
    root: PathBuf,
    keep: usize,
}

impl Releases {
    /// `keep`: how many installs `prune` leaves (current and previous are always kept).
    pub fn new(root: PathBuf, keep: usize) -> Self {
        Self { root, keep }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/current`: the directory to run the program from (a symlink, so a path resolved
    /// through it at start keeps pointing at the same tree while another version is activated).
    pub fn current_dir(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// `<root>/releases/<version>` (whether installed or not).
    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.releases_dir().join(version)
    }

    /// The version `current` points at; `None` before the first activation.
    pub fn current(&self) -> Result<Option<String>, ReleaseError> {
        self.read_pointer(CURRENT)
    }

    /// The version that was active before current (the rollback target).
    pub fn previous(&self) -> Result<Option<String>, ReleaseError> {
        self.read_pointer(PREVIOUS)
    }

    /// One installed release, if it is installed.
    pub fn info(&self, version: &str) -> Result<Option<ReleaseInfo>, ReleaseError> {
        validate_version(version)?;
        let current = self.current()?;
        Ok(self.read_meta(version)?.map(|m| ReleaseInfo {
            current: current.as_deref() == Some(version),
            version: m.version,
            installed_ms: m.installed_ms,
            sha256_hex: m.sha256_hex,
        }))
    }

    /// Installed releases, newest install first. Trees without valid metadata are skipped.
    pub fn list(&self) -> Result<Vec<ReleaseInfo>, ReleaseError> {
        let dir = self.releases_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot list {}", dir.display()), e)),
        };
        let current = self.current()?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(version) = name.to_str() else {
                continue;
            };
            if validate_version(version).is_err() {
                continue; // in-progress installs and removals (`.<version>.tmp-<pid>`)
            }
            match self.read_meta(version) {
                Ok(Some(m)) => out.push(ReleaseInfo {
                    current: current.as_deref() == Some(version),
                    version: m.version,
                    installed_ms: m.installed_ms,
                    sha256_hex: m.sha256_hex,
                }),
                Ok(None) => {}
                Err(e) => tracing::warn!(version, error = %e, "skipping a release tree"),
            }
        }
        out.sort_by(|a, b| {
            b.installed_ms
                .cmp(&a.installed_ms)
                .then_with(|| b.version.cmp(&a.version))
        });
        Ok(out)
    }

    /// Verifies `artifact` (a tar or tar.gz file) against `sha256_hex` and unpacks it as
    /// `releases/<version>`; returns that directory.
    ///
    /// The tree appears whole or not at all (unpacked beside, then renamed). Already installed
    /// with the same digest: nothing is done. With another digest: `Conflict` (releases are
    /// immutable; push a new version).
    pub fn install(
        &self,
        version: &str,
        artifact: &Path,
        sha256_hex: &str,
    ) -> Result<PathBuf, ReleaseError> {
        validate_version(version)?;
        let expected = sha256_hex.to_ascii_lowercase();
        let dest = self.release_dir(version);
        if let Some(existing) = self.installed_digest(version)? {
            return if existing == expected {
                Ok(dest)
            } else {
                Err(conflict_digest(version, &existing, &expected))
            };
        }

        // Refuse a wrong artifact before reading any of it as an archive.
        let actual = sha256_file(artifact)?;
        if actual != expected {
            return Err(ReleaseError::DigestMismatch { expected, actual });
        }

        let releases = self.releases_dir();
        fs::create_dir_all(&releases)
            .map_err(|e| io_err(format!("cannot create {}", releases.display()), e))?;
        let tmp = TempTree::new(releases.join(format!(".{version}.tmp-{}", std::process::id())))?;

        // Hash again while unpacking: what lands on disk is what was verified.
        let file = File::open(artifact)
            .map_err(|e| io_err(format!("cannot open {}", artifact.display()), e))?;
        let actual = unpack(file, &tmp.path)?;
        if actual != expected {
            return Err(ReleaseError::DigestMismatch { expected, actual });
        }
        check_symlinks_inside(&tmp.path)?;

        let meta = Meta {
            version: version.to_string(),
            sha256_hex: expected.clone(),
            installed_ms: now_ms(),
        };
        let meta_path = tmp.path.join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| io_err("cannot encode release metadata".into(), e.into()))?;
        fs::write(&meta_path, json)
            .map_err(|e| io_err(format!("cannot write {}", meta_path.display()), e))?;
        sync_filesystem(&tmp.path)?;

        if let Err(e) = fs::rename(&tmp.path, &dest) {
            // Someone installed the same version meanwhile: fine if it is the same release.
            return match self.installed_digest(version)? {
                Some(existing) if existing == expected => Ok(dest),
                Some(existing) => Err(conflict_digest(version, &existing, &expected)),
                None => Err(io_err(
                    format!("cannot move the unpacked tree to {}", dest.display()),
                    e,
                )),
            };
        }
        tmp.keep();
        sync_dir(&releases)?;
        tracing::info!(version, sha256 = %expected, path = %dest.display(), "release installed");
        Ok(dest)
    }

    /// Points `current` at `version` in one atomic rename and records the version it pointed at
    /// before as `previous`; returns that version. Activating the version that is already
    /// current changes nothing and returns `None`.
    pub fn activate(&self, version: &str) -> Result<Option<String>, ReleaseError> {
        validate_version(version)?;
        if self.installed_digest(version)?.is_none() {
            return Err(ReleaseError::NotInstalled(version.to_string()));
        }
        let old = self.current()?;
        if old.as_deref() == Some(version) {
            return Ok(None);
        }
        self.write_pointer(CURRENT, version)?;
        if let Some(old) = &old {
            self.write_pointer(PREVIOUS, old)?;
        }
        tracing::info!(version, previous = ?old, "release activated");
        Ok(old)
    }

    /// Removes installs beyond the newest `keep`, never current or previous, and leftovers of
    /// interrupted installs; returns the versions removed.
    pub fn prune(&self) -> Result<Vec<String>, ReleaseError> {
        let protected: HashSet<String> = [self.current()?, self.previous()?]
            .into_iter()
            .flatten()
            .collect();
        let releases = self.releases_dir();
        let mut removed = Vec::new();
        for info in self.list()?.into_iter().skip(self.keep) {
            if protected.contains(&info.version) {
                continue;
            }
            // Renamed first so the version disappears at once, even if the removal is cut short.
            let doomed = releases.join(format!(".{}.del-{}", info.version, std::process::id()));
            let dir = self.release_dir(&info.version);
            fs::rename(&dir, &doomed)
                .map_err(|e| io_err(format!("cannot remove {}", dir.display()), e))?;
            fs::remove_dir_all(&doomed)
                .map_err(|e| io_err(format!("cannot remove {}", doomed.display()), e))?;
            tracing::info!(version = %info.version, "release pruned");
            removed.push(info.version);
        }
        self.remove_leftovers();
        Ok(removed)
    }

    fn releases_dir(&self) -> PathBuf {
        self.root.join(RELEASES_DIR)
    }

    /// `Some(digest)` if `version` is installed.
    fn installed_digest(&self, version: &str) -> Result<Option<String>, ReleaseError> {
        let dir = self.release_dir(version);
        match self.read_meta(version)? {
            Some(m) => Ok(Some(m.sha256_hex)),
            None if dir.symlink_metadata().is_ok() => Err(ReleaseError::Conflict(format!(
                "{} exists but is not an installed release (no {META_FILE}); remove it",
                dir.display()
            ))),
            None => Ok(None),
        }
    }

    fn read_meta(&self, version: &str) -> Result<Option<Meta>, ReleaseError> {
        let path = self.release_dir(version).join(META_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()), e)),
        };
        let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| {
            ReleaseError::Conflict(format!(
                "{} is not valid release metadata: {e}",
                path.display()
            ))
        })?;
        if meta.version != version {
            return Err(ReleaseError::Conflict(format!(
                "{} names version {:?}, expected {version:?}",
                path.display(),
                meta.version
            )));
        }
        Ok(Some(meta))
    }

    /// Reads `<root>/<name>` -> `releases/<version>`.
    fn read_pointer(&self, name: &str) -> Result<Option<String>, ReleaseError> {
        let link = self.root.join(name);
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io_err(
                    format!("cannot read {} (expected a symlink)", link.display()),
                    e,
                ))
            }
        };
        let mut comps = target.components();
        let version = match (comps.next(), comps.next(), comps.next()) {
            (Some(Component::Normal(dir)), Some(Component::Normal(v)), None)
                if dir == OsStr::new(RELEASES_DIR) =>
            {
                v.to_str().filter(|v| validate_version(v).is_ok())
            }
            _ => None,
        };
        match version {
            Some(v) => Ok(Some(v.to_string())),
            None => Err(ReleaseError::Conflict(format!(
                "{} points at {}, expected releases/<version>",
                link.display(),
                target.display()
            ))),
        }
    }

    /// Replaces `<root>/<name>` with a symlink to `releases/<version>` atomically: readers see
    /// the old target or the new one, never a missing link or a partial tree.
    fn write_pointer(&self, name: &str, version: &str) -> Result<(), ReleaseError> {
        let link = self.root.join(name);
        let tmp = self
            .root
            .join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let target = Path::new(RELEASES_DIR).join(version);
        symlink(&target, &tmp)
            .map_err(|e| io_err(format!("cannot create symlink {}", tmp.display()), e))?;
        if let Err(e) = fs::rename(&tmp, &link) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(
                format!(
                    "cannot replace {} (it must be a symlink managed by gridmon)",
                    link.display()
                ),
                e,
            ));
        }
        sync_dir(&self.root)
    }

    /// Removes `.<version>.tmp-<pid>` / `.<version>.del-<pid>` trees whose process is gone.
    fn remove_leftovers(&self) {
        let Ok(rd) = fs::read_dir(self.releases_dir()) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(pid) = leftover_pid(name) else {
                continue;
            };
            if pid == std::process::id() || process_alive(pid) {
                continue;
            }
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an interrupted install");
            }
        }
    }
}

/// 1..=64 characters of `[A-Za-z0-9._+-]`, not starting with `.` or `-` (so a version is always
/// a plain directory name and never an option).
pub fn validate_version(v: &str) -> Result<(), ReleaseError> {
    let ok = (1..=64).contains(&v.len())
        && !v.starts_with(['.', '-'])
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ReleaseError::InvalidVersion(v.to_string()))
    }
}

/// A streaming SHA-256, for callers that hash while they write.
#[derive(Clone)]
pub struct Sha256(ring::digest::Context);

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest as 64 lowercase hex characters.
    pub fn finish_hex(self) -> String {
        hex(self.0.finish().as_ref())
    }
}

/// The SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ReleaseError> {
    let mut file =
        File::open(path).map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()), e)),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finish_hex())
}

/// Whether `s` looks like a SHA-256 in hex (64 hex digits, either case).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn io_err(context: String, e: io::Error) -> ReleaseError {
    ReleaseError::Io(context, e)
}

fn conflict_digest(version: &str, existing: &str, wanted: &str) -> ReleaseError {
    ReleaseError::Conflict(format!(
        "release {version} is already installed with sha256 {existing}, not {wanted}; \
         releases are immutable, push a new version"
    ))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A directory removed on drop unless kept.
struct TempTree {
    path: PathBuf,
    keep: bool,
}

impl TempTree {
    fn new(path: PathBuf) -> Result<Self, ReleaseError> {
        if path.symlink_metadata().is_ok() {
            fs::remove_dir_all(&path)
                .map_err(|e| io_err(format!("cannot remove stale {}", path.display()), e))?;
        }
        fs::create_dir(&path)
            .map_err(|e| io_err(format!("cannot create {}", path.display()), e))?;
        Ok(Self { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks a tar or tar.gz (gzip magic decides) into `dest`; returns the SHA-256 of every byte
/// of `file`.
fn unpack(file: File, dest: &Path) -> Result<String, ReleaseError> {
    let mut reader = BufReader::with_capacity(
        64 * 1024,
        HashingReader {
            inner: file,
            hash: Sha256::new(),
        },
    );
    let head = reader
        .fill_buf()
        .map_err(|e| io_err("cannot read the artifact".into(), e))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let mut reader = if gzip {
        let mut archive = tar::Archive::new(flate2::bufread::MultiGzDecoder::new(reader));
        unpack_entries(&mut archive, dest)?;
        archive.into_inner().into_inner()
    } else {
        let mut archive = tar::Archive::new(reader);
        unpack_entries(&mut archive, dest)?;
        archive.into_inner()
    };
    // The digest covers the whole file, including what follows the end of the archive.
    io::copy(&mut reader, &mut io::sink())
        .map_err(|e| io_err("cannot read the artifact".into(), e))?;
    Ok(reader.into_inner().hash.finish_hex())
}

fn unpack_entries<R: Read>(archive: &mut tar::Archive<R>, dest: &Path) -> Result<(), ReleaseError> {
    let bad_archive = |e: io::Error| io_err("cannot read the archive".into(), e);
    let mut count = 0usize;
    let mut total = 0u64;
    for entry in archive.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ReleaseError::UnsafeEntry(format!(
                "more than {MAX_ENTRIES} entries"
            )));
        }
        let raw_path = entry.path().map_err(bad_archive)?.into_owned();
        let shown = raw_path.display().to_string();
        let Some(rel) = safe_relative(&raw_path) else {
            return Err(ReleaseError::UnsafeEntry(format!(
                "{shown:?}: absolute paths and `..` are not allowed"
            )));
        };
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            continue; // extension headers the reader has already applied
        }
        if rel.as_os_str().is_empty() {
            if kind == T::Directory {
                continue; // `./`
            }
            return Err(ReleaseError::UnsafeEntry(format!("{shown:?}: empty path")));
        }
        if rel == Path::new(META_FILE) {
            return Err(ReleaseError::UnsafeEntry(format!(
                "{shown:?}: the name is reserved for gridmon's release metadata"
            )));
        }
        let target = dest.join(&rel);
        prepare_parents(dest, &rel, true)?;
        match kind {
            T::Directory => match target.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(ReleaseError::UnsafeEntry(format!(
                        "{shown:?}: a directory replaces a file or link"
                    )))
                }
                Err(_) => fs::create_dir(&target)
                    .map_err(|e| io_err(format!("cannot create {}", target.display()), e))?,
            },
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                if total.saturating_add(size) > MAX_UNPACKED_BYTES {
                    return Err(ReleaseError::UnsafeEntry(format!(
                        "the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes"
                    )));
                }
                remove_non_dir(&target, &shown)?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| io_err(format!("cannot create {}", target.display()), e))?;
                // The header's size is checked above; the reader is capped too (sparse files).
                let cap = MAX_UNPACKED_BYTES - total;
                let n = io::copy(&mut (&mut entry).take(cap.saturating_add(1)), &mut out)
                    .map_err(|e| io_err(format!("cannot unpack {shown:?}"), e))?;
                if n > cap {
                    return Err(ReleaseError::UnsafeEntry(format!(
                        "the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes"
                    )));
                }
                total += n;
                out.flush()
                    .map_err(|e| io_err(format!("cannot write {}", target.display()), e))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err(format!("cannot chmod {}", target.display()), e))?;
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| {
                        ReleaseError::UnsafeEntry(format!("{shown:?}: symlink without target"))
                    })?
                    .into_owned();
                let parent = rel.parent().unwrap_or(Path::new(""));
                if link.as_os_str().is_empty() || !stays_inside(parent, &link) {
                    return Err(ReleaseError::UnsafeEntry(format!(
                        "{shown:?}: symlink to {} points outside the release",
                        link.display()
                    )));
                }
                remove_non_dir(&target, &shown)?;
                symlink(&link, &target).map_err(|e| {
                    io_err(format!("cannot create symlink {}", target.display()), e)
                })?;
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| {
                        ReleaseError::UnsafeEntry(format!("{shown:?}: hard link without target"))
                    })?
                    .into_owned();
                let Some(link_rel) = safe_relative(&link).filter(|p| !p.as_os_str().is_empty())
                else {
                    return Err(ReleaseError::UnsafeEntry(format!(
                        "{shown:?}: hard link to {} points outside the release",
                        link.display()
                    )));
                };
                prepare_parents(dest, &link_rel, false)?;
                let source = dest.join(&link_rel);
                match source.symlink_metadata() {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(ReleaseError::UnsafeEntry(format!(
                            "{shown:?}: hard link to {} which is not a file unpacked before it",
                            link.display()
                        )))
                    }
                }
                remove_non_dir(&target, &shown)?;
                fs::hard_link(&source, &target).map_err(|e| {
                    io_err(format!("cannot create hard link {}", target.display()), e)
                })?;
            }
            T::Block | T::Char | T::Fifo => {
                return Err(ReleaseError::UnsafeEntry(format!(
                    "{shown:?}: device files and FIFOs are not allowed"
                )))
            }
            other => {
                return Err(ReleaseError::UnsafeEntry(format!(
                    "{shown:?}: unsupported entry type {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// The path with `.` removed, or `None` if it is absolute or has `..`.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a relative symlink target, read from directory `parent` (relative to the tree's
/// root), stays inside the tree when resolved lexically.
fn stays_inside(parent: &Path, link: &Path) -> bool {
    let mut depth: Vec<&OsStr> = parent
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for c in link.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Checks (and with `create`, creates) the parent directories of `rel` under `dest`, refusing to
/// go through a symlink or a file: an earlier entry must not redirect a later one outside the tree.
fn prepare_parents(dest: &Path, rel: &Path, create: bool) -> Result<(), ReleaseError> {
    let mut at = dest.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ReleaseError::UnsafeEntry(format!(
                    "{}: writes through a symlink",
                    rel.display()
                )))
            }
            Ok(_) => {
                return Err(ReleaseError::UnsafeEntry(format!(
                    "{}: a parent is not a directory",
                    rel.display()
                )))
            }
            Err(_) if create => fs::create_dir(&at)
                .map_err(|e| io_err(format!("cannot create {}", at.display()), e))?,
            Err(_) => {
                return Err(ReleaseError::UnsafeEntry(format!(
                    "{}: no such directory in the release",
                    rel.display()
                )))
            }
        }
    }
    Ok(())
}

/// A later entry replaces an earlier one of the same name (tar semantics), except a directory.
fn remove_non_dir(target: &Path, shown: &str) -> Result<(), ReleaseError> {
    match target.symlink_metadata() {
        Ok(m) if m.is_dir() => Err(ReleaseError::UnsafeEntry(format!(
            "{shown:?}: replaces a directory"
        ))),
        Ok(_) => fs::remove_file(target)
            .map_err(|e| io_err(format!("cannot replace {}", target.display()), e)),
        Err(_) => Ok(()),
    }
}

/// Every symlink in the tree must resolve inside it; lexical checks alone miss chains such as
/// `b -> .` followed by `a -> b/..`.
fn check_symlinks_inside(root: &Path) -> Result<(), ReleaseError> {
    let canon_root = fs::canonicalize(root)
        .map_err(|e| io_err(format!("cannot resolve {}", root.display()), e))?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd =
            fs::read_dir(&dir).map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
            let ft = entry
                .file_type()
                .map_err(|e| io_err(format!("cannot stat {}", entry.path().display()), e))?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                match fs::canonicalize(&path) {
                    Ok(resolved) if !resolved.starts_with(&canon_root) => {
                        let rel = path.strip_prefix(root).unwrap_or(&path);
                        return Err(ReleaseError::UnsafeEntry(format!(
                            "{}: symlink resolves outside the release",
                            rel.display()
                        )));
                    }
                    // Dangling links stay dangling: the tree never changes after install.
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Flushes the unpacked tree to disk before it is renamed into place, so a crash never leaves
/// `current` pointing at truncated files.
fn sync_filesystem(dir: &Path) -> Result<(), ReleaseError> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir).map_err(|e| io_err(format!("cannot open {}", dir.display()), e))?;
    // SAFETY: `f` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(io_err(
            format!("cannot sync {}", dir.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(format!("cannot sync {}", dir.display()), e))
}

/// The pid in `.<version>.tmp-<pid>` or `.<version>.del-<pid>`.
fn leftover_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, pid) = rest
        .rsplit_once(".tmp-")
        .or_else(|| rest.rsplit_once(".del-"))?;
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One archive entry, written with raw header fields so hostile names survive.
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Exec(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, kind, data, link, mode): (&str, _, &[u8], &str, u32) = match e {
                E::File(n, d) => (n, tar::EntryType::Regular, d, "", 0o644),
                E::Exec(n, d) => (n, tar::EntryType::Regular, d, "", 0o4755),
                E::Dir(n) => (n, tar::EntryType::Directory, b"", "", 0o755),
                E::Symlink(n, l) => (n, tar::EntryType::Symlink, b"", l, 0o777),
                E::Hard(n, l) => (n, tar::EntryType::Link, b"", l, 0o644),
                E::Fifo(n) => (n, tar::EntryType::Fifo, b"", "", 0o644),
            };
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Writes an artifact; returns its path and digest.
    fn artifact(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, String) {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        let sha = sha256_file(&p).unwrap();
        (p, sha)
    }

    /// A simple release whose two files both carry `tag`.
    fn release_tar(tag: &str) -> Vec<u8> {
        let a = format!("a-{tag}");
        let b = format!("b-{tag}");
        tar_of(&[
            E::Dir("bin/"),
            E::Exec("bin/run", a.as_bytes()),
            E::File("data", b.as_bytes()),
        ])
    }

    /// Entries of `releases/` (including hidden leftovers).
    fn releases_entries(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join("releases"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn install_activate_previous_prune_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("prog");
        let r = Releases::new(root.clone(), 2);
        assert_eq!(r.current().unwrap(), None);
        assert_eq!(r.previous().unwrap(), None);
        assert!(r.list().unwrap().is_empty());
        assert_eq!(r.prune().unwrap(), Vec::<String>::new());

        for v in ["v1", "v2", "v3", "v4"] {
            let (p, sha) = artifact(tmp.path(), &format!("{v}.tar"), &release_tar(v));
            let dir = r.install(v, &p, &sha).unwrap();
            assert_eq!(dir, root.join("releases").join(v));
            assert_eq!(
                fs::read(dir.join("data")).unwrap(),
                format!("b-{v}").as_bytes()
            );
            let mode = fs::metadata(dir.join("bin/run"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o755, "exec bit kept, setuid dropped");
            // Idempotent with the same digest, even upper-case; conflict with another.
            assert_eq!(r.install(v, &p, &sha.to_uppercase()).unwrap(), dir);
            let other = "0".repeat(64);
            assert!(matches!(
                r.install(v, &p, &other),
                Err(ReleaseError::Conflict(_))
            ));
            assert_eq!(r.info(v).unwrap().unwrap().sha256_hex, sha);
            // Distinct install times order the list.
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        assert!(matches!(
            r.activate("v9"),
            Err(ReleaseError::NotInstalled(v)) if v == "v9"
        ));

        assert_eq!(r.activate("v1").unwrap(), None);
        assert_eq!(r.current().unwrap().as_deref(), Some("v1"));
        assert_eq!(r.previous().unwrap(), None);
        assert_eq!(r.activate("v2").unwrap().as_deref(), Some("v1"));
        assert_eq!(r.activate("v3").unwrap().as_deref(), Some("v2"));
        assert_eq!(
            r.activate("v3").unwrap(),
            None,
            "already current: no change"
        );
        assert_eq!(r.current().unwrap().as_deref(), Some("v3"));
        assert_eq!(r.previous().unwrap().as_deref(), Some("v2"));
        assert_eq!(
            fs::read(r.current_dir().join("data")).unwrap(),
            b"b-v3".to_vec()
        );
        assert_eq!(
            fs::read_link(root.join("current")).unwrap(),
            Path::new("releases/v3")
        );

        let list = r.list().unwrap();
        let versions: Vec<&str> = list.iter().map(|i| i.version.as_str()).collect();
        assert_eq!(versions, ["v4", "v3", "v2", "v1"]);
        assert_eq!(
            list.iter()
                .filter(|i| i.current)
                .map(|i| &i.version)
                .collect::<Vec<_>>(),
            ["v3"]
        );
        assert!(list
            .windows(2)
            .all(|w| w[0].installed_ms >= w[1].installed_ms));

        // keep = 2: v4 and v3 are the newest; v2 is previous; v1 goes.
        assert_eq!(r.prune().unwrap(), ["v1"]);
        assert_eq!(releases_entries(&root), ["v2", "v3", "v4"]);
        assert_eq!(r.prune().unwrap(), Vec::<String>::new());

        // Rollback: previous becomes current and the rolled-back version becomes previous.
        assert_eq!(r.activate("v2").unwrap().as_deref(), Some("v3"));
        assert_eq!(r.previous().unwrap().as_deref(), Some("v3"));
        let r0 = Releases::new(root.clone(), 0);
        assert_eq!(r0.prune().unwrap(), ["v4"]);
        assert_eq!(releases_entries(&root), ["v2", "v3"]);
    }

    #[test]
    fn digest_mismatch_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("prog");
        let r = Releases::new(root.clone(), 3);
        let (p, sha) = artifact(tmp.path(), "a.tar", &release_tar("x"));
        let wrong = "ab".repeat(32);
        match r.install("1.0", &p, &wrong) {
            Err(ReleaseError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha);
            }
            other => panic!("{other:?}"),
        }
        assert!(releases_entries(&root).is_empty());
        assert!(r.list().unwrap().is_empty());
        assert!(matches!(
            r.install("bad/version", &p, &sha),
            Err(ReleaseError::InvalidVersion(_))
        ));
        assert!(matches!(
            r.install("1.0", &tmp.path().join("missing.tar"), &sha),
            Err(ReleaseError::Io(..))
        ));
    }

    #[test]
    fn tar_gz_is_unpacked() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Releases::new(tmp.path().join("prog"), 3);
        let (p, sha) = artifact(tmp.path(), "a.tar.gz", &gzip(&release_tar("gz")));
        let dir = r.install("2.0.0-rc.1+build.5", &p, &sha).unwrap();
        assert_eq!(fs::read(dir.join("bin/run")).unwrap(), b"a-gz");
        assert_eq!(fs::read(dir.join("data")).unwrap(), b"b-gz");
        let info = r.info("2.0.0-rc.1+build.5").unwrap().unwrap();
        assert_eq!(info.sha256_hex, sha);
        assert!(!info.current);
    }

    #[test]
    fn links_inside_the_tree_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Releases::new(tmp.path().join("prog"), 3);
        let bytes = tar_of(&[
            E::Dir("lib/"),
            E::File("lib/libx.so.1", b"lib"),
            E::Symlink("lib/libx.so", "libx.so.1"),
            E::Symlink("up", "lib/../lib/libx.so.1"),
            E::Symlink("dangling", "not-there"),
            E::Hard("copy", "lib/libx.so.1"),
            E::File("./dot/nested/file", b"n"),
        ]);
        let (p, sha) = artifact(tmp.path(), "a.tar", &bytes);
        let dir = r.install("1", &p, &sha).unwrap();
        assert_eq!(fs::read(dir.join("lib/libx.so")).unwrap(), b"lib");
        assert_eq!(fs::read(dir.join("up")).unwrap(), b"lib");
        assert_eq!(fs::read(dir.join("copy")).unwrap(), b"lib");
        assert_eq!(fs::read(dir.join("dot/nested/file")).unwrap(), b"n");
    }

    #[test]
    fn unsafe_entries_are_refused_and_leave_nothing() {
        let check = |name: &str, entries: &[E], expect: &str| {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("prog");
            let r = Releases::new(root.clone(), 3);
            let (p, sha) = artifact(tmp.path(), "a.tar", &tar_of(entries));
            match r.install("1", &p, &sha) {
                Err(ReleaseError::UnsafeEntry(msg)) => {
                    assert!(msg.contains(expect), "{name}: {msg:?} lacks {expect:?}")
                }
                other => panic!("{name}: {other:?}"),
            }
            assert!(releases_entries(&root).is_empty(), "{name}: leftovers");
            assert!(!tmp.path().join("evil").exists(), "{name}: wrote outside");
            assert!(!root.join("evil").exists(), "{name}: wrote outside");
        };
        check("parent", &[E::File("../evil", b"x")], "`..`");
        check("nested parent", &[E::File("a/../../evil", b"x")], "`..`");
        check("absolute", &[E::File("/tmp/evil", b"x")], "absolute");
        check(
            "symlink up",
            &[E::Symlink("l", "../../evil")],
            "points outside",
        );
        check(
            "symlink absolute",
            &[E::Symlink("l", "/etc/passwd")],
            "points outside",
        );
        check(
            "write through symlink",
            &[E::Dir("sub/"), E::Symlink("s", "sub"), E::File("s/f", b"x")],
            "through a symlink",
        );
        check(
            "symlink chain",
            &[E::Symlink("b", "."), E::Symlink("a", "b/..")],
            "resolves outside",
        );
        check("hard link up", &[E::Hard("h", "../evil")], "outside");
        check(
            "hard link absolute",
            &[E::Hard("h", "/etc/passwd")],
            "outside",
        );
        check("fifo", &[E::Fifo("pipe")], "device files");
        check("reserved name", &[E::File(META_FILE, b"{}")], "reserved");
        check(
            "dir over file",
            &[E::File("x", b"1"), E::Dir("x/")],
            "replaces a file",
        );
    }

    #[test]
    fn activate_is_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("prog");
        let r = Releases::new(root.clone(), 3);
        for v in ["v1", "v2"] {
            let (p, sha) = artifact(tmp.path(), &format!("{v}.tar"), &release_tar(v));
            r.install(v, &p, &sha).unwrap();
        }
        r.activate("v1").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            let current = r.current_dir();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Resolve once, then read both files from that one tree.
                    let tree = fs::canonicalize(&current).expect("current always resolves");
                    let a = fs::read_to_string(tree.join("bin/run")).unwrap();
                    let b = fs::read_to_string(tree.join("data")).unwrap();
                    assert_eq!(a.strip_prefix("a-"), b.strip_prefix("b-"), "mixed tree");
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..300 {
            let v = if i % 2 == 0 { "v2" } else { "v1" };
            r.activate(v).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(r.current().unwrap().as_deref(), Some("v1"));
        assert_eq!(r.previous().unwrap().as_deref(), Some("v2"));
        // No temporary links are left behind.
        let mut names: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["current", "previous", "releases"]);
    }

    #[test]
    fn a_foreign_current_is_a_conflict() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("prog");
        fs::create_dir_all(&root).unwrap();
        symlink("/opt/elsewhere", root.join("current")).unwrap();
        let r = Releases::new(root, 3);
        assert!(matches!(r.current(), Err(ReleaseError::Conflict(_))));
    }

    #[test]
    fn interrupted_installs_are_cleaned_by_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("prog");
        let r = Releases::new(root.clone(), 3);
        // A pid that cannot be alive (above the kernel's pid_max limit).
        fs::create_dir_all(root.join("releases/.1.0.tmp-99999999/x")).unwrap();
        assert!(r.list().unwrap().is_empty());
        r.prune().unwrap();
        assert!(releases_entries(&root).is_empty());
    }

    #[test]
    fn validate_version_table() {
        fn check(v: &str, ok: bool) {
            assert_eq!(validate_version(v).is_ok(), ok, "{v:?}");
        }
        for v in [
            "1",
            "1.2.3",
            "v2.0.0-rc.1+build.7",
            "2024_01_05",
            "A-b",
            &"x".repeat(64),
        ] {
            check(v, true);
        }
        for v in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "a/b",
            "a b",
            "ä",
            "a\0",
            "1:2",
            &"x".repeat(65),
        ] {
            check(v, false);
        }
    }

    #[test]
    fn sha256_of_a_known_input() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, sha) = artifact(tmp.path(), "abc", b"abc");
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&sha) && !is_sha256_hex("xyz"));
    }
}
