//! `[releases]`: where release artifacts live on the bus and who may sign them; and the release
//! signature itself (what is signed, how it is written in the object's metadata, how it is checked).

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Object metadata key holding the artifact's SHA-256 (lowercase hex).
pub const META_SHA256: &str = "gridmon-sha256";
/// Object metadata key holding the ed25519 signature (base64url, no padding).
pub const META_SIGNATURE: &str = "gridmon-signature";
/// Object metadata key holding the signer's public nkey.
pub const META_SIGNER: &str = "gridmon-signer";

/// The release store (`[releases]`): a JetStream Object Store bucket of `<program>/<version>`
/// artifacts (tar or tar.gz), optionally signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleasesConfig {
    /// The Object Store bucket.
    pub bucket: String,
    /// Size limit of the bucket, applied when `gridmon release push` creates it.
    pub max_bytes: Option<u64>,
    /// Public nkeys (`U…`, `O…` or `A…`) allowed to sign releases. When any is listed, an agent
    /// installs only artifacts signed by one of them; empty: only the SHA-256 is checked.
    pub signing_keys: Vec<String>,
    /// Longest time a download may take.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// A larger artifact is refused (at push and at fetch).
    pub max_artifact_bytes: u64,
}

impl Default for ReleasesConfig {
    fn default() -> Self {
        Self {
            bucket: "gridmon-releases".into(),
            max_bytes: None,
            signing_keys: Vec::new(),
            fetch_timeout: Duration::from_secs(120),
            max_artifact_bytes: 1 << 30,
        }
    }
}

/// Why a release's signature is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the release is not signed, and releases.signing_keys requires a signature; push it with --sign-key")]
    Unsigned,
    #[error("bad release signature: {0}")]
    Bad(String),
}

/// A release signature as stored in the object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSignature {
    /// The signer's public nkey.
    pub signer: String,
    /// ed25519 signature of [`release_signing_input`], base64url without padding.
    pub signature: String,
}

/// The bytes a release signature covers: program, version and digest together, so a signature
/// can be moved neither to another artifact nor to another name.
pub fn release_signing_input(program: &str, version: &str, sha256_hex: &str) -> Vec<u8> {
    format!(
        "gridmon-release:v1:{program}:{version}:{}",
        sha256_hex.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Signs a release with an nkey seed (`SU…`, `SO…` or `SA…`).
pub fn sign_release(
    seed: &str,
    program: &str,
    version: &str,
    sha256_hex: &str,
) -> Result<ReleaseSignature, String> {
    let key =
        nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| format!("not an nkey seed: {e}"))?;
    let sig = key
        .sign(&release_signing_input(program, version, sha256_hex))
        .map_err(|e| format!("cannot sign: {e}"))?;
    Ok(ReleaseSignature {
        signer: key.public_key(),
        signature: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig),
    })
}

impl ReleasesConfig {
    /// Every rule the section must meet; the message starts with the offending key (relative to
    /// `[releases]`).
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bucket;
        if b.is_empty()
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "bucket: {b:?} is not a bucket name (letters, digits, `_` and `-`)"
            ));
        }
        if self.max_bytes == Some(0) {
            return Err("max_bytes: must be more than zero (or left out)".into());
        }
        if self.fetch_timeout.is_zero() {
            return Err("fetch_timeout: must be more than zero".into());
        }
        if self.max_artifact_bytes == 0 {
            return Err("max_artifact_bytes: must be more than zero".into());
        }
        for (i, k) in self.signing_keys.iter().enumerate() {
            if !is_signing_public_key(k) {
                return Err(format!(
                    "signing_keys[{i}]: {k:?} is not a public user, account or operator nkey (U…, A…, O…)"
                ));
            }
        }
        Ok(())
    }

    /// Whether releases must be signed.
    pub fn signing_required(&self) -> bool {
        !self.signing_keys.is_empty()
    }

    /// Checks a release's signature against `signing_keys`. With no keys configured any
    /// signature is ignored (`Ok(None)`); with keys, the release must be signed by one of them
    /// (`Ok(Some(signer))`).
    pub fn verify_release(
        &self,
        program: &str,
        version: &str,
        sha256_hex: &str,
        signer: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Option<String>, SignatureError> {
        if !self.signing_required() {
            return Ok(None);
        }
        let (Some(signer), Some(signature)) = (signer, signature) else {
            return Err(SignatureError::Unsigned);
        };
        if !self.signing_keys.iter().any(|k| k == signer) {
            return Err(SignatureError::Bad(format!(
                "signer {signer} is not in releases.signing_keys"
            )));
        }
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .map_err(|e| SignatureError::Bad(format!("signature is not base64url: {e}")))?;
        let key = nkeys::KeyPair::from_public_key(signer)
            .map_err(|e| SignatureError::Bad(format!("signer key: {e}")))?;
        key.verify(&release_signing_input(program, version, sha256_hex), &sig)
            .map_err(|_| {
                SignatureError::Bad(format!(
                    "the signature by {signer} does not match {program} {version} with sha256 {sha256_hex}"
                ))
            })?;
        Ok(Some(signer.to_string()))
    }
}

fn is_signing_public_key(k: &str) -> bool {
    k.starts_with(['U', 'A', 'O']) && nkeys::KeyPair::from_public_key(k).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn defaults_are_valid() {
        let c = ReleasesConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.bucket, "gridmon-releases");
        assert!(!c.signing_required());
    }

    #[test]
    fn validation_names_the_key() {
        fn check(edit: impl FnOnce(&mut ReleasesConfig), field: &str) {
            let mut c = ReleasesConfig::default();
            edit(&mut c);
            let e = c.validate().expect_err(field);
            assert!(e.starts_with(field), "{e:?} should name {field}");
        }
        check(|c| c.bucket = "a.b".into(), "bucket");
        check(|c| c.bucket.clear(), "bucket");
        check(|c| c.max_bytes = Some(0), "max_bytes");
        check(|c| c.fetch_timeout = Duration::ZERO, "fetch_timeout");
        check(|c| c.max_artifact_bytes = 0, "max_artifact_bytes");
        check(
            |c| c.signing_keys = vec!["not-a-key".into()],
            "signing_keys[0]",
        );
        let server = nkeys::KeyPair::new_server().public_key();
        check(|c| c.signing_keys = vec![server], "signing_keys[0]");
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        check(|c| c.signing_keys = vec![seed], "signing_keys[0]");

        let c = ReleasesConfig {
            signing_keys: vec![
                nkeys::KeyPair::new_user().public_key(),
                nkeys::KeyPair::new_account().public_key(),
                nkeys::KeyPair::new_operator().public_key(),
            ],
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn toml_section_parses_with_humantime() {
        let c: ReleasesConfig = toml::from_str(
            "bucket = \"rel\"\nmax_bytes = 1000000\nfetch_timeout = \"30s\"\nmax_artifact_bytes = 5000",
        )
        .unwrap();
        assert_eq!(c.bucket, "rel");
        assert_eq!(c.max_bytes, Some(1_000_000));
        assert_eq!(c.fetch_timeout, Duration::from_secs(30));
        assert!(toml::from_str::<ReleasesConfig>("bukket = \"x\"").is_err());
    }

    #[test]
    fn signatures_bind_program_version_and_digest() {
        let alice = nkeys::KeyPair::new_user();
        let mallory = nkeys::KeyPair::new_user();
        let cfg = ReleasesConfig {
            signing_keys: vec![alice.public_key()],
            ..Default::default()
        };
        let s = sign_release(&alice.seed().unwrap(), "web", "1.0", SHA).unwrap();
        assert_eq!(s.signer, alice.public_key());
        let ok = cfg.verify_release("web", "1.0", SHA, Some(&s.signer), Some(&s.signature));
        assert_eq!(ok, Ok(Some(alice.public_key())));
        // Upper-case hex is the same digest.
        let upper = SHA.to_uppercase();
        assert!(cfg
            .verify_release("web", "1.0", &upper, Some(&s.signer), Some(&s.signature))
            .is_ok());

        let bad = |p: &str, v: &str, sha: &str, signer: &str, sig: &str| {
            matches!(
                cfg.verify_release(p, v, sha, Some(signer), Some(sig)),
                Err(SignatureError::Bad(_))
            )
        };
        assert!(bad("api", "1.0", SHA, &s.signer, &s.signature));
        assert!(bad("web", "1.1", SHA, &s.signer, &s.signature));
        assert!(bad("web", "1.0", &"0".repeat(64), &s.signer, &s.signature));
        assert!(bad("web", "1.0", SHA, &s.signer, "!!"));
        let m = sign_release(&mallory.seed().unwrap(), "web", "1.0", SHA).unwrap();
        assert!(
            bad("web", "1.0", SHA, &m.signer, &m.signature),
            "unknown signer"
        );
        assert!(
            bad("web", "1.0", SHA, &s.signer, &m.signature),
            "forged signer"
        );
        assert_eq!(
            cfg.verify_release("web", "1.0", SHA, None, None),
            Err(SignatureError::Unsigned)
        );
        assert_eq!(
            cfg.verify_release("web", "1.0", SHA, Some(&s.signer), None),
            Err(SignatureError::Unsigned)
        );
        // Signing not configured: signatures are not looked at.
        let open = ReleasesConfig::default();
        assert_eq!(open.verify_release("web", "1.0", SHA, None, None), Ok(None));
        assert!(sign_release("SUnot-a-seed", "web", "1.0", SHA).is_err());
    }
}
