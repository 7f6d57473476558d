//! Kernel timer kinds (`idiag_timer`): one canonical word each for answers and JSON,
//! and the word `ss -o` prints, for the agent's `ss`-compatible table.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which kernel timer is pending on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Retransmission timer (`on` in `ss`).
    Retransmit,
    /// Keepalive timer; also the FIN_WAIT2 timer of an orphaned full socket.
    Keepalive,
    /// TIME_WAIT timer; also the timer of an orphaned FIN_WAIT2 mini-socket.
    TimeWait,
    /// Zero-window probe timer (`persist` in `ss`).
    Probe,
}

impl TimerKind {
    /// Every kind, in kernel order.
    pub const ALL: [TimerKind; 4] = [
        TimerKind::Retransmit,
        TimerKind::Keepalive,
        TimerKind::TimeWait,
        TimerKind::Probe,
    ];

    /// Maps `idiag_timer` (also the number stored by the collector); 0 (no timer) and
    /// unknown values give `None`.
    pub fn from_kernel(n: u8) -> Option<TimerKind> {
        match n {
            1..=4 => Some(TimerKind::ALL[usize::from(n) - 1]),
            _ => None,
        }
    }

    /// Maps a stored number; 0 and unknown values give `None`.
    pub fn from_number(n: i16) -> Option<TimerKind> {
        u8::try_from(n).ok().and_then(TimerKind::from_kernel)
    }

    /// The kernel's number.
    pub fn as_kernel(self) -> u8 {
        match self {
            TimerKind::Retransmit => 1,
            TimerKind::Keepalive => 2,
            TimerKind::TimeWait => 3,
            TimerKind::Probe => 4,
        }
    }

    /// The canonical word: `retransmit`, `keepalive`, `time_wait`, `probe`.
    pub fn name(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "retransmit",
            TimerKind::Keepalive => "keepalive",
            TimerKind::TimeWait => "time_wait",
            TimerKind::Probe => "probe",
        }
    }

    /// The word `ss -o` prints in `timer:(WORD,...)`: `on`, `keepalive`, `timewait`,
    /// `persist`.
    pub fn ss_word(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "on",
            TimerKind::Keepalive => "keepalive",
            TimerKind::TimeWait => "timewait",
            TimerKind::Probe => "persist",
        }
    }

    /// Parses the canonical word or the `ss` word, in any case, `-` or `_` alike.
    pub fn parse(word: &str) -> Option<TimerKind> {
        let w = word.trim().to_ascii_lowercase().replace('-', "_");
        TimerKind::ALL
            .into_iter()
            .find(|k| k.name() == w || k.ss_word() == w || k.name().replace('_', "") == w)
    }
}

impl fmt::Display for TimerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TimerKind {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimerKind {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<TimerKind, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(de)?;
        TimerKind::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a timer kind")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ss_words_and_numbers_round_trip() {
        for k in TimerKind::ALL {
            assert_eq!(TimerKind::parse(k.name()), Some(k));
            assert_eq!(TimerKind::parse(k.ss_word()), Some(k));
            assert_eq!(TimerKind::from_kernel(k.as_kernel()), Some(k));
            let json = serde_json::to_string(&k).expect("serialise");
            assert_eq!(serde_json::from_str::<TimerKind>(&json).ok(), Some(k));
        }
        assert_eq!(TimerKind::from_kernel(0), None);
        assert_eq!(TimerKind::parse("off"), None);
        assert_eq!(TimerKind::parse("TIME-WAIT"), Some(TimerKind::TimeWait));
    }
}
