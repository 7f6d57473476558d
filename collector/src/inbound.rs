//! One agent message from its bytes to domain types, as the ingest stream reads it:
//! the protobuf decode tonic's codec does, then [`validate::hello`] or
//! [`validate::batch`]. The ingest stream adds only ordering (hello first) and
//! storage; this is the part a hostile agent's bytes reach first, so the fuzz target
//! (`fuzz/fuzz_targets/ingest.rs`) and the corpus replay below (every file of
//! `fuzz/corpus/ingest`, on stable, in every test run) drive exactly this, and check
//! what comes out with [`Inbound::breaches`].

use finwait_proto::v1 as pb;
use finwait_proto::v1::agent_message::Body;
use prost::Message;

use crate::model::{Batch, HostHello, Payload};
use crate::validate::{self, Invalid, Limits};

/// A message the ingest stream would accept, as domain types.
#[derive(Debug)]
pub enum Inbound {
    /// A valid hello.
    Hello(HostHello),
    /// A valid batch.
    Batch(Box<Batch>),
}

/// Why the bytes were refused: the ingest stream's INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a protobuf `AgentMessage` (the stream says "message does not decode").
    #[error("message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// An `AgentMessage` with neither hello nor batch.
    #[error("message carries neither hello nor batch")]
    Empty,
    /// Decoded, refused by validation (names the field).
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Decodes and validates one `AgentMessage`.
pub fn read(bytes: &[u8], limits: &Limits) -> Result<Inbound, Refusal> {
    let msg = pb::AgentMessage::decode(bytes)?;
    match msg.body {
        Some(Body::Hello(h)) => Ok(Inbound::Hello(validate::hello(&h)?)),
        Some(Body::Batch(b)) => Ok(Inbound::Batch(Box::new(validate::batch(&b, limits)?))),
        None => Err(Refusal::Empty),
    }
}

/// Longest text the validators let through, in bytes (cgroup paths and command
/// lines are cut at 4096; service names add a short prefix).
const TEXT_MAX: usize = 4096 + 64;

impl Inbound {
    /// What an accepted message must never carry towards PostgreSQL or a page, each
    /// as a sentence; empty when it is clean: no text with a NUL or another control
    /// character (PostgreSQL refuses NUL in text; logs and terminals misread the
    /// rest), none longer than the validators' bounds, no blank or padded service name,
    /// no container id but a 12-hex short id, no negative namespace or inode, no state
    /// outside 1..=11.
    pub fn breaches(&self) -> Vec<String> {
        let mut out = Vec::new();
        fn named(out: &mut Vec<String>, service: Option<&String>, container: Option<&String>) {
            if let Some(s) = service {
                let name = s.strip_prefix("pod/").unwrap_or(s);
                if name.trim().is_empty()
                    || name.trim() != name
                    || (s.starts_with("pod/") && name.contains('/'))
                {
                    out.push(format!("service {s:?} is blank, padded or not one name"));
                }
            }
            if let Some(c) = container
                && !(c.len() == 12 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                out.push(format!("container {c:?} is not a short id"));
            }
        }
        fn check(out: &mut Vec<String>, what: &str, s: &str) {
            if s.chars().any(char::is_control) {
                out.push(format!("{what} holds a control character: {s:?}"));
            }
            if s.len() > TEXT_MAX {
                out.push(format!("{what} is {} bytes", s.len()));
            }
        }
        match self {
            Inbound::Hello(h) => {
                for (what, s) in [
                    ("hostname", &h.hostname),
                    ("machine_id", &h.machine_id),
                    ("boot_id", &h.boot_id),
                    ("agent_version", &h.agent_version),
                    ("instance_id", &h.instance_id),
                ] {
                    check(&mut out, what, s);
                }
                for (k, v) in &h.labels {
                    check(&mut out, "label key", k);
                    check(&mut out, "label value", v);
                }
                if h.hostname.trim().is_empty() || h.machine_id.trim().is_empty() {
                    out.push("an empty hostname or machine id was accepted".into());
                }
                if h.ephemeral.0 > h.ephemeral.1 {
                    out.push(format!("ephemeral range {:?} is reversed", h.ephemeral));
                }
            }
            Inbound::Batch(b) => {
                let sockets: Vec<&crate::model::SocketRecord> = match &b.payload {
                    Payload::Full(s) => s.iter().collect(),
                    Payload::Delta { added, changed, .. } => {
                        added.iter().chain(changed.iter()).collect()
                    }
                };
                for s in &sockets {
                    for o in &s.owners {
                        check(&mut out, "comm", &o.comm);
                        check(&mut out, "cmdline", &o.cmdline);
                        for v in [&o.service, &o.container].into_iter().flatten() {
                            check(&mut out, "service", v);
                        }
                        named(&mut out, o.service.as_ref(), o.container.as_ref());
                    }
                }
                for n in &b.namespaces {
                    check(&mut out, "cgroup", &n.cgroup);
                    for v in [&n.service, &n.container].into_iter().flatten() {
                        check(&mut out, "namespace service", v);
                    }
                    named(&mut out, n.service.as_ref(), n.container.as_ref());
                }
                if let Some(a) = &b.account {
                    check(&mut out, "source", &a.source);
                    for (netns, r) in &a.namespaces_skipped {
                        check(&mut out, "skip reason", r);
                        if *netns < 0 {
                            out.push(format!("skipped namespace {netns} is negative"));
                        }
                    }
                    for c in &a.capabilities_missing {
                        check(&mut out, "capability", c);
                    }
                }
                for s in &sockets {
                    if s.netns < 0 || s.inode < 0 || !(1..=11).contains(&s.state) {
                        out.push(format!("socket out of range: {s:?}"));
                    }
                    if s.local_addr.is_ipv4() != s.remote_addr.is_ipv4() {
                        out.push(format!("socket mixes address families: {s:?}"));
                    }
                }
                for c in &b.counts {
                    if c.netns < 0 || c.count < 0 || !(1..=11).contains(&c.state) {
                        out.push(format!("count out of range: {c:?}"));
                    }
                }
                if b.epoch < 1 || b.seq < 1 {
                    out.push(format!("epoch {} seq {} accepted", b.epoch, b.seq));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed fuzz input (seeds and the crashers the fuzzer found) goes
    /// through the same path as in the fuzz target: no panic, and each is either
    /// refused with a reason or accepted clean. A few named seeds pin the verdict.
    #[test]
    fn every_fuzz_corpus_input_is_refused_with_a_reason_or_accepted_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ingest");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 30, "the corpus lost its seeds: {files:?}");
        let (mut accepted, mut refused) = (0, 0);
        for f in &files {
            let bytes = std::fs::read(f).expect("corpus file");
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let outcome = std::panic::catch_unwind(|| read(&bytes, &Limits::default()));
            match outcome {
                Err(_) => panic!("{name}: decode and validation panicked"),
                Ok(Ok(m)) => {
                    let b = m.breaches();
                    assert!(b.is_empty(), "{name} accepted but unclean: {b:?}");
                    assert!(
                        !name.starts_with("seed-bad") && !name.starts_with("seed-raw"),
                        "{name} must be refused"
                    );
                    accepted += 1;
                }
                Ok(Err(e)) => {
                    assert!(!e.to_string().is_empty(), "{name}: a refusal says why");
                    assert!(
                        !matches!(name, "seed-hello" | "seed-full-v4" | "seed-delta"),
                        "{name} must be accepted: {e}"
                    );
                    refused += 1;
                }
            }
        }
        assert!(
            accepted >= 5 && refused >= 15,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn garbage_empty_and_invalid_messages_are_refused_distinctly() {
        let limits = Limits::default();
        assert!(matches!(
            read(&[0xff, 0xff, 0xff], &limits),
            Err(Refusal::Decode(_))
        ));
        assert!(matches!(read(&[], &limits), Err(Refusal::Empty)));
        let hello = pb::AgentMessage {
            body: Some(Body::Hello(pb::Hello::default())),
        };
        let e = read(&hello.encode_to_vec(), &limits).expect_err("no host");
        assert!(e.to_string().starts_with("hello.host"), "{e}");
    }
}
