//! Aligned text tables: a header row, columns two spaces apart (numbers right-aligned),
//! no trailing spaces, and optional note lines under a row (a leak's hint, what a host's
//! agent could not see).

/// Which side of its column a cell sticks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers and durations.
    Right,
}

struct Row {
    cells: Vec<String>,
    notes: Vec<String>,
}

/// A table being filled.
pub struct Table {
    titles: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Row>,
}

impl Table {
    /// A table with these column titles and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            titles: columns.iter().map(|(t, _)| (*t).to_string()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// A table whose columns are only known at run time (one per TCP state).
    pub fn with_titles(titles: Vec<String>, aligns: Vec<Align>) -> Table {
        Table {
            titles,
            aligns,
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(Row {
            cells,
            notes: Vec::new(),
        });
    }

    /// Adds a row followed by an indented note line.
    pub fn row_with_note(&mut self, cells: Vec<String>, note: String) {
        self.row_with_notes(cells, vec![note]);
    }

    /// Adds a row followed by one indented line per note (none when `notes` is empty).
    pub fn row_with_notes(&mut self, cells: Vec<String>, notes: Vec<String>) {
        self.rows.push(Row { cells, notes });
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row (plus notes), each ending in `\n`.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.titles.iter().map(|t| width(t)).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(&row.cells) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let pad = w.saturating_sub(width(c));
                if i > 0 {
                    text.push_str("  ");
                }
                match self.aligns.get(i).copied().unwrap_or(Align::Left) {
                    Align::Left => {
                        text.push_str(c);
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        text.extend(std::iter::repeat_n(' ', pad));
                        text.push_str(c);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.titles, &mut out);
        for row in &self.rows {
            line(&row.cells, &mut out);
            for note in &row.notes {
                out.push_str("  ");
                out.push_str(note);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("END", Align::Left),
        ]);
        t.row(vec!["a".into(), "1".into(), "".into()]);
        t.row_with_note(
            vec!["long-name".into(), "1234".into(), "x".into()],
            "hint: h".into(),
        );
        t.row_with_notes(vec!["b".into()], vec!["one".into(), "two".into()]);
        assert_eq!(
            t.render(),
            "NAME          N  END\n\
             a             1\n\
             long-name  1234  x\n  hint: h\n\
             b\n  one\n  two\n"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["é…".into(), "x".into()]);
        t.row(vec!["ab".into(), "y".into()]);
        assert_eq!(t.render(), "A   B\né…  x\nab  y\n");
    }
}
