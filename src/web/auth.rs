//! Dashboard logins: users from `[[web.users]]` with Argon2 password hashes, server-side sessions
//! in an HttpOnly SameSite=Strict cookie, and a per-session CSRF token that every state-changing
//! request must echo in the `X-CSRF-Token` header.
//!
//! Without users the dashboard has no login: everyone is an anonymous viewer (and the server only
//! listens on loopback, which the config check enforces).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use gridmon_nats::config::{WebRole, WebUser};
use serde::Serialize;

pub const COOKIE: &str = "gridmon_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Most sessions kept; the oldest go first beyond this.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub user: String,
    pub role: WebRole,
    pub csrf: String,
    #[serde(skip)]
    last_used: Instant,
}

#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, WebUser>,
    /// A hash of a random password: checked when the user name is unknown, so a wrong name
    /// costs as long as a wrong password.
    decoy: String,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    /// Password checks are CPU-heavy by design; at most this many at once.
    verifying: tokio::sync::Semaphore,
}

/// Who is asking.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    /// `None`: anonymous (no users configured, or not logged in).
    pub user: Option<String>,
    pub role: WebRole,
    #[serde(skip)]
    pub csrf: Option<String>,
}

pub fn random_token() -> String {
    let b: [u8; 32] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Auth {
    pub fn new(users: &[WebUser], ttl: Duration) -> Self {
        Self {
            users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            decoy: if users.is_empty() {
                String::new()
            } else {
                hash_password(&random_token()).unwrap_or_default()
            },
            ttl,
            sessions: Mutex::new(HashMap::new()),
            verifying: tokio::sync::Semaphore::new(2),
        }
    }

    /// Whether logins exist at all.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller behind a session cookie value (refreshing its expiry).
    pub fn caller(&self, token: Option<&str>) -> Caller {
        let anonymous = Caller {
            user: None,
            role: WebRole::Viewer,
            csrf: None,
        };
        let Some(token) = token else { return anonymous };
        let mut sessions = self.lock();
        let now = Instant::now();
        match sessions.get_mut(token) {
            Some(s) if now.duration_since(s.last_used) <= self.ttl => {
                s.last_used = now;
                Caller {
                    user: Some(s.user.clone()),
                    role: s.role,
                    csrf: Some(s.csrf.clone()),
                }
            }
            Some(_) => {
                sessions.remove(token);
                anonymous
            }
            None => anonymous,
        }
    }

    /// Checks a password; on success opens a session and returns its cookie value.
    pub async fn login(&self, user: &str, password: &str) -> Option<(String, Session)> {
        let _permit = self.verifying.acquire().await.ok()?;
        let known = self.users.get(user).cloned();
        let hash = known
            .as_ref()
            .map_or_else(|| self.decoy.clone(), |u| u.password_hash.clone());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        let u = known.filter(|_| ok)?;
        let token = random_token();
        let s = Session {
            user: u.name.clone(),
            role: u.role,
            csrf: random_token(),
            last_used: Instant::now(),
        };
        let mut sessions = self.lock();
        let ttl = self.ttl;
        sessions.retain(|_, s| s.last_used.elapsed() <= ttl);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token.clone(), s.clone());
        Some((token, s))
    }

    pub fn logout(&self, token: &str) {
        self.lock().remove(token);
    }
}

/// Verifies `password` against an Argon2 PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// An Argon2id hash of `password` with a random salt, in PHC form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// The session cookie's value from a `Cookie` header.
pub fn session_cookie(header: Option<&str>) -> Option<&str> {
    header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Constant-time comparison for tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, pw: &str, role: WebRole) -> WebUser {
        WebUser {
            name: name.into(),
            password_hash: hash_password(pw).unwrap(),
            role,
        }
    }

    #[tokio::test]
    async fn login_checks_the_password_and_keeps_the_role() {
        let auth = Auth::new(
            &[
                user("olga", "right horse", WebRole::Operator),
                user("vic", "battery", WebRole::Viewer),
            ],
            Duration::from_secs(60),
        );
        assert!(auth.login("olga", "wrong").await.is_none());
        assert!(auth.login("nobody", "right horse").await.is_none());
        let (token, s) = auth.login("olga", "right horse").await.unwrap();
        assert_eq!(s.role, WebRole::Operator);
        let c = auth.caller(Some(&token));
        assert_eq!(c.user.as_deref(), Some("olga"));
        assert_eq!(c.csrf.as_deref(), Some(s.csrf.as_str()));
        let (vt, _) = auth.login("vic", "battery").await.unwrap();
        assert_eq!(auth.caller(Some(&vt)).role, WebRole::Viewer);
        auth.logout(&token);
        assert!(auth.caller(Some(&token)).user.is_none());
        assert!(auth.caller(Some("forged")).user.is_none());
    }

    #[test]
    fn cookies_and_tokens() {
        assert_eq!(
            session_cookie(Some("a=b; gridmon_session=abc123; c=d")),
            Some("abc123")
        );
        assert_eq!(session_cookie(Some("gridmon_session=")), None);
        assert_eq!(session_cookie(None), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!verify_password("x", "not a hash"));
    }
}
