//! A small aligned-columns printer: a header row, then rows, each column
//! as wide as its widest cell, two spaces between columns. Empty cells
//! print as `-` so every row splits into the same number of words.

use std::io::{self, Write};

/// Rows of text cells under a header.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Spaces between two columns.
const GAP: &str = "  ";

impl Table {
    /// A table with these column titles.
    pub(crate) fn new<S: AsRef<str>>(header: &[S]) -> Self {
        Self {
            header: header.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print as `-`, extra cells are kept.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the header and the rows.
    pub(crate) fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in [&self.header].into_iter().chain(&self.rows) {
            for (i, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(display_width(cell(line, i)));
            }
        }
        let mut text = String::new();
        for line in [&self.header].into_iter().chain(&self.rows) {
            text.clear();
            for (i, width) in widths.iter().enumerate() {
                let value = cell(line, i);
                text.push_str(value);
                if i + 1 < columns {
                    let pad = width - display_width(value);
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(GAP);
                }
            }
            writeln!(out, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

/// The text of cell `i` of `line`: `-` when missing or empty.
fn cell(line: &[String], i: usize) -> &str {
    match line.get(i) {
        Some(s) if !s.is_empty() => s,
        _ => "-",
    }
}

/// Columns a cell takes (one per character; good enough for the text
/// Shoal prints).
fn display_width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Table) -> String {
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&["NAME", "PROTOCOL", "BIND"]);
        t.row(vec![
            "tcp-default".into(),
            "tcp".into(),
            "127.0.0.1:7000".into(),
        ]);
        t.row(vec!["u".into(), "udp".into(), "127.0.0.1:7001".into()]);
        assert_eq!(
            render(&t),
            "NAME         PROTOCOL  BIND\n\
             tcp-default  tcp       127.0.0.1:7000\n\
             u            udp       127.0.0.1:7001\n"
        );
    }

    #[test]
    fn empty_and_missing_cells_print_a_dash() {
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(vec!["x".into(), String::new()]);
        assert_eq!(render(&t), "A  B  C\nx  -  -\n");
    }

    #[test]
    fn wide_characters_count_once_and_no_trailing_spaces() {
        let mut t = Table::new(&["K", "V"]);
        t.row(vec!["µs".into(), "1".into()]);
        t.row(vec!["long key".into(), String::new()]);
        let text = render(&t);
        assert_eq!(text, "K         V\nµs        1\nlong key  -\n");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn a_header_alone_is_printed() {
        let t = Table::new(&["ID", "PRODUCT"]);
        assert_eq!(render(&t), "ID  PRODUCT\n");
    }
}
