//! Passwords travel to PostgreSQL only as SCRAM-SHA-256 verifiers, so the plain text never
//! appears in a statement, a server log or `pg_stat_activity`. Checking a stored verifier against
//! the Secret's password tells whether the role's password needs to be set again.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A verifier for `password` with a fresh random salt, in PostgreSQL's stored format.
pub fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Whether `stored` (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) was made from
/// `password`. Anything unparsable (an MD5 hash, no password) counts as a mismatch.
pub fn matches(stored: &str, password: &str) -> bool {
    let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return false;
    };
    let Some((stored_key, _server_key)) = keys.split_once(':') else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(iterations), Ok(salt), Ok(stored_key)) = (
        iterations.parse::<u32>(),
        engine.decode(salt),
        engine.decode(stored_key),
    ) else {
        return false;
    };
    if iterations == 0 || iterations > 10_000_000 {
        return false;
    }
    let salted = salted_password(password.as_bytes(), &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let computed: [u8; 32] = Sha256::digest(client_key).into();
    constant_time_eq(&computed, &stored_key)
}

/// Remembered answers of `matches`: a check costs 4096 rounds of HMAC-SHA-256, and the same
/// stored verifier and password come back at every resync. The work runs on the blocking
/// pool, never on the reconcilers' threads.
#[derive(Default)]
pub struct Checks {
    known: std::sync::Mutex<std::collections::HashMap<[u8; 32], bool>>,
}

/// Remembered answers kept at most; beyond, the memory starts over.
const CHECKS_KEPT: usize = 20_000;

impl Checks {
    pub async fn matches(&self, stored: &str, password: &str) -> bool {
        let mut hasher = Sha256::new();
        hasher.update(stored.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(known) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return *known;
        }
        let (stored_owned, password_owned) = (stored.to_string(), password.to_string());
        let answer = tokio::task::spawn_blocking(move || matches(&stored_owned, &password_owned))
            .await
            // A check that could not run counts as a mismatch: the password is set again.
            .unwrap_or(false);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= CHECKS_KEPT {
            known.clear();
        }
        known.insert(key, answer);
        answer
    }
}

/// `verifier`, computed on the blocking pool.
pub async fn new_verifier(password: &str) -> String {
    let owned = password.to_string();
    match tokio::task::spawn_blocking(move || verifier(&owned)).await {
        Ok(verifier) => verifier,
        Err(_) => verifier(password),
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block, as SCRAM defines `Hi()`.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut result = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (r, b) in result.iter_mut().zip(u.iter()) {
            *r ^= b;
        }
    }
    result
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_verifier_matches_its_password_only() {
        let stored = verifier("s3cret");
        assert!(stored.starts_with("SCRAM-SHA-256$4096:"));
        assert!(matches(&stored, "s3cret"));
        assert!(!matches(&stored, "s3cret "));
    }

    #[test]
    fn other_formats_never_match() {
        assert!(!matches("md5abcdef", "x"));
        assert!(!matches("", "x"));
        assert!(!matches("SCRAM-SHA-256$x:y$z:w", "x"));
    }
}
