//! The line editor's map of the users file: where each entry and each of its keys is, line by
//! line, and the lines that set a key or append an entry in the file's own style (indentation,
//! key order, block or flow lists, blank lines between entries, line endings). A layout it does
//! not understand is refused, never guessed at.

use serde_yaml::Value;

use super::{EditError, render::render};

/// The order of keys in a new entry when the file has no entry to copy it from.
const KEY_ORDER: [&str; 8] = crate::users::FIELDS;

/// Where the entries and their keys are, line by line.
pub(super) struct Layout {
    /// The file's lines, each with its line ending.
    pub(super) lines: Vec<String>,
    /// `\n` or `\r\n`, as the file has it.
    pub(super) newline: &'static str,
    /// The column of the top-level `- `.
    seq_indent: usize,
    /// Columns from `-` to the first key (usually 2).
    key_offset: usize,
    pub(super) entries: Vec<EntrySpan>,
    /// The line of a `[]` that stands for an empty list.
    empty_list: Option<usize>,
    /// Whether entries are separated by blank lines.
    spaced: bool,
}

/// One entry: lines `start..end` (its last line holding content, comments inside included).
pub(super) struct EntrySpan {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) key_indent: usize,
    pub(super) keys: Vec<KeySpan>,
}

/// One key of an entry: lines `start..end`, the key at column `column`.
pub(super) struct KeySpan {
    pub(super) name: String,
    pub(super) start: usize,
    pub(super) end: usize,
    column: usize,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn body(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// Whether a line holds YAML content (not blank, not only a comment).
pub(super) fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The key a line starts with at `column` (`name:` followed by a space or the line's end).
fn key_at(line: &str, column: usize) -> Option<&str> {
    let rest = body(line).get(column..)?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let after = &rest[end..];
    (end > 0 && (after == ":" || after.starts_with(": ") || after.starts_with(":\t")))
        .then(|| &rest[..end])
}

/// Adds a line ending to a line that has none (the file's last line).
pub(super) fn end_line(line: &mut String, newline: &str) {
    if !line.ends_with('\n') {
        line.push_str(newline);
    }
}

impl Layout {
    pub(super) fn of(text: &str) -> Result<Self, EditError> {
        let lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let mut layout = Self {
            lines,
            newline,
            seq_indent: 0,
            key_offset: 2,
            entries: Vec::new(),
            empty_list: None,
            spaced: false,
        };
        let Some(first) = layout.lines.iter().position(|l| is_content(l)) else {
            return Ok(layout);
        };
        let first_line = body(&layout.lines[first]);
        let trimmed = first_line.trim_start();
        if trimmed.starts_with("---") || trimmed.starts_with('%') {
            return Err(EditError::Layout(
                "the file starts with a YAML document marker or directive".into(),
            ));
        }
        if trimmed.split('#').next().map(str::trim) == Some("[]") {
            layout.empty_list = Some(first);
            if layout.lines[first + 1..].iter().any(|l| is_content(l)) {
                return Err(EditError::Layout("content after `[]`".into()));
            }
            return Ok(layout);
        }
        if !(trimmed == "-" || trimmed.starts_with("- ")) {
            return Err(EditError::Layout(
                "the users file is not a block list (`- username: …` entries)".into(),
            ));
        }
        layout.seq_indent = indent(first_line);
        let seq = layout.seq_indent;
        let starts: Vec<usize> = (first..layout.lines.len())
            .filter(|&i| {
                let line = body(&layout.lines[i]);
                is_content(line) && indent(line) <= seq
            })
            .collect();
        for (n, &start) in starts.iter().enumerate() {
            let line = body(&layout.lines[start]);
            let rest = &line[seq..];
            if indent(line) != seq || !(rest == "-" || rest.starts_with("- ")) {
                return Err(EditError::Layout(format!(
                    "line {} is neither an entry (`- `) nor inside one",
                    start + 1
                )));
            }
            let next = starts.get(n + 1).copied().unwrap_or(layout.lines.len());
            let end = (start + 1..next)
                .rev()
                .find(|&i| {
                    let line = body(&layout.lines[i]);
                    !line.trim().is_empty() && indent(line) > seq
                })
                .map_or(start + 1, |i| i + 1);
            let entry = layout.entry(start, end)?;
            layout.entries.push(entry);
        }
        if let Some(first) = layout.entries.first() {
            layout.key_offset = first.key_indent.saturating_sub(seq);
        }
        layout.spaced = match layout.entries.as_slice() {
            [first, second, ..] => layout.lines[first.end..second.start]
                .iter()
                .any(|l| l.trim().is_empty()),
            _ => false,
        };
        Ok(layout)
    }

    /// The keys of the entry on lines `start..end`.
    fn entry(&self, start: usize, end: usize) -> Result<EntrySpan, EditError> {
        let first = body(&self.lines[start]);
        let after_dash = &first[self.seq_indent + 1..];
        let on_dash = after_dash.trim_start();
        let key_indent = if is_content(on_dash) {
            if on_dash.starts_with(['{', '[', '&', '!', '"', '\'']) {
                return Err(EditError::Layout(format!(
                    "the entry on line {} is not written as `- key: value` lines",
                    start + 1
                )));
            }
            first.len() - on_dash.len()
        } else {
            (start + 1..end)
                .map(|i| body(&self.lines[i]))
                .find(|l| is_content(l))
                .map_or(self.seq_indent + 2, indent)
        };
        let mut keys: Vec<KeySpan> = Vec::new();
        for i in start..end {
            let line = &self.lines[i];
            let at_key = (i == start || indent(line) == key_indent)
                .then(|| key_at(line, key_indent))
                .flatten();
            if let Some(name) = at_key {
                keys.push(KeySpan {
                    name: name.to_owned(),
                    start: i,
                    end: i + 1,
                    column: key_indent,
                });
            } else if let Some(key) = keys.last_mut()
                && is_content(line)
            {
                // Continuation of the key above (a block list, a folded text); comments and
                // blank lines after a key's last value line stay where they are.
                key.end = i + 1;
            }
        }
        Ok(EntrySpan {
            start,
            end,
            key_indent,
            keys,
        })
    }

    /// The lines that replace `span` to give `key` the value `value`: the same prefix (spaces,
    /// or the entry's `- `), and a block list written as a block list again.
    pub(super) fn key_lines(&self, span: &KeySpan, key: &str, value: &Value) -> Vec<String> {
        let first = body(&self.lines[span.start]);
        let prefix = &first[..span.column];
        let nl = self.newline;
        if let Value::Sequence(items) = value
            && !items.is_empty()
            && span.end - span.start > 1
        {
            // The items' own prefix, e.g. `    - ` or `  - `, from the first item line.
            let item = (span.start + 1..span.end)
                .map(|i| body(&self.lines[i]))
                .find(|l| l.trim_start().starts_with("- "));
            if let Some(item) = item {
                let item_prefix = &item[..indent(item) + 2];
                let mut out = vec![format!("{prefix}{key}:{nl}")];
                out.extend(
                    items
                        .iter()
                        .map(|v| format!("{item_prefix}{}{nl}", render(v))),
                );
                return out;
            }
        }
        vec![format!("{prefix}{key}: {}{nl}", render(value))]
    }

    /// The line that adds `key` to an entry whose keys are at `key_indent`.
    pub(super) fn key_lines_new(&self, key_indent: usize, key: &str, value: &Value) -> Vec<String> {
        vec![format!(
            "{}{key}: {}{}",
            " ".repeat(key_indent),
            render(value),
            self.newline
        )]
    }

    /// Appends an entry for `fields` in the file's own style: its indentation, the key order of
    /// its first entry, a blank line before it when entries are separated by one.
    pub(super) fn append(&self, lines: &mut Vec<String>, fields: &[(&'static str, Value)]) {
        let nl = self.newline;
        let mut order: Vec<&str> = self
            .entries
            .first()
            .map(|e| {
                e.keys
                    .iter()
                    .map(|k| k.name.as_str())
                    .filter(|k| KEY_ORDER.contains(k))
                    .collect()
            })
            .unwrap_or_default();
        if !order.contains(&"username") {
            order.insert(0, "username");
        }
        for key in KEY_ORDER {
            if !order.contains(&key) {
                order.push(key);
            }
        }
        let mut entry = Vec::new();
        for key in order {
            let Some((_, value)) = fields.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let prefix = if entry.is_empty() {
                format!(
                    "{}-{}",
                    " ".repeat(self.seq_indent),
                    " ".repeat(self.key_offset.max(1) - 1)
                )
            } else {
                " ".repeat(self.seq_indent + self.key_offset)
            };
            entry.push(format!("{prefix}{key}: {}{nl}", render(value)));
        }
        if let Some(line) = self.empty_list {
            lines.splice(line..=line, entry);
            return;
        }
        if let Some(last) = lines.last_mut() {
            end_line(last, nl);
        }
        if self.spaced && lines.last().is_some_and(|l| !l.trim().is_empty()) {
            lines.push(nl.to_owned());
        }
        lines.extend(entry);
    }
}
