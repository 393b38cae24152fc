//! `gridmon release`: release artifacts in the JetStream Object Store — push (digest and optional
//! signature in the object's metadata), list, and the verified fetch the agent's supervisor uses
//! before it installs a version (`docs/releases.md`).
//!
//! Objects are named `<program>/<version>`; releases are immutable: a version is never replaced
//! by different bytes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, object_store};
use futures::StreamExt;
use gridmon_commands::release::{sha256_file, validate_version, Sha256};
use gridmon_nats::config::{
    sign_release, Config, ReleasesConfig, SignatureError, META_SHA256, META_SIGNATURE, META_SIGNER,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// A fetched artifact, verified, in `dest_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256_hex: String,
    pub size: u64,
    /// The key that signed it, when `releases.signing_keys` is configured.
    pub signer: Option<String>,
}

/// Why a release could not be fetched. `Bus` is worth retrying; the others are not (the
/// release is missing, too large, or not trustworthy).
#[derive(Debug)]
pub enum FetchError {
    /// A program or version name that cannot be a release.
    InvalidName(String),
    /// No such release (or no release bucket at all).
    NotFound {
        program: String,
        version: String,
    },
    TooLarge {
        size: u64,
        max: u64,
    },
    /// The object carries no `gridmon-sha256`: it was not pushed with `gridmon release push`.
    MissingDigest,
    /// The bytes do not match the digest the release was pushed with.
    DigestMismatch {
        expected: String,
        actual: String,
    },
    BadSignature(String),
    /// Signing keys are configured and the release is not signed.
    Unsigned,
    /// The bus failed or the download timed out.
    Bus(String),
    Io(String, io::Error),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(m) => write!(f, "{m}"),
            Self::NotFound { program, version } => write!(
                f,
                "release {program} {version} not found; push it with `gridmon release push`"
            ),
            Self::TooLarge { size, max } => write!(
                f,
                "the artifact has {size} bytes, more than releases.max_artifact_bytes ({max})"
            ),
            Self::MissingDigest => write!(
                f,
                "the object has no {META_SHA256} metadata; push it with `gridmon release push`"
            ),
            Self::DigestMismatch { expected, actual } => write!(
                f,
                "artifact digest mismatch: the release says sha256 {expected}, the bytes are {actual}"
            ),
            Self::BadSignature(m) => write!(f, "bad release signature: {m}"),
            Self::Unsigned => write!(
                f,
                "the release is not signed and releases.signing_keys requires a signature; push it with --sign-key"
            ),
            Self::Bus(m) => write!(f, "release store: {m}"),
            Self::Io(ctx, e) => write!(f, "{ctx}: {e}"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

impl From<SignatureError> for FetchError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Unsigned => Self::Unsigned,
            SignatureError::Bad(m) => Self::BadSignature(m),
        }
    }
}

/// Program names: 1..=64 of `[A-Za-z0-9_-]`.
pub fn validate_program(p: &str) -> Result<(), String> {
    if (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid program name {p:?}: use 1 to 64 characters of A-Z a-z 0-9 _ -"
        ))
    }
}

/// The object holding `program`'s `version`.
pub fn object_name(program: &str, version: &str) -> String {
    format!("{program}/{version}")
}

/// Reads an nkey seed from a file: a bare seed (`gridmon keygen`, `nk`), or a `.creds` file.
pub fn load_seed(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && l.len() >= 56 && !l.contains(' '))
        .map(str::to_string)
        .with_context(|| format!("{} holds no nkey seed (S…)", path.display()))
}

/// `gridmon release push PROGRAM VERSION FILE [--sign-key FILE]`.
pub async fn run_push(
    cfg: &Config,
    program: &str,
    version: &str,
    file: &Path,
    sign_key: Option<&str>,
) -> anyhow::Result<()> {
    let rc = &cfg.releases;
    validate_program(program).map_err(anyhow::Error::msg)?;
    validate_version(version)?;
    let meta = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", file.display());
    }
    if meta.len() > rc.max_artifact_bytes {
        bail!(
            "{} has {} bytes, more than releases.max_artifact_bytes ({})",
            file.display(),
            meta.len(),
            rc.max_artifact_bytes
        );
    }
    check_archive_magic(file).await?;
    let sha = {
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || sha256_file(&file)).await??
    };
    let signature = match sign_key {
        Some(seed) => Some(
            sign_release(seed, program, version, &sha)
                .map_err(|e| anyhow::anyhow!("--sign-key: {e}"))?,
        ),
        None => None,
    };

    let client = connect(cfg, "gridmon-release").await?;
    let js = jetstream::new(client.clone());
    let store = tokio::time::timeout(rc.fetch_timeout, open_or_create_store(&js, rc))
        .await
        .context("timed out reaching the release store")??;
    let name = object_name(program, version);

    match store.info(&name).await {
        Ok(existing) if !existing.deleted => {
            let existing_sha = existing.metadata.get(META_SHA256).map(String::as_str);
            if existing_sha != Some(sha.as_str()) {
                bail!(
                    "release {program} {version} already exists with sha256 {}; releases are \
                     immutable: push a new version",
                    existing_sha.unwrap_or("(none)")
                );
            }
            let same_signature = match &signature {
                None => true,
                Some(s) => {
                    existing.metadata.get(META_SIGNER) == Some(&s.signer)
                        && existing.metadata.get(META_SIGNATURE) == Some(&s.signature)
                }
            };
            if same_signature {
                println!("{program} {version} is already pushed (sha256 {sha}); nothing to do");
                return Ok(());
            }
            // Same bytes, new signature: stored again so the metadata carries it.
        }
        Ok(_) => {}
        Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => {}
        Err(e) => bail!("cannot look up {name} in bucket {}: {e}", rc.bucket),
    }

    let mut metadata = HashMap::from([(META_SHA256.to_string(), sha.clone())]);
    if let Some(s) = &signature {
        metadata.insert(META_SIGNER.to_string(), s.signer.clone());
        metadata.insert(META_SIGNATURE.to_string(), s.signature.clone());
    }
    let object_meta = object_store::ObjectMetadata {
        name: name.clone(),
        description: Some(format!("{program} {version}")),
        metadata,
        ..Default::default()
    };
    let mut reader = HashingReader::new(
        tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?,
    );
    let info = tokio::time::timeout(rc.fetch_timeout, store.put(object_meta, &mut reader))
        .await
        .context("timed out uploading the artifact")?
        .with_context(|| format!("cannot upload {name} to bucket {}", rc.bucket))?;
    // The file changed between hashing and uploading: the stored digest would be a lie.
    let uploaded = reader.finish_hex();
    if uploaded != sha {
        let _ = store.delete(&name).await;
        bail!(
            "{} changed while it was uploaded (sha256 {sha} before, {uploaded} during); \
             nothing was pushed",
            file.display()
        );
    }
    client.flush().await.context("cannot flush to NATS")?;
    match &signature {
        Some(s) => println!(
            "pushed {program} {version}: {} bytes, sha256 {sha}, signed by {}",
            info.size, s.signer
        ),
        None => println!(
            "pushed {program} {version}: {} bytes, sha256 {sha}, unsigned",
            info.size
        ),
    }
    Ok(())
}

/// `gridmon release list [PROGRAM]`: a table of the releases in the bucket.
pub async fn run_list(cfg: &Config, program: Option<&str>) -> anyhow::Result<()> {
    let rc = &cfg.releases;
    if let Some(p) = program {
        validate_program(p).map_err(anyhow::Error::msg)?;
    }
    let client = connect(cfg, "gridmon-release").await?;
    let js = jetstream::new(client);
    let Some(store) = tokio::time::timeout(rc.fetch_timeout, open_store(&js, &rc.bucket))
        .await
        .context("timed out reaching the release store")?
        .map_err(anyhow::Error::msg)?
    else {
        println!("no releases (bucket {} does not exist)", rc.bucket);
        return Ok(());
    };
    let mut rows = Vec::new();
    let mut list = store
        .list()
        .await
        .with_context(|| format!("cannot list bucket {}", rc.bucket))?;
    while let Some(info) = tokio::time::timeout(rc.fetch_timeout, list.next())
        .await
        .context("timed out listing the release store")?
    {
        let info = info.with_context(|| format!("cannot list bucket {}", rc.bucket))?;
        let Some((prog, version)) = info.name.split_once('/') else {
            continue;
        };
        if program.is_some_and(|p| p != prog) {
            continue;
        }
        rows.push(ListRow::new(rc, prog, version, &info));
    }
    rows.sort_by(|a, b| {
        (a.program.as_str(), a.modified_s).cmp(&(b.program.as_str(), b.modified_s))
    });
    print!("{}", render_table(&rows));
    Ok(())
}

struct ListRow {
    program: String,
    version: String,
    size: u64,
    sha: String,
    signed: String,
    modified_s: i64,
}

impl ListRow {
    fn new(
        rc: &ReleasesConfig,
        program: &str,
        version: &str,
        info: &object_store::ObjectInfo,
    ) -> Self {
        let sha = info.metadata.get(META_SHA256).cloned().unwrap_or_default();
        let signer = info.metadata.get(META_SIGNER).map(String::as_str);
        let sig = info.metadata.get(META_SIGNATURE).map(String::as_str);
        let signed = match (signer, rc.signing_required()) {
            (None, _) => "no".to_string(),
            (Some(s), false) => short(s, 12),
            (Some(s), true) => match rc.verify_release(program, version, &sha, Some(s), sig) {
                Ok(_) => format!("{} ok", short(s, 12)),
                Err(_) => format!("{} INVALID", short(s, 12)),
            },
        };
        Self {
            program: program.to_string(),
            version: version.to_string(),
            size: u64::try_from(info.size).unwrap_or(u64::MAX),
            sha: if sha.is_empty() {
                "-".into()
            } else {
                short(&sha, 16)
            },
            signed,
            modified_s: info.modified.map_or(0, |t| t.unix_timestamp()),
        }
    }
}

fn render_table(rows: &[ListRow]) -> String {
    let mut lines = vec![[
        "PROGRAM".to_string(),
        "VERSION".into(),
        "SIZE".into(),
        "SHA256".into(),
        "SIGNED".into(),
        "MODIFIED".into(),
    ]];
    for r in rows {
        let modified = u64::try_from(r.modified_s)
            .ok()
            .filter(|s| *s > 0)
            .map(|s| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                )
                .to_string()
            })
            .unwrap_or_else(|| "-".into());
        lines.push([
            r.program.clone(),
            r.version.clone(),
            human_bytes(r.size),
            r.sha.clone(),
            r.signed.clone(),
            modified,
        ]);
    }
    let mut widths = [0usize; 6];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn short(s: &str, n: usize) -> String {
    s.get(..n).unwrap_or(s).to_string()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Downloads `<program>/<version>` into `dest_dir`, verifying its size, its SHA-256 against the
/// digest it was pushed with (the object store's own digest is checked by the client as well),
/// and — when `releases.signing_keys` is configured — a signature by one of those keys, before
/// the bytes are read. The file appears under its final name only once verified.
pub async fn fetch(
    js: &jetstream::Context,
    rc: &ReleasesConfig,
    program: &str,
    version: &str,
    dest_dir: &Path,
) -> Result<Fetched, FetchError> {
    validate_program(program).map_err(FetchError::InvalidName)?;
    validate_version(version).map_err(|e| FetchError::InvalidName(e.to_string()))?;
    match tokio::time::timeout(
        rc.fetch_timeout,
        fetch_inner(js, rc, program, version, dest_dir),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(FetchError::Bus(format!(
            "fetching {program} {version} took longer than releases.fetch_timeout ({})",
            humantime::format_duration(rc.fetch_timeout)
        ))),
    }
}

async fn fetch_inner(
    js: &jetstream::Context,
    rc: &ReleasesConfig,
    program: &str,
    version: &str,
    dest_dir: &Path,
) -> Result<Fetched, FetchError> {
    let not_found = || FetchError::NotFound {
        program: program.to_string(),
        version: version.to_string(),
    };
    let store = open_store(js, &rc.bucket)
        .await
        .map_err(FetchError::Bus)?
        .ok_or_else(not_found)?;
    let name = object_name(program, version);
    let mut object = store.get(&name).await.map_err(|e| match e.kind() {
        object_store::GetErrorKind::NotFound => not_found(),
        _ => FetchError::Bus(format!("cannot get {name}: {e}")),
    })?;
    let info = object.info().clone();
    let size = u64::try_from(info.size).unwrap_or(u64::MAX);
    if size > rc.max_artifact_bytes {
        return Err(FetchError::TooLarge {
            size,
            max: rc.max_artifact_bytes,
        });
    }
    let expected = info
        .metadata
        .get(META_SHA256)
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| gridmon_commands::release::is_sha256_hex(s))
        .ok_or(FetchError::MissingDigest)?;
    let signer = rc.verify_release(
        program,
        version,
        &expected,
        info.metadata.get(META_SIGNER).map(String::as_str),
        info.metadata.get(META_SIGNATURE).map(String::as_str),
    )?;

    tokio::fs::create_dir_all(dest_dir)
        .await
        .map_err(|e| FetchError::Io(format!("cannot create {}", dest_dir.display()), e))?;
    let final_path = dest_dir.join(format!("{program}-{version}.release"));
    let part = PartFile(dest_dir.join(format!(".{program}-{version}.part-{}", std::process::id())));
    let mut out = tokio::fs::File::create(&part.0)
        .await
        .map_err(|e| FetchError::Io(format!("cannot create {}", part.0.display()), e))?;
    let mut hash = Sha256::new();
    let mut written = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match object.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // The client's own check of the object store's SHA-256 digest.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(FetchError::DigestMismatch {
                    expected: info.digest.clone().unwrap_or_default(),
                    actual: format!("bytes that fail the object store digest ({e})"),
                })
            }
            Err(e) => return Err(FetchError::Bus(format!("cannot download {name}: {e}"))),
        };
        written += n as u64;
        if written > size || written > rc.max_artifact_bytes {
            return Err(FetchError::TooLarge {
                size: written,
                max: size.min(rc.max_artifact_bytes),
            });
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])
            .await
            .map_err(|e| FetchError::Io(format!("cannot write {}", part.0.display()), e))?;
    }
    let actual = hash.finish_hex();
    if actual != expected {
        return Err(FetchError::DigestMismatch { expected, actual });
    }
    if written != size {
        return Err(FetchError::Bus(format!(
            "{name}: got {written} of {size} bytes"
        )));
    }
    out.sync_all()
        .await
        .map_err(|e| FetchError::Io(format!("cannot write {}", part.0.display()), e))?;
    drop(out);
    tokio::fs::rename(&part.0, &final_path)
        .await
        .map_err(|e| FetchError::Io(format!("cannot rename to {}", final_path.display()), e))?;
    part.disarm();
    Ok(Fetched {
        path: final_path,
        sha256_hex: actual,
        size: written,
        signer,
    })
}

/// A partial download, removed on drop unless disarmed.
struct PartFile(PathBuf);

impl PartFile {
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Connects for a one-shot command: unlike the agent, gives up if no server answers.
async fn connect(cfg: &Config, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = gridmon_nats::connect::connect(&cfg.nats, name).await?;
    let deadline = cfg
        .nats
        .connect_timeout
        .max(std::time::Duration::from_secs(1))
        * 2;
    tokio::time::timeout(deadline, client.flush())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no NATS server answered at {} within {}",
                cfg.nats.servers.join(","),
                humantime::format_duration(deadline)
            )
        })?
        .context("cannot reach NATS")?;
    Ok(client)
}

/// The release bucket, or `None` if it does not exist.
async fn open_store(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<Option<object_store::ObjectStore>, String> {
    match js.get_object_store(bucket).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if bucket_missing(&e) => Ok(None),
        Err(e) => Err(format!("cannot open bucket {bucket}: {e}")),
    }
}

fn bucket_missing(e: &jetstream::context::ObjectStoreError) -> bool {
    let Some(source) = std::error::Error::source(e) else {
        return false;
    };
    match source.downcast_ref::<jetstream::context::GetStreamError>() {
        Some(gs) => matches!(
            gs.kind(),
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        ),
        None => false,
    }
}

async fn open_or_create_store(
    js: &jetstream::Context,
    rc: &ReleasesConfig,
) -> anyhow::Result<object_store::ObjectStore> {
    if let Some(s) = open_store(js, &rc.bucket)
        .await
        .map_err(anyhow::Error::msg)?
    {
        return Ok(s);
    }
    let max_bytes = match rc.max_bytes {
        Some(b) => i64::try_from(b).context("releases.max_bytes is too large")?,
        None => -1,
    };
    js.create_object_store(object_store::Config {
        bucket: rc.bucket.clone(),
        description: Some("gridmon release artifacts (<program>/<version>)".into()),
        max_bytes,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create bucket {}", rc.bucket))
}

/// Refuses what is neither gzip nor a ustar/GNU tar: an artifact is an archive of the release
/// tree, never a bare executable.
async fn check_archive_magic(file: &Path) -> anyhow::Result<()> {
    let mut f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < head.len() {
        let n = f.read(&mut head[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &head[..got];
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let tar = head.get(257..262) == Some(&b"ustar"[..]);
    if !(gzip || tar) {
        bail!(
            "{} is not a tar or tar.gz archive; pack the release tree, e.g. `tar czf app.tar.gz -C build .`",
            file.display()
        );
    }
    Ok(())
}

/// Hashes what `put` reads, to prove the bytes uploaded are the bytes the digest was taken of.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }

    fn finish_hex(self) -> String {
        self.hash.finish_hex()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.hash.update(&buf.filled()[before..]);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names() {
        for p in ["web", "api-2", "a_b", &"x".repeat(64)] {
            assert!(validate_program(p).is_ok(), "{p}");
        }
        for p in ["", "a/b", "a.b", "a b", "*", &"x".repeat(65)] {
            assert!(validate_program(p).is_err(), "{p}");
        }
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [ListRow {
            program: "web".into(),
            version: "1.0.0".into(),
            size: 2048,
            sha: "abcdef0123456789".into(),
            signed: "no".into(),
            modified_s: 1_700_000_000,
        }];
        let t = render_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("PROGRAM  VERSION  SIZE     SHA256"));
        assert!(lines[1].contains("2.0 KiB") && lines[1].contains("2023-11-14T22:13:20Z"));
    }
}
