//! Bearer tokens and what each may do: the one set of accepted tokens
//! (`--tokens-file`), each with its roles, and the one check that every transport
//! taking them goes through: the ingest stream and the query service over gRPC
//! (`authorization` metadata), reflection, the HTTP API (`Authorization` header) and
//! the dashboard's login.
//!
//! Two roles, because an agent's token is on every host while the query API shows
//! every host's sockets, command lines included (which can hold secrets):
//! [`Role::Ingest`] streams socket tables, [`Role::Read`] asks questions. A token
//! presented without the role the request needs is [`Refused::WrongRole`]
//! (PERMISSION_DENIED, HTTP 403); a missing or unknown one stays UNAUTHENTICATED (401).
//! Messages say what was wrong with the request, never which tokens exist.
//!
//! The file, one token per line (blank lines and `#` comments ignored):
//!
//! ```text
//! ingest:TOKEN        an agent's token: may stream, may not read
//! read:TOKEN          the CLI's, the dashboard's, a gRPC client's: may read, may not stream
//! ingest,read:TOKEN   both (tests, a trial)
//! TOKEN               a line without a role, as before roles existed: ingest only
//! ```
//!
//! A bare line keeps the meaning the file had for agents ("accepted agent tokens") and
//! loses reading: an old file never grants more than before, and a reader using an old
//! token gets a 403 naming the missing role. An unknown role, an empty token or a
//! token given twice stops the collector at start-up, naming the line.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::ErrorCode;
use crate::query::QueryError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Stream socket tables (`finwait.v1.Ingest`): agents.
    Ingest,
    /// Read: the query API over HTTP and gRPC, reflection, the dashboard.
    Read,
}

impl Role {
    /// The role's name in the tokens file and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
        }
    }

    fn parse(word: &str) -> Option<Role> {
        match word.trim() {
            "ingest" => Some(Role::Ingest),
            "read" => Some(Role::Read),
            _ => None,
        }
    }
}

/// The roles of one token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// May stream.
    pub ingest: bool,
    /// May read.
    pub read: bool,
}

impl Grants {
    fn allows(self, role: Role) -> bool {
        match role {
            Role::Ingest => self.ingest,
            Role::Read => self.read,
        }
    }

    fn add(&mut self, role: Role) {
        match role {
            Role::Ingest => self.ingest = true,
            Role::Read => self.read = true,
        }
    }
}

/// A tokens file that cannot be used; names the line, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokensError {
    /// `ROLE:TOKEN` with a role that is not `ingest` or `read`.
    #[error(
        "line {line}: unknown role {role:?} before `:` (roles: ingest, read; e.g. `read:TOKEN`, `ingest,read:TOKEN`)"
    )]
    UnknownRole {
        /// 1-based line number.
        line: usize,
        /// The role as written (a role word is not secret).
        role: String,
    },
    /// A role and no token after it.
    #[error("line {line}: no token after the role")]
    Empty {
        /// 1-based line number.
        line: usize,
    },
    /// A token with a space or a character an `Authorization` header cannot carry.
    #[error("line {line}: a token must be printable ASCII without spaces")]
    Unprintable {
        /// 1-based line number.
        line: usize,
    },
    /// The same token on two lines: which roles would it have?
    #[error(
        "line {line} repeats the token of line {first}: give every role on one line (`ingest,read:TOKEN`)"
    )]
    Repeated {
        /// The second line.
        line: usize,
        /// The first line.
        first: usize,
    },
    /// Nothing but comments and blank lines.
    #[error("holds no token")]
    NoToken,
}

/// Accepted tokens and their roles.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    /// Token → roles.
    grants: HashMap<String, Grants>,
    /// Lines without a role (ingest only), for a start-up note.
    bare: usize,
}

impl Tokens {
    /// Parses a tokens file (format in the module docs); every line's problem is the
    /// first one found, naming its line.
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let mut grants: HashMap<String, Grants> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut bare = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut g = Grants::default();
            let token = match l.split_once(':') {
                Some((roles, token)) => {
                    for word in roles.split(',') {
                        let role = Role::parse(word).ok_or_else(|| TokensError::UnknownRole {
                            line,
                            role: word.trim().chars().take(32).collect(),
                        })?;
                        g.add(role);
                    }
                    token.trim()
                }
                None => {
                    bare += 1;
                    g.ingest = true;
                    l
                }
            };
            if token.is_empty() {
                return Err(TokensError::Empty { line });
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokensError::Unprintable { line });
            }
            if let Some(&first) = first_line.get(token) {
                return Err(TokensError::Repeated { line, first });
            }
            first_line.insert(token.to_owned(), line);
            grants.insert(token.to_owned(), g);
        }
        if grants.is_empty() {
            return Err(TokensError::NoToken);
        }
        Ok(Tokens { grants, bare })
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// How many tokens may take `role`.
    pub fn count(&self, role: Role) -> usize {
        self.grants.values().filter(|g| g.allows(role)).count()
    }

    /// How many lines had no role (and so ingest only).
    pub fn bare_lines(&self) -> usize {
        self.bare
    }

    /// The roles of `token`, if it is accepted at all.
    pub fn grants(&self, token: &str) -> Option<Grants> {
        self.grants.get(token).copied()
    }

    /// A digest of the whole set, roles included: changes whenever a token is added,
    /// removed or given other roles, so a key derived from it (the dashboard's session
    /// key) rotates with the tokens.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut sorted: Vec<(&String, &Grants)> = self.grants.iter().collect();
        sorted.sort_by_key(|(t, _)| *t);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"finwait-tokens-v2");
        for (t, g) in sorted {
            ctx.update(&[u8::from(g.ingest), u8::from(g.read)]);
            ctx.update(&(t.len() as u64).to_be_bytes());
            ctx.update(t.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// The token set in force, shared by every transport and replaced whole when the
/// tokens file is reloaded (SIGHUP, [`crate::reload`]): each request is checked
/// against the set of the moment it arrives; a stream already let in stays open.
#[derive(Debug, Clone)]
pub struct LiveTokens(Arc<RwLock<Arc<Tokens>>>);

impl LiveTokens {
    /// Starts with `tokens` in force.
    pub fn new(tokens: Tokens) -> LiveTokens {
        LiveTokens(Arc::new(RwLock::new(Arc::new(tokens))))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<Tokens> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `tokens` in force for every request from now on.
    pub fn replace(&self, tokens: Tokens) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
    }
}

/// Logs, once at start-up, how many tokens hold each role (never a token), and a
/// note when lines without a role made agent-only tokens.
pub fn log_roles(tokens: &Tokens) {
    tracing::info!(
        ingest = tokens.count(Role::Ingest),
        read = tokens.count(Role::Read),
        "tokens loaded"
    );
    if tokens.bare_lines() > 0 {
        tracing::warn!(
            lines = tokens.bare_lines(),
            "tokens file lines without a role are agent (ingest) tokens and cannot read; give readers `read:TOKEN`"
        );
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
    /// An accepted token without the role this request needs.
    #[error("{}", wrong_role(*.0))]
    WrongRole(Role),
}

fn wrong_role(needed: Role) -> &'static str {
    match needed {
        Role::Read => {
            "this token may not read: the query API, reflection and the dashboard need a token with the `read` role (`read:TOKEN` in the tokens file)"
        }
        Role::Ingest => {
            "this token may not stream socket tables: agents need a token with the `ingest` role (`ingest:TOKEN` in the tokens file)"
        }
    }
}

impl Refused {
    /// [`ErrorCode::PermissionDenied`] for a wrong role, else
    /// [`ErrorCode::Unauthenticated`].
    pub fn code(self) -> ErrorCode {
        match self {
            Refused::WrongRole(_) => ErrorCode::PermissionDenied,
            _ => ErrorCode::Unauthenticated,
        }
    }

    /// A short reason from a fixed set, for metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Missing => "no_token",
            Refused::Malformed | Refused::NotAccepted => "bad_token",
            Refused::WrongRole(_) => "wrong_role",
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
/// case-insensitive, as in RFC 7235) against `tokens` for `role`. `tokens` None means
/// this transport is open (`--insecure-loopback` without a tokens file).
pub fn check(tokens: Option<&Tokens>, presented: Option<&str>, role: Role) -> Result<(), Refused> {
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
    match tokens.grants(token) {
        Some(g) if g.allows(role) => Ok(()),
        Some(_) => Err(Refused::WrongRole(role)),
        None => Err(Refused::NotAccepted),
    }
}

/// The `authorization` value of a gRPC request, if it is text.
pub fn presented(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}

/// A gRPC interceptor letting through only requests with a token of `role` (used for
/// reflection, which lists every service and message: a reader's business).
pub fn interceptor(
    tokens: Option<LiveTokens>,
    role: Role,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let set = tokens.as_ref().map(LiveTokens::current);
        check(set.as_deref(), presented(req.metadata()), role).map_err(|r| {
            r.code().log("grpc", &r.to_string());
            r.status()
        })?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse("# agents\n\n  abc  \ningest:def\nread: ghi\ningest, read:jkl\n")
            .expect("valid file")
    }

    #[test]
    fn tokens_file_ignores_comments_and_blanks_and_reads_roles() {
        let t = tokens();
        assert_eq!(t.len(), 4);
        assert_eq!(t.count(Role::Ingest), 3);
        assert_eq!(t.count(Role::Read), 2);
        assert_eq!(t.bare_lines(), 1);
        assert_eq!(check(Some(&t), Some("Bearer ghi"), Role::Read), Ok(()));
        assert_eq!(check(Some(&t), Some("Bearer def"), Role::Ingest), Ok(()));
        assert_eq!(check(Some(&t), Some("Bearer jkl"), Role::Read), Ok(()));
        assert_eq!(check(Some(&t), Some("Bearer jkl"), Role::Ingest), Ok(()));
        assert_eq!(
            check(Some(&t), Some("Bearer # agents"), Role::Ingest),
            Err(Refused::NotAccepted)
        );
        assert_eq!(
            check(Some(&t), Some("Bearer ingest:def"), Role::Ingest),
            Err(Refused::NotAccepted),
            "the role is not part of the token"
        );
    }

    #[test]
    fn a_line_without_a_role_is_an_agent_token_that_cannot_read() {
        let t = Tokens::parse("legacy\n").expect("valid");
        assert_eq!(check(Some(&t), Some("Bearer legacy"), Role::Ingest), Ok(()));
        assert_eq!(
            check(Some(&t), Some("Bearer legacy"), Role::Read),
            Err(Refused::WrongRole(Role::Read))
        );
    }

    #[test]
    fn each_role_is_refused_the_others_requests() {
        let t = tokens();
        assert_eq!(
            check(Some(&t), Some("Bearer def"), Role::Read),
            Err(Refused::WrongRole(Role::Read))
        );
        assert_eq!(
            check(Some(&t), Some("Bearer ghi"), Role::Ingest),
            Err(Refused::WrongRole(Role::Ingest))
        );
        let r = Refused::WrongRole(Role::Read);
        assert_eq!(r.status().code(), tonic::Code::PermissionDenied);
        assert_eq!(r.code().http(), 403);
        assert!(r.to_string().contains("`read` role"), "{r}");
    }

    #[test]
    fn unusable_files_are_refused_naming_the_line_not_the_token() {
        let cases = [
            ("admin:s3cret\n", "line 1: unknown role \"admin\""),
            ("# c\nread:\n", "line 2: no token"),
            ("read:a b\n", "line 1: a token must be printable"),
            (
                "s3cret\nread:s3cret\n",
                "line 2 repeats the token of line 1",
            ),
            ("# nothing\n\n", "holds no token"),
        ];
        for (text, want) in cases {
            let e = Tokens::parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_bearer_token_from_the_file_is_accepted_whatever_the_scheme_case() {
        let t = tokens();
        assert_eq!(check(Some(&t), Some("bearer abc"), Role::Ingest), Ok(()));
        assert_eq!(check(Some(&t), Some("BEARER  abc "), Role::Ingest), Ok(()));
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused_distinctly() {
        let t = tokens();
        let c = |v| check(Some(&t), v, Role::Ingest);
        assert_eq!(c(None), Err(Refused::Missing));
        assert_eq!(c(Some("abc")), Err(Refused::Malformed));
        assert_eq!(c(Some("Basic abc")), Err(Refused::Malformed));
        assert_eq!(c(Some("Bearer ")), Err(Refused::Malformed));
        assert_eq!(c(Some("Bearer xyz")), Err(Refused::NotAccepted));
        assert_eq!(c(Some("Bearer abcd")), Err(Refused::NotAccepted));
    }

    #[test]
    fn without_tokens_everything_is_let_in() {
        assert_eq!(check(None, None, Role::Read), Ok(()));
        assert_eq!(check(None, Some("Bearer anything"), Role::Ingest), Ok(()));
    }

    #[test]
    fn refusals_name_no_token() {
        for r in [Refused::Missing, Refused::Malformed, Refused::NotAccepted] {
            let status = r.status();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert_eq!(r.code().http(), 401);
            assert!(!status.message().contains("abc"), "{}", status.message());
        }
        assert!(Refused::Missing.to_string().contains("Bearer <token>"));
    }

    #[test]
    fn the_fingerprint_changes_with_a_tokens_role() {
        let read = Tokens::parse("read:t\n").expect("valid");
        let ingest = Tokens::parse("ingest:t\n").expect("valid");
        let again = Tokens::parse("# same\nread:t\n").expect("valid");
        assert_ne!(read.fingerprint(), ingest.fingerprint());
        assert_eq!(read.fingerprint(), again.fingerprint());
    }
}
