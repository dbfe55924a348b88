//! The one-line configuration error, and its construction from what
//! `serde-saphyr` and `serde_path_to_error` report.
//!
//! Invariant: the `Display` of a [`ConfigError`] is a single line that names
//! the file, the position when known, and the key; it never contains a value
//! that came from `${...}` expansion (see [`ConfigError::scrub`]).

use super::expand::Substitution;
use super::units::KEY_MARK;
use serde_saphyr::Error as YamlError;
use std::fmt;

/// A configuration error: `FILE:LINE:COL: message` or `FILE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    origin: Option<String>,
    location: Option<(usize, usize)>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    /// An error about `key` (a path such as `outputs[0].endpoint`), with a
    /// message that already names it.
    pub(crate) fn at_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: None,
            location: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// An error about the whole file.
    pub(crate) fn whole(message: impl Into<String>) -> Self {
        ConfigError {
            origin: None,
            location: None,
            key: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_location(mut self, line: usize, column: usize) -> Self {
        self.location = Some((line, column));
        self
    }

    /// Names the file (or other origin, such as `command line`) the
    /// configuration came from; `Config::load` and `Config::from_yaml` do it.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        self.location.map(|(line, _)| line)
    }

    /// 1-based column (in characters), when known.
    pub fn column(&self) -> Option<usize> {
        self.location.map(|(_, column)| column)
    }

    /// The key path the error is about (`logs[0].multiline.timeout`), when
    /// there is one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Replaces every expanded value that appears in the message by the
    /// `${...}` it came from, so that secrets never reach a terminal or log.
    /// Longer values go first, so that a value containing another is
    /// replaced whole.
    pub(crate) fn scrub(mut self, substitutions: &[Substitution]) -> Self {
        let mut secrets: Vec<&Substitution> = substitutions
            .iter()
            .filter(|s| !s.value.is_empty())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.value.len()));
        for s in secrets {
            if self.message.contains(&s.value) {
                self.message = self.message.replace(&s.value, &s.source);
            }
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.location) {
            (Some(origin), Some((line, column))) => write!(f, "{origin}:{line}:{column}: ")?,
            (Some(origin), None) => write!(f, "{origin}: ")?,
            (None, Some((line, column))) => write!(f, "{line}:{column}: ")?,
            (None, None) => {}
        }
        // One line, whatever a dependency put in its message.
        for c in self.message.chars() {
            match c {
                '\n' | '\r' | '\t' => f.write_str(" ")?,
                c if c.is_control() => write!(f, "{}", c.escape_unicode())?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The error inside alias and snippet wrappers, whose variant says what
/// went wrong.
fn original(mut error: &YamlError) -> &YamlError {
    loop {
        match error {
            YamlError::WithSnippet { error: inner, .. }
            | YamlError::AliasError { error: inner, .. } => error = inner,
            other => return other,
        }
    }
}

/// Where a key sits, as a message says it: ``in `logs[0]` `` or `at the
/// top level`.
fn describe(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `{path}`")
    }
}

/// What a Rust scalar type means to someone writing YAML.
fn expected_for(ty: &str) -> &str {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "bool" | "boolean" => "true or false",
        "char" => "a single character",
        other => other,
    }
}

/// Turns a deserialization error into a [`ConfigError`] naming `path` (as
/// `serde_path_to_error` printed it: `.` for the root, `?` when unknown).
/// Values in the message are scrubbed of secrets by the caller.
pub(crate) fn from_yaml_error(error: &YamlError, path: Option<&str>) -> ConfigError {
    let path = match path {
        Some(".") => Some(""),
        Some("?") | None => None,
        Some(p) => Some(p),
    };
    let formatter = serde_saphyr::UserMessageFormatter;
    let base = serde_saphyr::MessageFormatter::format_message(&formatter, error).into_owned();
    let message = match (original(error), path) {
        (
            YamlError::SerdeUnknownField {
                field, expected, ..
            },
            Some(path),
        ) => {
            let parent = path
                .strip_suffix(field.as_str())
                .map(|p| p.strip_suffix('.').unwrap_or(p))
                .unwrap_or(path);
            let hint = closest(field, expected)
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            format!(
                "unknown key `{field}` {}{hint}, expected one of: {}",
                describe(parent),
                expected.join(", ")
            )
        }
        (YamlError::SerdeMissingField { field, .. }, Some(path)) => {
            format!("missing required key `{field}` {}", describe(path))
        }
        (
            YamlError::SerdeUnknownVariant {
                variant, expected, ..
            },
            Some(path),
        ) => format!(
            "invalid value {variant:?} for `{path}`: expected one of {}",
            expected.join(", ")
        ),
        (YamlError::InvalidScalar { ty, .. }, Some(path)) => {
            format!("invalid value for `{path}`: expected {}", expected_for(ty))
        }
        (YamlError::Unexpected { expected, .. }, Some("")) if *expected == "mapping start" => {
            "the configuration must be a mapping of keys to values (`key: value` lines)".to_owned()
        }
        (YamlError::Unexpected { expected, .. }, Some(path)) => {
            let expected = match *expected {
                "mapping start" => "a mapping (`key: value` entries)",
                "sequence start" => "a list",
                "string scalar" => "a single value, not a list or a mapping",
                "boolean" | "bool" => "true or false",
                other => other,
            };
            format!("invalid value for `{path}`: expected {expected}")
        }
        (
            YamlError::SerdeInvalidType {
                unexpected,
                expected,
                ..
            },
            Some(path),
        ) => {
            format!("invalid type for `{path}`: expected {expected}, found {unexpected}")
        }
        (YamlError::Message { msg, .. }, Some(path)) if msg.contains(KEY_MARK) => {
            let key = if path.is_empty() {
                String::new()
            } else {
                format!(" for `{path}`")
            };
            msg.replacen(KEY_MARK, &key, 1)
        }
        (_, Some(path)) if !path.is_empty() => format!("`{path}`: {base}"),
        _ => base.replace(KEY_MARK, ""),
    };
    let mut out = match path {
        Some(path) if !path.is_empty() => ConfigError::at_key(path, message),
        _ => ConfigError::whole(message),
    };
    if let Some(location) = error.location() {
        let (line, column) = (location.line(), location.column());
        if line > 0 {
            out = out.with_location(
                usize::try_from(line).unwrap_or(usize::MAX),
                usize::try_from(column.max(1)).unwrap_or(usize::MAX),
            );
        }
    }
    out
}

/// The expected name closest to a misspelt `key`, when it is close enough
/// to be a typo (edit distance of at most 2, or a prefix).
fn closest<'a>(key: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|name| (edit_distance(key, name), *name))
        .filter(|(distance, name)| *distance <= 2 || name.starts_with(key) || key.starts_with(name))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_origin_and_position() {
        let e = ConfigError::at_key("a", "bad\nthing")
            .with_location(3, 7)
            .with_origin("c.yaml");
        assert_eq!(e.to_string(), "c.yaml:3:7: bad thing");
        let e = ConfigError::whole("cannot read: gone").with_origin("c.yaml");
        assert_eq!(e.to_string(), "c.yaml: cannot read: gone");
        assert_eq!(ConfigError::whole("x").to_string(), "x");
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("batchh", &["batch", "logs"]), Some("batch"));
        assert_eq!(closest("zzzzzz", &["batch", "logs"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
