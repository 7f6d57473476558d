//! Leak verdicts: what kind of leak a socket shows and how sure the pairing with its
//! peer is, with the one-line hint every answer carries.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What kind of leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeakKind {
    /// A CLOSE_WAIT that lasts: the holder never closed after its peer did.
    CloseWait,
    /// A half-closed FIN_WAIT2 (no timer, still held) that lasts: this side shut down
    /// writing and waits for a peer that never closes.
    HalfClosedWait,
    /// A LAST_ACK that does not clear: our FIN is never acknowledged.
    LastAckStuck,
}

/// How the grouped leak view sums leaks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupBy {
    /// One group per host, process and kind (the default).
    Process,
    /// One group per service and kind, across hosts.
    Service,
}

/// How the holder was paired with its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Confidence {
    /// The peer has the reversed 4-tuple.
    Exact,
    /// Only the client endpoint matches: NAT rewrote the server side.
    Nat,
    /// No peer seen (not instrumented, or its FIN_WAIT2 expired unseen).
    OneSided,
}

macro_rules! words {
    ($ty:ident, $what:literal, $($v:ident => $w:literal),+ $(,)?) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            /// The canonical word.
            pub fn name(self) -> &'static str {
                match self { $($ty::$v => $w),+ }
            }

            /// Parses the word in any case, `-` or `_` alike.
            pub fn parse(word: &str) -> Option<$ty> {
                let w = word.trim().to_ascii_lowercase().replace('-', "_");
                $ty::ALL.iter().copied().find(|v| v.name() == w)
            }

            /// The words, comma separated, for error messages.
            pub fn names() -> String {
                $ty::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<$ty, String> {
                $ty::parse(s).ok_or_else(|| {
                    format!(concat!("{:?} is not ", $what, "; one of {}"), s, $ty::names())
                })
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<$ty, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(de)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

words!(LeakKind, "a leak kind",
    CloseWait => "close_wait",
    HalfClosedWait => "half_closed_wait",
    LastAckStuck => "last_ack_stuck",
);

words!(GroupBy, "a grouping",
    Process => "process",
    Service => "service",
);

words!(Confidence, "a confidence",
    Exact => "exact",
    Nat => "nat",
    OneSided => "one_sided",
);

impl LeakKind {
    /// One line on what it means and what fixes it.
    pub fn hint(self) -> &'static str {
        match self {
            LeakKind::CloseWait => {
                "the holding process never called close() after its peer closed: fix its close \
                 path (keepalive sysctls do not clear CLOSE_WAIT)"
            }
            LeakKind::HalfClosedWait => {
                "this side shut down writing and still holds the socket, waiting for a peer that \
                 never closes its end"
            }
            LeakKind::LastAckStuck => {
                "our FIN is never acknowledged: the peer is gone or packets are dropped on the way"
            }
        }
    }
}

/// The pseudo-verdict for TIME_WAIT filling a host's ephemeral port range (reported
/// beside leaks, not as one).
pub const TIME_WAIT_PRESSURE: &str = "time_wait_pressure";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_words_round_trip_in_any_case() {
        for k in LeakKind::ALL {
            assert_eq!(LeakKind::parse(&k.name().to_uppercase()), Some(*k));
            assert_eq!(LeakKind::parse(&k.name().replace('_', "-")), Some(*k));
            assert!(!k.hint().is_empty());
        }
        for c in Confidence::ALL {
            let json = serde_json::to_string(c).expect("serialise");
            assert_eq!(serde_json::from_str::<Confidence>(&json).ok(), Some(*c));
        }
        assert_eq!(Confidence::parse("one-sided"), Some(Confidence::OneSided));
        assert!("maybe".parse::<Confidence>().is_err());
    }
}
