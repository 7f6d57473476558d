//! How values look in tables: UTC times (`2026-11-23 03:12:05Z`), how long ago
//! (`3m12s`, in `finwait_vocab::time::format_age`'s units), truncated command lines,
//! and text made safe for one terminal line.

use chrono::{DateTime, Utc};
use finwait_vocab::time::format_age;

/// A UTC time as `YYYY-MM-DD HH:MM:SSZ`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// [`time`], or `none` for an absent time.
pub fn time_or(t: Option<DateTime<Utc>>, none: &str) -> String {
    t.map_or_else(|| none.to_string(), time)
}

/// How long ago `t` was, relative to `now` (`3m12s`).
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format_age((now - t).num_seconds())
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
    fn times_are_shown_in_utc_and_ages_in_two_units() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("valid")
                .with_timezone(&Utc)
        };
        assert_eq!(
            time(t("2026-11-23T03:12:05.123456Z")),
            "2026-11-23 03:12:05Z"
        );
        assert_eq!(time(t("2026-11-23T04:12:05+01:00")), "2026-11-23 03:12:05Z");
        assert_eq!(time_or(None, "open"), "open");
        let now = t("2026-11-23T03:15:17Z");
        assert_eq!(ago(t("2026-11-23T03:12:05Z"), now), "3m12s");
        assert_eq!(
            ago(now, t("2026-11-23T03:12:05Z")),
            "0s",
            "a clock ahead is not negative"
        );
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
