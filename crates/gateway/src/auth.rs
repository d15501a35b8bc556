//! Basic authentication from an htpasswd file, as nginx's `auth_basic_user_file`: bcrypt
//! (`$2y$`, `$2b$`, `$2a$`), SHA-1 (`{SHA}`) and Apache's MD5 (`$apr1$`) entries. A request
//! without valid credentials gets 401 with `WWW-Authenticate: Basic realm="..."`.
//!
//! The file is read when the config is loaded (so on every reload too); an unreadable file, or an
//! entry in a format nobody should use any more (crypt DES, plain text), is a config error rather
//! than a user who can never log in. Passwords are compared in constant time, and a user who is
//! not in the file costs the same verification as one who is (against another entry's hash), so
//! the time of an answer does not tell which users exist. bcrypt, slow by design, runs on the
//! blocking pool so it never stalls other requests; a successful bcrypt verification is
//! remembered (a salted digest of user and password, for [`CACHE_FOR`], at most
//! [`CACHE_ENTRIES`]) so a client that sends the same credentials on every request pays for it
//! once, not per request. Credentials are never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderMap;
use md5::{Digest, Md5};
use sha1::Sha1;

/// How long a successful bcrypt verification is remembered.
const CACHE_FOR: Duration = Duration::from_secs(300);

/// Verifications remembered at most.
const CACHE_ENTRIES: usize = 1024;

/// The users of one htpasswd file.
pub(crate) struct Htpasswd {
    users: HashMap<String, Hash>,
    /// Verified against for users not in the file: the costliest entry's hash.
    dummy: Option<Hash>,
    /// Salted digests of recently verified `user:password` pairs, and when they were verified.
    verified: Mutex<HashMap<[u8; 20], Instant>>,
    salt: [u8; 16],
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

#[derive(Clone)]
enum Hash {
    Bcrypt(String),
    Sha1([u8; 20]),
    Apr1 { salt: String, encoded: String },
}

impl Htpasswd {
    /// Reads `path`; errors name the file and line.
    pub(crate) fn load(path: &str) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
        Self::parse(&text).map_err(|(line, message)| format!("{path}:{line}: {message}"))
    }

    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message: &str| (index + 1, message.to_string());
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| fail("expected user:hash"))?;
            let hash =
                if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")
                {
                    Hash::Bcrypt(hash.to_string())
                } else if let Some(digest) = hash.strip_prefix("{SHA}") {
                    let bytes = BASE64
                        .decode(digest)
                        .ok()
                        .and_then(|b| <[u8; 20]>::try_from(b).ok())
                        .ok_or_else(|| fail("{SHA} entry is not a base64 SHA-1 digest"))?;
                    Hash::Sha1(bytes)
                } else if let Some(rest) = hash.strip_prefix("$apr1$") {
                    let (salt, encoded) = rest
                        .split_once('$')
                        .ok_or_else(|| fail("$apr1$ entry without salt"))?;
                    Hash::Apr1 {
                        salt: salt.to_string(),
                        encoded: encoded.to_string(),
                    }
                } else {
                    return Err(fail(
                        "unsupported password hash (use bcrypt: htpasswd -B; or {SHA}, $apr1$)",
                    ));
                };
            users.insert(user.to_string(), hash);
        }
        let dummy = users
            .values()
            .max_by_key(|hash| match hash {
                Hash::Bcrypt(_) => 2,
                Hash::Apr1 { .. } => 1,
                Hash::Sha1(_) => 0,
            })
            .cloned();
        let mut salt = [0u8; 16];
        salt.iter_mut().for_each(|b| *b = fastrand::u8(..));
        Ok(Htpasswd {
            users,
            dummy,
            verified: Mutex::new(HashMap::new()),
            salt,
        })
    }

    /// Whether the request's `Authorization: Basic` credentials match a user of the file.
    pub(crate) async fn allows(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = credentials(headers) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            // The same work as for a user of the file, and a refusal whatever the outcome.
            None => match &self.dummy {
                Some(dummy) => (dummy.clone(), false),
                None => return false,
            },
        };
        let key = self.key(&user, &password);
        if known && matches!(hash, Hash::Bcrypt(_)) && self.remembers(&key) {
            return true;
        }
        let matched = verify(hash, password).await;
        if known && matched {
            self.remember(key);
        }
        known && matched
    }

    /// A salted digest of `user:password`: what the cache keeps instead of the password.
    fn key(&self, user: &str, password: &str) -> [u8; 20] {
        Sha1::new()
            .chain_update(self.salt)
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn remembers(&self, key: &[u8; 20]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(key).is_some_and(|at| at.elapsed() < CACHE_FOR)
    }

    fn remember(&self, key: [u8; 20]) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_ENTRIES {
            verified.retain(|_, at| at.elapsed() < CACHE_FOR);
            if verified.len() >= CACHE_ENTRIES {
                verified.clear();
            }
        }
        verified.insert(key, Instant::now());
    }
}

/// Whether `password` matches `hash`.
async fn verify(hash: Hash, password: String) -> bool {
    match hash {
        Hash::Bcrypt(hash) => tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false),
        Hash::Sha1(digest) => constant_time_eq(&Sha1::digest(password.as_bytes()), &digest),
        Hash::Apr1 { salt, encoded } => constant_time_eq(
            apr1(password.as_bytes(), salt.as_bytes()).as_bytes(),
            encoded.as_bytes(),
        ),
    }
}

/// `user` and `password` from `Authorization: Basic base64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's MD5-based crypt (`$apr1$`): the hash part, in crypt's base64 alphabet.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(b"$apr1$")
        .chain_update(salt);
    for chunk in (0..password.len()).step_by(16) {
        context.update(&alternate[..(password.len() - chunk).min(16)]);
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut next = Md5::new();
        if round & 1 == 1 {
            next.update(password);
        } else {
            next.update(digest);
        }
        if round % 3 != 0 {
            next.update(salt);
        }
        if round % 7 != 0 {
            next.update(password);
        }
        if round & 1 == 1 {
            next.update(digest);
        } else {
            next.update(password);
        }
        digest = next.finalize();
    }
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut push = |value: u32, count: usize| {
        let mut value = value;
        for _ in 0..count {
            out.push(ALPHABET[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(
            u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]),
            4,
        );
    }
    push(u32::from(digest[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Apache's htpasswd (apache2-utils): -B -C 5, -m, -s.
    const FILE: &str = "# users\n\
        alice:$2y$05$w/sDtGpEF2XIzp2jkDzba.B3a/m62zouwpAHTra7WeqydJQgb4pyG\n\
        bob:$apr1$fGHUy2P3$J0HDV/.AesLoXTr.G66zY1\n\
        carol:{SHA}l5/jO3DHu6SJl12UvUCHRgci/IU=\n";

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn apr1_matches_openssl_and_htpasswd() {
        // openssl passwd -apr1 -salt 8sFt66rZ s3cret
        assert_eq!(apr1(b"s3cret", b"8sFt66rZ"), "5f4dG6uJPUDcCdyvCGEji1");
        assert_eq!(apr1(b"p@ss:word", b"fGHUy2P3"), "J0HDV/.AesLoXTr.G66zY1");
    }

    #[tokio::test]
    async fn each_hash_format_accepts_its_password_and_nothing_else() {
        let file = Htpasswd::parse(FILE).unwrap();
        assert!(file.allows(&basic("alice", "s3cret")).await);
        assert!(
            file.allows(&basic("bob", "p@ss:word")).await,
            "a colon in the password"
        );
        assert!(file.allows(&basic("carol", "ünïcode")).await);
        for (user, password) in [
            ("alice", "S3cret"),
            ("bob", "p@ss"),
            ("carol", ""),
            ("eve", "s3cret"),
        ] {
            assert!(
                !file.allows(&basic(user, password)).await,
                "{user}:{password}"
            );
        }
        assert!(!file.allows(&HeaderMap::new()).await);
        let mut bearer = HeaderMap::new();
        bearer.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(!file.allows(&bearer).await);
        let mut garbage = HeaderMap::new();
        garbage.insert(http::header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(!file.allows(&garbage).await);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_verification_and_a_known_one_is_remembered() {
        let file = Htpasswd::parse(FILE).unwrap();
        // The dummy is the costliest entry: bcrypt.
        assert!(matches!(file.dummy, Some(Hash::Bcrypt(_))));
        // An unknown user with the dummy's own password is still refused.
        assert!(!file.allows(&basic("mallory", "s3cret")).await);
        assert!(file.verified.lock().unwrap().is_empty());
        assert!(file.allows(&basic("alice", "s3cret")).await);
        assert_eq!(file.verified.lock().unwrap().len(), 1, "remembered");
        // The cache holds digests, never the password, and a wrong password misses it.
        let key = file.key("alice", "s3cret");
        assert!(file.remembers(&key));
        assert!(!file.remembers(&file.key("alice", "S3cret")));
        assert!(!file.allows(&basic("alice", "S3cret")).await);
        // Another file (a reload) remembers nothing, and salts differently.
        let reloaded = Htpasswd::parse(FILE).unwrap();
        assert!(!reloaded.remembers(&key));
        assert_ne!(reloaded.key("alice", "s3cret"), key);
    }

    #[test]
    fn unusable_entries_are_errors_with_their_line() {
        let error = Htpasswd::parse("ok:{SHA}l5/jO3DHu6SJl12UvUCHRgci/IU=\ndave:xyDES12345678\n")
            .unwrap_err();
        assert_eq!(error.0, 2);
        assert!(error.1.contains("unsupported"), "{}", error.1);
        assert_eq!(Htpasswd::parse("no colon").unwrap_err().0, 1);
        assert!(
            Htpasswd::load("/nonexistent/htpasswd")
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
