//! Dashboard sessions: a token with the read role typed once into the login page buys an HttpOnly,
//! Secure, SameSite=Strict cookie that expires. Stateless: the cookie is an expiry
//! signed with HMAC-SHA256 under a key derived from the tokens file (tokens and their
//! roles), so every collector reading the same file accepts it, and rotating the
//! tokens or changing a role ends every session. No token is ever put in a URL or a log.

use chrono::Utc;
use ring::hmac;

use crate::auth::Tokens;

/// The cookie's name.
pub const COOKIE: &str = "finwait_session";
/// How long a session lasts.
pub const LIFETIME_S: i64 = 12 * 3600;

/// Signs and checks session cookies.
pub struct SessionKey {
    /// HMAC key derived from the token set.
    key: hmac::Key,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// The key for a token set.
    pub fn new(tokens: &Tokens) -> SessionKey {
        let mut material = b"finwait-session-v1".to_vec();
        material.extend_from_slice(&tokens.fingerprint());
        SessionKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &material),
        }
    }

    /// A cookie value valid until `now + LIFETIME_S`: `EXPIRY.HEXMAC`.
    pub fn issue(&self, now: i64) -> String {
        let expiry = now + LIFETIME_S;
        let tag = hmac::sign(&self.key, expiry.to_string().as_bytes());
        format!("{expiry}.{}", hex(tag.as_ref()))
    }

    /// True when `value` is a cookie this key issued that has not expired at `now`.
    pub fn valid(&self, value: &str, now: i64) -> bool {
        let Some((expiry, mac)) = value.split_once('.') else {
            return false;
        };
        let (Ok(exp), Some(mac)) = (expiry.parse::<i64>(), unhex(mac)) else {
            return false;
        };
        exp > now && hmac::verify(&self.key, expiry.as_bytes(), &mac).is_ok()
    }

    /// True when the request's `Cookie` header carries a valid session.
    pub fn admits(&self, headers: &axum::http::HeaderMap) -> bool {
        let now = Utc::now().timestamp();
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.valid(v, now))
    }
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; Path=/; Max-Age={LIFETIME_S}; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Where to go after logging in: only a path on this site (no `//host`, no scheme),
/// in printable ASCII, as a `Location` header must be (the redirect to anything else
/// failed with a 500; a browser's own request paths are percent-encoded already).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_verify_until_they_expire_and_die_with_the_tokens() {
        let tokens = Tokens::parse("read:reader-1\n").expect("tokens");
        let key = SessionKey::new(&tokens);
        let c = key.issue(1_000);
        assert!(key.valid(&c, 1_000));
        assert!(key.valid(&c, 1_000 + LIFETIME_S - 1));
        assert!(!key.valid(&c, 1_000 + LIFETIME_S), "expired");
        let (exp, mac) = c.split_once('.').expect("shape");
        let forged = format!("{}.{mac}", exp.parse::<i64>().expect("n") + 3600);
        assert!(
            !key.valid(&forged, 1_000),
            "a longer expiry needs a new MAC"
        );
        assert!(!key.valid("garbage", 1_000));
        assert!(!key.valid("1.zz", 0));
        let rotated = SessionKey::new(&Tokens::parse("read:reader-2\n").expect("tokens"));
        assert!(!rotated.valid(&c, 1_000), "new tokens, new sessions");
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/leaks?host=a")), "/leaks?host=a");
        assert_eq!(
            safe_next(Some("/leaks?service=caf%C3%A9")),
            "/leaks?service=caf%C3%A9"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "leaks",
            "/leaks\u{1}x",
            "/leaks?host=a b",
            "/leaks?service=café",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
