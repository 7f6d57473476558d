//! What a flag's value is, read from clap's own description of the flag (its action
//! and its value parser's type), and how a TOML value becomes command-line words.

use std::any::TypeId;
use std::path::PathBuf;

use clap::{Arg, ArgAction};

/// The shape of a flag's value, as a file must spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A switch (`SetTrue` / `SetFalse`): `true` or `false`.
    Switch,
    /// Given N times (`Count`): a small integer.
    Count,
    /// A value parsed as `bool`.
    Bool,
    /// A whole number.
    Integer,
    /// Any number.
    Float,
    /// A path: never redacted.
    Path,
    /// Text (strings, addresses, enum words).
    Text,
}

impl Kind {
    /// The kind of `arg`.
    pub(crate) fn of(arg: &Arg) -> Kind {
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => return Kind::Switch,
            ArgAction::Count => return Kind::Count,
            _ => {}
        }
        let id = arg.get_value_parser().type_id();
        let is = |t: TypeId| id == t;
        if is(TypeId::of::<bool>()) {
            Kind::Bool
        } else if [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<u128>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<i128>(),
            TypeId::of::<isize>(),
        ]
        .into_iter()
        .any(is)
        {
            Kind::Integer
        } else if is(TypeId::of::<f64>()) || is(TypeId::of::<f32>()) {
            Kind::Float
        } else if is(TypeId::of::<PathBuf>()) {
            Kind::Path
        } else {
            Kind::Text
        }
    }

    /// What a file must hold, for error messages.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Kind::Switch | Kind::Bool => "a boolean (true or false)",
            Kind::Count | Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::Path | Kind::Text => "a string",
        }
    }

    /// Whether the value is written bare (not quoted) in TOML.
    pub(crate) fn bare(self) -> bool {
        matches!(
            self,
            Kind::Switch | Kind::Count | Kind::Bool | Kind::Integer | Kind::Float
        )
    }
}

/// Whether a flag may be given more than once (a TOML array in a file).
pub(crate) fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Most times a counted flag may be given from a file.
const MAX_COUNT: i64 = 255;

/// The command-line words that give `long` the file's `value`, or what is wrong with
/// the value (its expected type).
pub(crate) fn words(arg: &Arg, long: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let kind = Kind::of(arg);
    let wrong = |v: &toml::Value| format!("expected {}, found {}", kind.expected(), v.type_str());
    match (kind, value) {
        (Kind::Switch, toml::Value::Boolean(b)) => {
            // A switch is off unless given; `false` (or `true` of a SetFalse) is its
            // default, which the command line cannot spell, so it adds nothing.
            let on = matches!(arg.get_action(), ArgAction::SetTrue);
            Ok(if *b == on {
                vec![format!("--{long}")]
            } else {
                Vec::new()
            })
        }
        (Kind::Count, toml::Value::Integer(n)) if (0..=MAX_COUNT).contains(n) => {
            Ok((0..*n).map(|_| format!("--{long}")).collect())
        }
        (Kind::Count, toml::Value::Integer(_)) => Err(format!("expected 0 to {MAX_COUNT}")),
        (_, toml::Value::Array(items)) if repeatable(arg) => items
            .iter()
            .map(|v| scalar(kind, v).map(|s| format!("--{long}={s}")))
            .collect(),
        (_, v) => scalar(kind, v).map(|s| vec![format!("--{long}={s}")]),
    }
    .map_err(|e| if e.is_empty() { wrong(value) } else { e })
}

/// One value as the command line spells it; an empty error means "wrong type".
fn scalar(kind: Kind, value: &toml::Value) -> Result<String, String> {
    use toml::Value as V;
    match (kind, value) {
        (Kind::Bool, V::Boolean(b)) => Ok(b.to_string()),
        (Kind::Integer, V::Integer(n)) => Ok(n.to_string()),
        (Kind::Float, V::Integer(n)) => Ok(n.to_string()),
        (Kind::Float, V::Float(f)) => Ok(f.to_string()),
        (Kind::Path | Kind::Text, V::String(s)) => Ok(s.clone()),
        (_, v) => Err(format!(
            "expected {}, found {}",
            kind.expected(),
            v.type_str()
        )),
    }
}

/// The flag name closest to `key` (edit distance), if one is close enough to be a
/// likely typo.
pub(crate) fn closest<'a>(key: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .map(|n| (distance(key, n), n))
        .filter(|(d, n)| *d <= (n.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_suggest_the_nearest_flag_and_nonsense_suggests_nothing() {
        let names = ["interval", "token-file", "ca-file", "insecure-loopback"];
        assert_eq!(closest("intervall", names), Some("interval"));
        assert_eq!(closest("token_file", names), Some("token-file"));
        assert_eq!(
            closest("insecure-lopback", names),
            Some("insecure-loopback")
        );
        assert_eq!(closest("colour", names), None);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
