//! Why a users file failed to load, in words an operator can act on: every problem named by
//! line and user, with a hint of what to write. Runs only when the file failed.

use super::{Entry, FIELDS, SUMMARY_NAMES};

/// Turns the YAML reader's first error into every problem of the file, each named
/// `line N, user #K ("name")` with a hint of what to write. Runs only when the file failed.
pub(super) fn explain(text: &str, error: &serde_yaml::Error) -> String {
    // Reading a large file a second time to name every problem would hold a reload back:
    // there, the first problem is named.
    if text.len() > EXPLAIN_LIMIT {
        return located(text, &error.to_string());
    }
    let message = error.to_string();
    if !(message.starts_with('.') || message.starts_with('[')) {
        // Not about one entry: the document's structure itself (a second read would only
        // find the same thing again).
        return structure(text, error);
    }
    // Not even a list: the structure is broken (the reader's own error says where), or the
    // file is not a list.
    let values = match serde_yaml::from_str::<Vec<serde_yaml::Value>>(text) {
        Ok(values) => values,
        Err(structure) => {
            let message = structure.to_string();
            if message.starts_with("invalid type") || message.contains(": invalid type") {
                // A value the generic reader cannot hold (a 128-bit integer): the entry
                // reader's message says what to do without echoing the value.
                return located(text, &error.to_string());
            }
            return self::structure(text, &structure);
        }
    };
    let lines = entry_lines(text, values.len());
    let mut problems = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let name = value
            .get("username")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("?");
        let entry_line = lines.as_ref().map(|l| l[index]);
        let place = |line: Option<usize>| match line {
            Some(line) => format!("line {line}, user #{} ({name:?})", index + 1),
            None => format!("user #{} ({name:?})", index + 1),
        };
        if !value.is_mapping() {
            problems.push(format!(
                "{}: an entry must be a mapping of keys (`username: …`); check its indentation",
                place(entry_line)
            ));
            continue;
        }
        // Read alone, the entry's error names its key; the position refers to the copy.
        let alone = serde_yaml::to_string(value).unwrap_or_default();
        if let Err(e) = serde_yaml::from_str::<Entry>(&alone) {
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            // The line of the key the message is about, when it names one.
            let key = message
                .split_once("unknown field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(key, _)| key)
                .or_else(|| message.split_once(": ").map(|(key, _)| key))
                .filter(|key| !key.contains(' '));
            let line = key
                .zip(entry_line)
                .and_then(|(key, from)| key_line(text, from, key))
                .or(entry_line);
            problems.push(format!("{}: {}", place(line), hint(message)));
        }
    }
    if problems.is_empty() {
        return located(text, &error.to_string());
    }
    let more = problems.len().saturating_sub(SUMMARY_NAMES);
    problems.truncate(SUMMARY_NAMES);
    if more > 0 {
        problems.push(format!("… and {more} more problems"));
    }
    problems.join("\n")
}

/// The largest file whose every problem is named (larger ones: the first).
const EXPLAIN_LIMIT: usize = 4 << 20;

/// The reader's message about one entry, with what to write instead where it can tell.
fn hint(message: &str) -> String {
    if let Some(rest) = message.split_once("unknown field `").map(|(_, rest)| rest)
        && let Some((key, _)) = rest.split_once('`')
    {
        if matches!(key, "password" | "passwd" | "plain_password") {
            return format!(
                "unknown key `{key}`: the file holds bcrypt hashes only; write \
                 `hashed_password:` with the output of `argilla-gateway hash-password`"
            );
        }
        let closest = FIELDS
            .iter()
            .map(|field| (strsim::levenshtein(key, field), field))
            .min()
            .filter(|(distance, _)| *distance <= 2);
        return match closest {
            Some((_, field)) => format!("unknown key `{key}`: did you mean `{field}`?"),
            None => format!("unknown key `{key}`; the keys are {}", FIELDS.join(", ")),
        };
    }
    if message.starts_with("workspaces: invalid type") && message.contains("expected a sequence") {
        return format!(
            "{message}: `workspaces` must be a list, like `workspaces: [team-a, team-b]` (or \
             `[]` for the own workspace only)"
        );
    }
    message.to_owned()
}

/// A structural error: the reader's message, and the line to re-indent with its entry.
fn structure(text: &str, error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    if message.contains("expected a sequence") {
        return format!("expected a YAML list of users (`- username: …`): {message}");
    }
    match error.location() {
        Some(at) => {
            let line = at.line();
            let entry = entry_starts(text).filter(|&start| start <= line).count();
            let user = if entry == 0 {
                String::new()
            } else {
                format!(" (user #{entry})")
            };
            format!("{message}; check the indentation of line {line}{user}")
        }
        None => message,
    }
}

/// The 1-based line of `key:` within the entry that starts at line `from`.
fn key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from - 1)
        .take_while(|(i, line)| *i + 1 == from || !line.starts_with('-'))
        .find(|(_, line)| {
            let line = line.trim_start();
            let line = line.strip_prefix('-').map_or(line, str::trim_start);
            line.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

/// The reader's message with its `.[K]` path made `user #K+1`.
fn located(text: &str, message: &str) -> String {
    let path = message.strip_prefix('.').unwrap_or(message);
    let Some((index, rest)) = path
        .strip_prefix('[')
        .and_then(|p| p.split_once(']'))
        .and_then(|(index, rest)| Some((index.parse::<usize>().ok()?, rest)))
    else {
        return message.to_owned();
    };
    let rest = rest.trim_start_matches('.');
    let rest = rest.split(" at line ").next().unwrap_or(rest);
    let starts: Vec<usize> = entry_starts(text).collect();
    match starts.get(index) {
        Some(line) => format!("line {line}, user #{}: {rest}", index + 1),
        None => format!("user #{}: {rest}", index + 1),
    }
}

/// The 1-based lines where a top-level list item starts (`- ` at the start of a line).
fn entry_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with("- ") || *line == "-")
        .map(|(i, _)| i + 1)
}

/// The line (1-based) of each entry's `username:` key, when the file is written in block style
/// with one `username:` per entry; `None` when that cannot be told from the text.
pub(super) fn entry_lines(text: &str, entries: usize) -> Option<Vec<usize>> {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            let line = line.strip_prefix('-').map_or(line, str::trim_start);
            line.starts_with("username:")
        })
        .map(|(i, _)| i + 1)
        .collect();
    (lines.len() == entries).then_some(lines)
}
