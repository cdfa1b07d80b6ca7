//! YAML values written as one line of text: plain when that reads back as the same text in
//! every YAML reader the users file meets (the gateway's, and Argilla's `PyYAML`, YAML 1.1),
//! else quoted.

use serde_yaml::Value;

/// A value as YAML text on one line: booleans, strings (plain when that reads back as the same
/// text in YAML 1.1 and 1.2 alike, else quoted) and flow lists of strings.
pub(super) fn render(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::String(s) => quote(s),
        Value::Sequence(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    }
}

/// `s` as a YAML scalar that any YAML reader (Argilla's `PyYAML`, YAML 1.1, included) reads as this text.
#[must_use]
pub fn quote(s: &str) -> String {
    let plain_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._@/$+- ".contains(c))
        && s.trim() == s;
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
    let special = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "yes" | "n" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    if plain_chars
        && first_ok
        && !special
        && serde_yaml::from_str::<Value>(s).ok() == Some(Value::String(s.to_owned()))
    {
        return s.to_owned();
    }
    if s.chars().all(|c| !c.is_control()) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    // JSON strings are YAML double-quoted scalars.
    serde_json::to_string(s).unwrap_or_default()
}
