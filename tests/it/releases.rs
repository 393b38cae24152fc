//! Release artifacts in the JetStream Object Store: push, list, and the verified fetch the
//! supervisor installs from — against a real nats-server.
//!
//! `fetch` lives in the binary (`src/release.rs`); the file is compiled into this test crate as
//! well, so its typed errors can be asserted directly. The CLI is driven through the binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use gridmon_commands::release::{sha256_file, Releases};
use gridmon_nats::config::{ReleasesConfig, META_SHA256, META_SIGNATURE, META_SIGNER};
use gridmon_nats::{Config, Overrides};
use gridmon_tests::nats_server::NatsServer;

use crate::GRIDMON;

#[allow(dead_code)]
#[path = "../../src/release.rs"]
mod release;

use release::{fetch, FetchError};

/// Two user nkey seeds, made for these tests only.
const SEED_A: &str = "SUAACAQDAQCQMBYIBEFAWDANBYHRAEISCMKBKFQXDAMRUGY4DUPB6IC5CQ";
const SEED_B: &str = "SUAGKZTHNBUWU23MNVXG64DROJZXI5LWO54HS6T3PR6X474AQGBIHBH5L4";

fn config(url: &str) -> Config {
    let env = HashMap::from([("NATS_URL".to_string(), url.to_string())]);
    let mut c = Config::load(None, &env, &Overrides::default()).unwrap();
    c.releases.fetch_timeout = Duration::from_secs(20);
    c
}

/// A one-file ustar archive, written by hand (the test crate does not depend on `tar`).
fn tiny_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    h[136..148].copy_from_slice(b"14500000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0);
    out
}

fn write_artifact(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, String) {
    let p = dir.join(name);
    std::fs::write(&p, tiny_tar("hello.txt", content)).unwrap();
    let sha = sha256_file(&p).unwrap();
    (p, sha)
}

async fn store(client: &async_nats::Client, bucket: &str) -> object_store::ObjectStore {
    jetstream::new(client.clone())
        .get_object_store(bucket)
        .await
        .unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn push_then_fetch_round_trip_with_digest() {
    let server = NatsServer::start().unwrap();
    let cfg = config(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let (artifact, sha) = write_artifact(dir.path(), "web-1.tar", b"hello from 1.0.0");

    release::run_push(&cfg, "web", "1.0.0", &artifact, None)
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let info = store(&client, "gridmon-releases")
        .await
        .info("web/1.0.0")
        .await
        .unwrap();
    assert_eq!(info.metadata.get(META_SHA256), Some(&sha));
    assert!(!info.metadata.contains_key(META_SIGNATURE));
    let nuid = info.nuid.clone();

    // Same bytes again: nothing changes. Other bytes under the same version: refused.
    release::run_push(&cfg, "web", "1.0.0", &artifact, None)
        .await
        .unwrap();
    let again = store(&client, "gridmon-releases")
        .await
        .info("web/1.0.0")
        .await
        .unwrap();
    assert_eq!(again.nuid, nuid, "an identical push is a no-op");
    let (other, _) = write_artifact(dir.path(), "web-1b.tar", b"something else");
    let err = release::run_push(&cfg, "web", "1.0.0", &other, None)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("immutable"), "{err:#}");
    let not_tar = dir.path().join("binary");
    std::fs::write(&not_tar, b"\x7fELF not an archive").unwrap();
    let err = release::run_push(&cfg, "web", "1.0.1", &not_tar, None)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not a tar"), "{err:#}");
    assert!(release::run_push(&cfg, "web", "../x", &artifact, None)
        .await
        .is_err());

    let dest = dir.path().join("downloads");
    let got = fetch(&js, &cfg.releases, "web", "1.0.0", &dest)
        .await
        .unwrap();
    assert_eq!(got.sha256_hex, sha);
    assert_eq!(got.signer, None);
    assert_eq!(
        std::fs::read(&got.path).unwrap(),
        std::fs::read(&artifact).unwrap()
    );
    assert_eq!(leftovers(&dest).len(), 1, "only the verified file");

    // What the supervisor does next.
    let releases = Releases::new(dir.path().join("web"), 3);
    releases
        .install("1.0.0", &got.path, &got.sha256_hex)
        .unwrap();
    releases.activate("1.0.0").unwrap();
    assert_eq!(
        std::fs::read(releases.current_dir().join("hello.txt")).unwrap(),
        b"hello from 1.0.0"
    );

    match fetch(&js, &cfg.releases, "web", "9.9.9", &dest).await {
        Err(FetchError::NotFound { program, version }) => {
            assert_eq!((program.as_str(), version.as_str()), ("web", "9.9.9"))
        }
        other => panic!("{other:?}"),
    }
    let elsewhere = ReleasesConfig {
        bucket: "no-such-bucket".into(),
        ..cfg.releases.clone()
    };
    assert!(matches!(
        fetch(&js, &elsewhere, "web", "1.0.0", &dest).await,
        Err(FetchError::NotFound { .. })
    ));
    let small = ReleasesConfig {
        max_artifact_bytes: 100,
        ..cfg.releases.clone()
    };
    assert!(matches!(
        fetch(&js, &small, "web", "1.0.0", &dest).await,
        Err(FetchError::TooLarge { max: 100, .. })
    ));
    assert!(matches!(
        fetch(&js, &cfg.releases, "web", "..", &dest).await,
        Err(FetchError::InvalidName(_))
    ));
}

#[tokio::test]
async fn signed_releases_are_required_when_keys_are_configured() {
    let server = NatsServer::start().unwrap();
    let cfg = config(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());

    let (signed, sha) = write_artifact(dir.path(), "a.tar", b"signed 2.0");
    release::run_push(&cfg, "api", "2.0", &signed, Some(SEED_A))
        .await
        .unwrap();
    let info = store(&client, "gridmon-releases")
        .await
        .info("api/2.0")
        .await
        .unwrap();
    let signer_a = info.metadata.get(META_SIGNER).unwrap().clone();
    assert!(signer_a.starts_with('U'), "{signer_a}");
    assert!(info.metadata.contains_key(META_SIGNATURE));

    let strict = ReleasesConfig {
        signing_keys: vec![signer_a.clone()],
        ..cfg.releases.clone()
    };
    strict.validate().unwrap();
    let dest = dir.path().join("dl");
    let got = fetch(&js, &strict, "api", "2.0", &dest).await.unwrap();
    assert_eq!(got.signer.as_deref(), Some(signer_a.as_str()));
    assert_eq!(got.sha256_hex, sha);

    // Unsigned, while a signature is required.
    let (unsigned, _) = write_artifact(dir.path(), "b.tar", b"unsigned 2.1");
    release::run_push(&cfg, "api", "2.1", &unsigned, None)
        .await
        .unwrap();
    assert!(matches!(
        fetch(&js, &strict, "api", "2.1", &dest).await,
        Err(FetchError::Unsigned)
    ));
    // ...but fine where signing is not configured.
    fetch(&js, &cfg.releases, "api", "2.1", &dest)
        .await
        .unwrap();

    // Signed by a key that is not trusted.
    let (by_b, _) = write_artifact(dir.path(), "c.tar", b"signed by b");
    release::run_push(&cfg, "api", "2.2", &by_b, Some(SEED_B))
        .await
        .unwrap();
    assert!(matches!(
        fetch(&js, &strict, "api", "2.2", &dest).await,
        Err(FetchError::BadSignature(_))
    ));

    // A valid signature copied onto another version does not transfer.
    let bucket = store(&client, "gridmon-releases").await;
    let mut forged_meta = info.metadata.clone();
    forged_meta.insert(META_SHA256.into(), sha.clone());
    bucket
        .put(
            object_store::ObjectMetadata {
                name: "api/2.3".into(),
                metadata: forged_meta,
                ..Default::default()
            },
            &mut std::fs::read(&signed).unwrap().as_slice(),
        )
        .await
        .unwrap();
    assert!(matches!(
        fetch(&js, &strict, "api", "2.3", &dest).await,
        Err(FetchError::BadSignature(_))
    ));

    // Adding a signature to an already pushed release re-stores it with the signature.
    release::run_push(&cfg, "api", "2.1", &unsigned, Some(SEED_A))
        .await
        .unwrap();
    fetch(&js, &strict, "api", "2.1", &dest).await.unwrap();
    assert!(
        leftovers(&dest).iter().all(|n| !n.starts_with('.')),
        "no partial downloads: {:?}",
        leftovers(&dest)
    );
}

#[tokio::test]
async fn tampered_metadata_is_a_digest_mismatch() {
    let server = NatsServer::start().unwrap();
    let cfg = config(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let (good, good_sha) = write_artifact(dir.path(), "good.tar", b"the real release");
    release::run_push(&cfg, "db", "1", &good, None)
        .await
        .unwrap();

    // Other bytes stored under a name whose metadata claims the good digest.
    let bucket = store(&client, "gridmon-releases").await;
    let evil = tiny_tar("hello.txt", b"not the real release");
    bucket
        .put(
            object_store::ObjectMetadata {
                name: "db/2".into(),
                metadata: HashMap::from([(META_SHA256.to_string(), good_sha.clone())]),
                ..Default::default()
            },
            &mut evil.as_slice(),
        )
        .await
        .unwrap();
    let dest = dir.path().join("dl");
    match fetch(&js, &cfg.releases, "db", "2", &dest).await {
        Err(FetchError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, good_sha);
            assert_ne!(actual, good_sha);
        }
        other => panic!("{other:?}"),
    }
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));

    // No digest at all: not a gridmon release.
    bucket.put("db/3", &mut evil.as_slice()).await.unwrap();
    assert!(matches!(
        fetch(&js, &cfg.releases, "db", "3", &dest).await,
        Err(FetchError::MissingDigest)
    ));
}

/// Runs the binary with `NATS_URL`; returns (exit code, stdout, stderr).
async fn gridmon(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        gridmon_commands::child::command(GRIDMON)
            .args(args)
            .env("NATS_URL", url)
            .env_remove("GRIDMON_CONFIG")
            .env("GRIDMON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("gridmon release finished within 30 s")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_push_and_list() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (artifact, sha) = write_artifact(dir.path(), "web.tar", b"cli release");
    let key = dir.path().join("release.nk");
    std::fs::write(&key, format!("{SEED_A}\n")).unwrap();
    let artifact_s = artifact.to_str().unwrap();
    let key_s = key.to_str().unwrap();

    let (code, out, err) = gridmon(
        &url,
        &[
            "release",
            "push",
            "web",
            "1.2.3",
            artifact_s,
            "--sign-key",
            key_s,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pushed web 1.2.3") && out.contains(&sha),
        "{out}"
    );

    let client = async_nats::connect(url.clone()).await.unwrap();
    let info = store(&client, "gridmon-releases")
        .await
        .info("web/1.2.3")
        .await
        .unwrap();
    assert_eq!(info.metadata.get(META_SHA256), Some(&sha));
    assert!(info
        .metadata
        .get(META_SIGNER)
        .is_some_and(|s| s.starts_with('U')));

    let (code, out, err) = gridmon(&url, &["release", "push", "api", "0.1", artifact_s]).await;
    assert_eq!(code, 0, "{out}{err}");

    let (other, _) = write_artifact(dir.path(), "web2.tar", b"different bytes");
    let (code, _, err) = gridmon(
        &url,
        &["release", "push", "web", "1.2.3", other.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("immutable"), "{err}");

    let (code, out, err) = gridmon(&url, &["release", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("PROGRAM"), "{out}");
    assert!(
        lines[1].starts_with("api ") && lines[1].contains("no"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("web ") && lines[2].contains("1.2.3"),
        "{out}"
    );
    assert!(lines[2].contains(&sha[..16]), "{out}");

    let (code, out, _) = gridmon(&url, &["release", "list", "web"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
}
