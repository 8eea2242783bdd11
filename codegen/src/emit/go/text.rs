//! Go source as text, written the way `gofmt` writes it, so the generated files need no
//! formatter and `gofmt -l` finds nothing to change (CI checks that).

/// One line of a block whose cells `gofmt` aligns (struct fields, `const` specs).
pub(super) enum Line {
    /// A `//` comment line: it ends a run of aligned rows, as in `gofmt`.
    Comment(String),
    /// Cells of one row; all but the last are padded to their column's width.
    Row(Vec<String>),
}

/// The lines of a block, indented one tab, each maximal run of rows aligned by column.
pub(super) fn aligned(lines: &[Line]) -> String {
    aligned_at(lines, 1)
}

/// [`aligned`], indented `depth` tabs.
pub(super) fn aligned_at(lines: &[Line], depth: usize) -> String {
    let indent = "\t".repeat(depth);
    let mut out = String::new();
    let mut run: Vec<&Vec<String>> = Vec::new();
    let flush = |run: &mut Vec<&Vec<String>>, out: &mut String| {
        let columns = run.iter().map(|r| r.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| run.iter().filter(|r| c + 1 < r.len()).map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in run.drain(..) {
            out.push_str(&indent);
            for (c, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if c + 1 < row.len() {
                    out.push_str(&" ".repeat(widths[c] - cell.chars().count() + 1));
                }
            }
            out.push('\n');
        }
    };
    for line in lines {
        match line {
            Line::Row(cells) => run.push(cells),
            Line::Comment(text) => {
                flush(&mut run, &mut out);
                out.push_str(&format!("{indent}// {text}\n"));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `text` as `//` comment lines, each prefixed by `indent`; a blank line of the text stays
/// a bare `//`.
pub(super) fn comment(indent: &str, text: &str) -> String {
    text.lines()
        .map(|l| if l.trim().is_empty() { format!("{indent}//\n") } else { format!("{indent}// {l}\n") })
        .collect()
}

/// The comment lines of `text`, for [`aligned`].
pub(super) fn comment_lines(text: &str) -> Vec<Line> {
    text.lines().map(|l| Line::Comment(l.to_string())).collect()
}

/// A Go interpreted string literal of `s`. JSON's escapes are a subset of Go's, and
/// serde_json never writes the one Go lacks (`\/`).
pub(super) fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_align_by_column_and_a_comment_ends_a_run() {
        let lines = [
            Line::Row(vec!["ID".into(), "uuid.UUID".into(), "`avro:\"id\"`".into()]),
            Line::Row(vec!["OccurredAt".into(), "time.Time".into(), "`avro:\"occurred_at\"`".into()]),
            Line::Comment("Saga key.".into()),
            Line::Row(vec!["OrderID".into(), "uuid.UUID".into(), "`avro:\"order_id\"`".into()]),
        ];
        assert_eq!(
            aligned(&lines),
            "\tID         uuid.UUID `avro:\"id\"`\n\tOccurredAt time.Time `avro:\"occurred_at\"`\n\t// Saga key.\n\tOrderID uuid.UUID `avro:\"order_id\"`\n"
        );
    }

    #[test]
    fn a_string_literal_escapes_what_go_needs() {
        assert_eq!(quoted("a \"b\" `c`\n"), "\"a \\\"b\\\" `c`\\n\"");
    }
}
