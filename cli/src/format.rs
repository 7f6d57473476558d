//! How values look in tables: ages (`3m12s`), UTC times (`2026-11-23 03:12:05Z`),
//! truncated command lines, and text made safe for one terminal line.

use chrono::{DateTime, Utc};

/// Seconds as at most two units: `45s`, `3m12s`, `2h05m`, `3d04h`. Negative is `0s`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// Fractional seconds as an age (rounded to the second).
pub fn age_f(seconds: f64) -> String {
    if seconds.is_finite() {
        age(seconds.round() as i64)
    } else {
        "-".into()
    }
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An RFC 3339 timestamp as `YYYY-MM-DD HH:MM:SSZ` in UTC; anything unparsable is shown
/// as received (made safe).
pub fn time(ts: &str) -> String {
    match parse_time(ts) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => one_line(ts),
    }
}

/// [`time`], or `none` for a null timestamp.
pub fn time_or(ts: Option<&str>, none: &str) -> String {
    ts.map_or_else(|| none.to_string(), time)
}

/// How long ago `ts` was, relative to `now` (`3m12s`), or `-` when unparsable.
pub fn ago(ts: &str, now: DateTime<Utc>) -> String {
    parse_time(ts).map_or_else(|| "-".into(), |t| age((now - t).num_seconds()))
}

/// At most `max` characters; a cut string ends with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Text from the network made safe for one line of a table: control characters
/// (newlines, escapes, the NULs between cmdline arguments) become spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A possibly-null text cell: made safe, `-` when absent or empty.
pub fn cell(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.trim().is_empty() => one_line(t.trim()),
        _ => "-".into(),
    }
}

/// A possibly-null number cell.
pub fn num<T: ToString>(n: Option<T>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// A ratio as a whole percentage (`0.71` → `71%`).
pub fn percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:.0}%", ratio * 100.0)
    } else {
        "-".into()
    }
}

/// Words of `text` wrapped to `width` columns, every line starting with `indent`.
pub fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count() + usize::from(!empty) + word.chars().count();
        if !empty && len > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_two_units_at_most() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(-4), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(3_600), "1h00m");
        assert_eq!(age(7_500), "2h05m");
        assert_eq!(age(3 * 86_400 + 4 * 3_600 + 59), "3d04h");
        assert_eq!(age_f(59.6), "1m00s");
        assert_eq!(age_f(f64::NAN), "-");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(time("2026-11-23T03:12:05.123456Z"), "2026-11-23 03:12:05Z");
        assert_eq!(time("2026-11-23T04:12:05+01:00"), "2026-11-23 03:12:05Z");
        assert_eq!(time("yesterday\n"), "yesterday ");
        assert_eq!(time_or(None, "open"), "open");
        let now = parse_time("2026-11-23T03:15:17Z").expect("valid");
        assert_eq!(ago("2026-11-23T03:12:05Z", now), "3m12s");
        assert_eq!(ago("nonsense", now), "-");
    }

    #[test]
    fn text_is_truncated_by_characters_and_made_one_line() {
        assert_eq!(truncate("short", 5), "short");
        assert_eq!(truncate("/usr/bin/python3 -m server", 10), "/usr/bin/…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(cell(Some("srv\0--port\x1b[31m")), "srv --port [31m");
        assert_eq!(cell(Some("  ")), "-");
        assert_eq!(cell(None), "-");
        assert_eq!(num(None::<u32>), "-");
        assert_eq!(percent(0.714), "71%");
    }

    #[test]
    fn wrapping_respects_width_and_indent() {
        let w = wrap("aaa bbb ccc ddd", 9, "  ");
        assert_eq!(w, "  aaa bbb\n  ccc ddd\n");
        assert_eq!(wrap("", 10, "  "), "");
        // A word longer than the width still gets its own line.
        assert_eq!(wrap("x verylongword y", 6, ""), "x\nverylongword\ny\n");
    }
}
