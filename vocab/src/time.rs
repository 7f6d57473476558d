//! The duration and instant grammar every side reads and writes.
//!
//! A duration is a non-negative number (decimals allowed) with an optional unit:
//! `90` and `90s` are seconds, `15m` minutes, `2h` hours, `1d` days. An instant is an
//! RFC 3339 time (`2026-11-23T03:12:00Z`) or a duration meaning that long ago (`2h`).

use chrono::{DateTime, Utc};

/// The longest "that long ago" an instant may be written as.
pub const MAX_AGO_S: f64 = 10.0 * 365.0 * 86_400.0;

/// How to write a duration, for error messages.
pub const DURATION_HELP: &str = "a duration like 90, 90s, 15m, 2h or 1d";
/// How to write an instant, for error messages.
pub const INSTANT_HELP: &str = "an RFC 3339 time (2026-11-23T03:12:00Z) or a duration ago (2h)";

/// Seconds in a duration, `None` for anything else (negative, empty, unknown unit).
pub fn parse_duration(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3_600.0),
        Some((i, 'd')) => (&t[..i], 86_400.0),
        _ => (t, 1.0),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match num.split_once('.') {
        None => digits(num),
        Some((whole, frac)) => digits(whole) && digits(frac),
    };
    ok.then(|| num.parse::<f64>().ok())
        .flatten()
        .map(|n| n * mult)
        .filter(|s| s.is_finite())
}

/// An instant as written: absolute, or a duration before whatever "now" the reader
/// uses (the collector's clock, so that `2h` means the same on every client).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InstantSpec {
    /// An RFC 3339 time.
    At(DateTime<Utc>),
    /// This many seconds ago.
    Ago(f64),
}

impl InstantSpec {
    /// Parses either form; `None` for anything else or for more than [`MAX_AGO_S`] ago.
    pub fn parse(text: &str) -> Option<InstantSpec> {
        let t = text.trim();
        if let Ok(at) = DateTime::parse_from_rfc3339(t) {
            return Some(InstantSpec::At(at.with_timezone(&Utc)));
        }
        parse_duration(t)
            .filter(|s| *s <= MAX_AGO_S)
            .map(InstantSpec::Ago)
    }

    /// The instant, relative to `now`.
    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            InstantSpec::At(t) => t,
            InstantSpec::Ago(s) => now - chrono::Duration::milliseconds((s * 1000.0) as i64),
        }
    }
}

/// Seconds as at most two units: `45s`, `3m12s`, `2h05m`, `3d04h`. Negative is `0s`.
pub fn format_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_nonsense_does_not() {
        for (t, s) in [
            ("90", 90.0),
            ("90s", 90.0),
            ("1.5m", 90.0),
            ("15m", 900.0),
            ("2h", 7200.0),
            ("1d", 86_400.0),
            (" 0 ", 0.0),
        ] {
            assert_eq!(parse_duration(t), Some(s), "{t}");
        }
        for bad in [
            "", "-5", "5 weeks", "h", "1e3", "1.", ".5", "2w", "NaN", "inf",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn instants_are_rfc3339_or_durations_ago() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T03:12:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let ago = InstantSpec::parse("2h").expect("ago").resolve(now);
        assert_eq!((now - ago).num_seconds(), 7200);
        let at = InstantSpec::parse("2026-11-23T01:00:00+01:00").expect("at");
        assert_eq!(at.resolve(now).to_rfc3339(), "2026-11-23T00:00:00+00:00");
        assert_eq!(InstantSpec::parse("yesterday"), None);
        assert_eq!(InstantSpec::parse("4000d"), None);
    }

    #[test]
    fn ages_use_two_units() {
        assert_eq!(format_age(-3), "0s");
        assert_eq!(format_age(45), "45s");
        assert_eq!(format_age(192), "3m12s");
        assert_eq!(format_age(7500), "2h05m");
        assert_eq!(format_age(273_600), "3d04h");
    }
}
