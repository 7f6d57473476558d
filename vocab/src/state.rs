//! TCP states, numbered as the Linux kernel numbers them (`include/net/tcp_states.h`),
//! with every spelling people and `ss` use.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A TCP state.
///
/// The kernel's `TCP_NEW_SYN_RECV` (request sockets) is reported as
/// [`TcpState::SynRecv`], as `ss` does. Serialised as its canonical name
/// (`CLOSE_WAIT`); deserialised from any spelling [`TcpState::parse`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    /// Data flows both ways.
    Established = 1,
    /// Our SYN is out, no answer yet.
    SynSent = 2,
    /// Peer's SYN received, SYN-ACK sent.
    SynRecv = 3,
    /// We closed; our FIN is unacknowledged.
    FinWait1 = 4,
    /// We closed, the peer acknowledged, the peer has not closed.
    FinWait2 = 5,
    /// Both closed; waiting 2*MSL.
    TimeWait = 6,
    /// Closed (unconnected, bound sockets).
    Close = 7,
    /// The peer closed; the local application has not.
    CloseWait = 8,
    /// We closed after the peer; our FIN is unacknowledged.
    LastAck = 9,
    /// Listening.
    Listen = 10,
    /// Simultaneous close.
    Closing = 11,
}

/// Every spelling accepted for each state, besides the canonical name: `ss` filter
/// words, `ss` column words, and the names without separators. Matching ignores case
/// and treats `-` and `_` alike.
pub const SPELLINGS: [(TcpState, &[&str]); 11] = [
    (TcpState::Established, &["established", "estab"]),
    (TcpState::SynSent, &["syn-sent", "synsent"]),
    (
        TcpState::SynRecv,
        &["syn-recv", "syn-received", "synrecv", "syn-rcvd"],
    ),
    (TcpState::FinWait1, &["fin-wait-1", "fin-wait1", "finwait1"]),
    (TcpState::FinWait2, &["fin-wait-2", "fin-wait2", "finwait2"]),
    (TcpState::TimeWait, &["time-wait", "timewait"]),
    (TcpState::Close, &["close", "closed", "unconn"]),
    (TcpState::CloseWait, &["close-wait", "closewait"]),
    (TcpState::LastAck, &["last-ack", "lastack"]),
    (TcpState::Listen, &["listen", "listening"]),
    (TcpState::Closing, &["closing"]),
];

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// Bitmask of every state for an INET_DIAG request (bits 1..=12, 12 being
    /// `TCP_NEW_SYN_RECV`).
    pub const ALL_KERNEL_MASK: u32 = 0x1ffe;

    /// Maps the kernel's state number; `TCP_NEW_SYN_RECV` (12) becomes `SynRecv`.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        match n {
            12 => Some(TcpState::SynRecv),
            1..=11 => Some(TcpState::ALL[usize::from(n) - 1]),
            _ => None,
        }
    }

    /// Maps a stored state number (the kernel's, 1..=11).
    pub fn from_number(n: i16) -> Option<TcpState> {
        u8::try_from(n).ok().and_then(TcpState::from_kernel)
    }

    /// The kernel's number for this state.
    pub fn as_kernel(self) -> u8 {
        self as u8
    }

    /// Dense index 0..11, for per-state counters.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// The canonical name, e.g. `CLOSE_WAIT`: what every answer and printer shows.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// The word `ss` prints in its State column (`ESTAB`, `CLOSE-WAIT`, `FIN-WAIT-2` ...),
    /// for the agent's `ss`-compatible table.
    pub fn ss_column(self) -> &'static str {
        match self {
            TcpState::Established => "ESTAB",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynRecv => "SYN-RECV",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::TimeWait => "TIME-WAIT",
            TcpState::Close => "UNCONN",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::LastAck => "LAST-ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// Parses any spelling: the canonical name, the words `ss` accepts in filters and
    /// prints in its column (see [`SPELLINGS`]), in any case, with `-`, `_` or nothing
    /// between words.
    pub fn parse(word: &str) -> Option<TcpState> {
        let w = word.trim().to_ascii_lowercase().replace('_', "-");
        if w.is_empty() {
            return None;
        }
        let squashed = w.replace('-', "");
        TcpState::ALL.into_iter().find(|st| {
            let canon = st.name().to_ascii_lowercase().replace('_', "-");
            let spellings = SPELLINGS[st.index()].1;
            canon == w
                || canon.replace('-', "") == squashed
                || spellings
                    .iter()
                    .any(|s| *s == w || s.replace('-', "") == squashed)
        })
    }

    /// The canonical names, comma separated, for error messages.
    pub fn names() -> String {
        TcpState::ALL.map(TcpState::name).join(", ")
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TcpState {
    type Err = String;

    fn from_str(s: &str) -> Result<TcpState, String> {
        TcpState::parse(s)
            .ok_or_else(|| format!("{s:?} is not a TCP state; one of {}", TcpState::names()))
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TcpState {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<TcpState, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_in_every_case_parses_to_its_state() {
        for (st, words) in SPELLINGS {
            let canon = st.name();
            for w in words.iter().copied().chain([canon, st.ss_column()]) {
                for v in [
                    w.to_string(),
                    w.to_ascii_uppercase(),
                    w.replace('-', "_"),
                    w.replace('_', "-"),
                ] {
                    assert_eq!(TcpState::parse(&v), Some(st), "{v}");
                }
            }
            assert_eq!(TcpState::from_kernel(st.as_kernel()), Some(st));
        }
        assert_eq!(TcpState::parse("FIN_WAIT_2"), Some(TcpState::FinWait2));
        assert_eq!(TcpState::from_kernel(12), Some(TcpState::SynRecv));
        for bad in ["", "half-open", "close-wiat", "fin-wait-3", "0"] {
            assert_eq!(TcpState::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn serialises_as_the_canonical_name_and_reads_any_spelling() {
        let json = serde_json::to_string(&TcpState::CloseWait).expect("serialise");
        assert_eq!(json, "\"CLOSE_WAIT\"");
        let st: TcpState = serde_json::from_str("\"close-wait\"").expect("deserialise");
        assert_eq!(st, TcpState::CloseWait);
        assert!(serde_json::from_str::<TcpState>("\"nope\"").is_err());
    }
}
