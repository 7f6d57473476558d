//! Bearer tokens: the one set of accepted tokens (`--tokens-file`) and the one check
//! that every transport taking them goes through: the ingest stream and the query
//! service over gRPC (`authorization` metadata) and the HTTP API (`Authorization`
//! header). A refusal is [`ErrorCode::Unauthenticated`] (gRPC UNAUTHENTICATED, HTTP
//! 401) saying what was wrong with the request, never which tokens exist.

use std::collections::HashSet;

use crate::error::ErrorCode;
use crate::query::QueryError;

/// Accepted tokens.
#[derive(Debug, Default, Clone)]
pub struct Tokens(HashSet<String>);

impl Tokens {
    /// Parses a tokens file: one token per line, blank lines and `#` comments ignored.
    pub fn parse(text: &str) -> Tokens {
        Tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
        )
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `token` is one of them.
    pub fn accepts(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// A digest of the whole set: changes whenever a token is added or removed, so a
    /// key derived from it (the dashboard's session key) rotates with the tokens.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut sorted: Vec<&String> = self.0.iter().collect();
        sorted.sort();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"finwait-tokens-v1");
        for t in sorted {
            ctx.update(&(t.len() as u64).to_be_bytes());
            ctx.update(t.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `authorization` header or metadata (or one that is not text).
    #[error("missing `Authorization: Bearer <token>`")]
    Missing,
    /// Present, but not `Bearer <token>`.
    #[error("`Authorization` must be `Bearer <token>`")]
    Malformed,
    /// A bearer token that is not in the tokens file.
    #[error("token not accepted")]
    NotAccepted,
}

impl Refused {
    /// Always [`ErrorCode::Unauthenticated`].
    pub fn code(self) -> ErrorCode {
        ErrorCode::Unauthenticated
    }

    /// A short reason from a fixed set, for metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Missing => "no_token",
            Refused::Malformed | Refused::NotAccepted => "bad_token",
        }
    }

    /// The gRPC status a client sees.
    pub fn status(self) -> tonic::Status {
        self.code().status(self.to_string())
    }
}

impl From<Refused> for QueryError {
    fn from(r: Refused) -> Self {
        QueryError {
            code: r.code(),
            message: r.to_string(),
        }
    }
}

/// Checks the presented `authorization` value (`Bearer <token>`; the scheme is
/// case-insensitive, as in RFC 7235) against `tokens`. `tokens` None means this
/// transport is open (`--insecure-loopback`, or reading on a loopback listener).
pub fn check(tokens: Option<&Tokens>, presented: Option<&str>) -> Result<(), Refused> {
    let Some(tokens) = tokens else {
        return Ok(());
    };
    let value = presented.ok_or(Refused::Missing)?;
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(Refused::Malformed)?;
    if tokens.accepts(token) {
        Ok(())
    } else {
        Err(Refused::NotAccepted)
    }
}

/// The `authorization` value of a gRPC request, if it is text.
pub fn presented(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse("# agents\n\n  abc  \ndef\n")
    }

    #[test]
    fn tokens_file_ignores_comments_and_blanks() {
        let t = tokens();
        assert_eq!(t.len(), 2);
        assert_eq!(check(Some(&t), Some("Bearer abc")), Ok(()));
        assert_eq!(check(Some(&t), Some("Bearer def")), Ok(()));
        assert_eq!(
            check(Some(&t), Some("Bearer # agents")),
            Err(Refused::NotAccepted)
        );
        assert!(Tokens::parse("# only a comment\n\n").is_empty());
    }

    #[test]
    fn a_bearer_token_from_the_file_is_accepted_whatever_the_scheme_case() {
        let t = tokens();
        assert_eq!(check(Some(&t), Some("bearer abc")), Ok(()));
        assert_eq!(check(Some(&t), Some("BEARER  abc ")), Ok(()));
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused_distinctly() {
        let t = tokens();
        assert_eq!(check(Some(&t), None), Err(Refused::Missing));
        assert_eq!(check(Some(&t), Some("abc")), Err(Refused::Malformed));
        assert_eq!(check(Some(&t), Some("Basic abc")), Err(Refused::Malformed));
        assert_eq!(check(Some(&t), Some("Bearer ")), Err(Refused::Malformed));
        assert_eq!(
            check(Some(&t), Some("Bearer xyz")),
            Err(Refused::NotAccepted)
        );
        assert_eq!(
            check(Some(&t), Some("Bearer abcd")),
            Err(Refused::NotAccepted)
        );
    }

    #[test]
    fn without_tokens_everything_is_let_in() {
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(None, Some("Bearer anything")), Ok(()));
    }

    #[test]
    fn refusals_are_unauthenticated_with_a_message_that_names_no_token() {
        for r in [Refused::Missing, Refused::Malformed, Refused::NotAccepted] {
            let status = r.status();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert_eq!(r.code().http(), 401);
            assert!(!status.message().contains("abc"), "{}", status.message());
        }
        assert!(Refused::Missing.to_string().contains("Bearer <token>"));
    }
}
