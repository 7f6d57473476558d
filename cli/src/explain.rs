//! `finwait explain`: prints what a TCP state, a leak verdict or a confidence means,
//! who is at fault, what fixes it and what does not. Offline: the texts and the names
//! they answer to are finwait-vocab's (`finwait_vocab::explain`), shared with the
//! collector's pages; this module only lays them out for a terminal.

use finwait_vocab::explain::{Entry, entries_for, known_names};

use crate::error::Error;
use crate::format::wrap;

/// The text `finwait explain NAME` prints: one block per entry `name` spells (a state,
/// a verdict or both), or an error listing every known name.
pub fn explain(name: &str) -> Result<String, Error> {
    let entries = entries_for(name);
    if entries.is_empty() {
        return Err(Error::UnknownName {
            name: name.to_string(),
            known: known_names(),
        });
    }
    let texts: Vec<String> = entries.iter().map(|e| render(e)).collect();
    Ok(texts.join("\n"))
}

fn render(e: &Entry) -> String {
    const WIDTH: usize = 88;
    let mut out = format!("{} ({})\n", e.topic.name(), e.topic.category());
    for (title, text) in [
        ("What it means", e.means),
        ("Who is at fault", e.fault),
        ("What fixes it", e.fixes),
        ("What does NOT fix it", e.not),
    ] {
        out.push_str(&format!("  {title}:\n"));
        out.push_str(&wrap(text, WIDTH, "    "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use finwait_vocab::explain::{STATES, VERDICTS};
    use finwait_vocab::verdict::TIME_WAIT_PRESSURE;
    use finwait_vocab::{Confidence, LeakKind, TcpState};

    #[test]
    fn every_state_is_explained_under_every_spelling() {
        for st in TcpState::ALL {
            let name = st.name();
            for spelling in [
                name.to_string(),
                name.to_ascii_lowercase(),
                name.replace('_', "-"),
                name.to_ascii_lowercase().replace('_', "-"),
                st.ss_column().to_string(),
            ] {
                let text = explain(&spelling).expect("known state");
                assert!(text.starts_with(&format!("{name} (TCP state)")), "{text}");
                for section in [
                    "What it means:",
                    "Who is at fault:",
                    "What fixes it:",
                    "What does NOT",
                ] {
                    assert!(text.contains(section), "{name}: {section} missing");
                }
            }
        }
        for (word, name) in [("closed", "CLOSE"), ("estab", "ESTABLISHED")] {
            let text = explain(word).expect("an ss word");
            assert!(text.starts_with(&format!("{name} (TCP state)")), "{text}");
        }
    }

    #[test]
    fn every_verdict_and_confidence_is_explained() {
        for name in LeakKind::ALL
            .iter()
            .map(|k| k.name())
            .chain(Confidence::ALL.iter().map(|c| c.name()))
            .chain([TIME_WAIT_PRESSURE])
        {
            let text = explain(name).expect("known verdict");
            assert!(text.contains(&format!("{name} (")), "{text}");
            assert!(explain(&name.replace('_', "-").to_ascii_uppercase()).is_ok());
        }
    }

    #[test]
    fn close_wait_is_both_a_state_and_a_verdict() {
        let text = explain("close-wait").expect("known");
        assert!(text.contains("CLOSE_WAIT (TCP state)"));
        assert!(text.contains("close_wait (leak verdict)"));
    }

    #[test]
    fn wrapping_keeps_the_wrong_advice_readable() {
        // Wrapping may break a phrase across lines: compare with single spaces.
        let explain =
            |n: &str| explain(n).map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "));
        let cw = explain("CLOSE_WAIT").expect("known");
        assert!(cw.contains("do not clear CLOSE_WAIT"), "{cw}");
        let fw2 = explain("FIN_WAIT2").expect("known");
        assert!(
            fw2.contains("only bounds an orphaned FIN_WAIT2, not one still held"),
            "{fw2}"
        );
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let Err(e) = explain("FIN_WAIT3") else {
            panic!("FIN_WAIT3 is not a state")
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("unknown state or verdict \"FIN_WAIT3\""),
            "{msg}"
        );
        for n in TcpState::ALL
            .map(TcpState::name)
            .iter()
            .chain(&["one_sided", TIME_WAIT_PRESSURE])
        {
            assert!(msg.contains(n), "{n} missing from {msg}");
        }
    }

    #[test]
    fn lines_stay_within_the_width() {
        for e in STATES.iter().chain(&VERDICTS) {
            for line in render(e).lines() {
                // A single long word may overflow; none of ours is that long.
                assert!(line.chars().count() <= 88, "{}: {line}", e.topic.name());
            }
        }
    }
}
