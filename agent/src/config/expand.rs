//! `${VAR}`, `${VAR:-default}`, `${file:PATH}` and `$$` in the config text,
//! expanded before the YAML parser sees it.
//!
//! Invariants: expansion works line by line and never adds or removes a line
//! (a value that holds a line break is refused), so the parser's line numbers
//! are the file's; the column shift of each substitution is recorded so that
//! error columns can be mapped back to the file. Expanded values may be
//! secrets: they are returned in [`Expanded::substitutions`] so that error
//! messages can be scrubbed, and no error of this module contains one.
//! Comments (`# ...`) are left alone, so that documentation such as
//! `# token: ${API_TOKEN}` needs no variable. Inside a quoted YAML scalar the
//! value is escaped for that quoting style, so a `"` in a token cannot end
//! the string early.

use std::path::Path;

/// The config text after expansion.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    /// The text handed to the YAML parser; same line count as the input.
    pub text: String,
    /// Every substitution made, in order.
    pub substitutions: Vec<Substitution>,
}

/// One `${...}` (or `$$`) replaced by its value.
#[derive(Debug, Clone)]
pub(crate) struct Substitution {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters) of the `$` in the original line.
    pub original_column: usize,
    /// Length in characters of the original `${...}`.
    pub original_len: usize,
    /// 1-based column of the value in the expanded line.
    pub expanded_column: usize,
    /// Length in characters of the value as written into the expanded line.
    pub expanded_len: usize,
    /// The value as the parser will read it (before quoting escapes): what
    /// must never appear in a message.
    pub value: String,
    /// The original `${...}` text, shown instead of the value.
    pub source: String,
}

/// An expansion failure, without any expanded value in its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The quoting context the scanner is in at a `$`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Expands `text` with values from the process environment and the file
/// system.
pub(crate) fn expand(text: &str) -> Result<Expanded, ExpandError> {
    expand_with(text, &|name| std::env::var(name), &|path| {
        std::fs::read_to_string(path)
    })
}

type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;
type FileRead<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// [`expand`] with injectable sources, for tests.
pub(crate) fn expand_with(
    text: &str,
    env: EnvLookup<'_>,
    read_file: FileRead<'_>,
) -> Result<Expanded, ExpandError> {
    let mut out = Expanded {
        text: String::with_capacity(text.len()),
        substitutions: Vec::new(),
    };
    // A quoted scalar may span lines, so the quoting state carries over.
    let mut quote = Quote::None;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        quote = expand_line(index + 1, line, quote, env, read_file, &mut out)?;
    }
    Ok(out)
}

fn expand_line(
    line_no: usize,
    line: &str,
    mut quote: Quote,
    env: EnvLookup<'_>,
    read_file: FileRead<'_>,
    out: &mut Expanded,
) -> Result<Quote, ExpandError> {
    if !line.contains('$') && !line.contains('"') && !line.contains('\'') {
        out.text.push_str(line);
        return Ok(quote);
    }
    let chars: Vec<char> = line.chars().collect();
    // Column (in chars) in the expanded line, to record substitutions.
    let mut expanded_col = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Quote::None, '#') if i == 0 || chars[i - 1].is_whitespace() => {
                // A comment: the rest of the line is copied untouched.
                out.text.extend(&chars[i..]);
                return Ok(quote);
            }
            (Quote::None, '"' | '\'') if opens_scalar(&chars[..i]) => {
                quote = if c == '"' {
                    Quote::Double
                } else {
                    Quote::Single
                };
            }
            (Quote::Double, '\\') if i + 1 < chars.len() => {
                out.text.push(c);
                out.text.push(chars[i + 1]);
                expanded_col += 2;
                i += 2;
                continue;
            }
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::Single, '\'') => {
                if chars.get(i + 1) == Some(&'\'') {
                    out.text.push_str("''");
                    expanded_col += 2;
                    i += 2;
                    continue;
                }
                quote = Quote::None;
            }
            (_, '$') if chars.get(i + 1) == Some(&'$') => {
                out.text.push('$');
                out.substitutions.push(Substitution {
                    line: line_no,
                    original_column: i + 1,
                    original_len: 2,
                    expanded_column: expanded_col + 1,
                    expanded_len: 1,
                    value: String::new(),
                    source: "$$".to_owned(),
                });
                expanded_col += 1;
                i += 2;
                continue;
            }
            (_, '$') if chars.get(i + 1) == Some(&'{') => {
                let column = i + 1;
                let close = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| p + i + 2)
                    .ok_or_else(|| ExpandError {
                        line: line_no,
                        column,
                        message: "unterminated `${`: expected `}` on the same line (write `$$` for a literal `$`)".to_owned(),
                    })?;
                let source: String = chars[i..=close].iter().collect();
                let inner: String = chars[i + 2..close].iter().collect();
                let value =
                    resolve(&inner, &source, env, read_file).map_err(|message| ExpandError {
                        line: line_no,
                        column,
                        message: match key_before(&chars[..i]) {
                            Some(key) => format!("`{key}`: {message}"),
                            None => message,
                        },
                    })?;
                if value.contains(['\n', '\r']) {
                    return Err(ExpandError {
                        line: line_no,
                        column,
                        message: format!(
                            "`{source}` expands to more than one line; only single-line values can be substituted"
                        ),
                    });
                }
                let written = match quote {
                    Quote::None => value.clone(),
                    Quote::Double => value.replace('\\', "\\\\").replace('"', "\\\""),
                    Quote::Single => value.replace('\'', "''"),
                };
                let written_len = written.chars().count();
                out.text.push_str(&written);
                out.substitutions.push(Substitution {
                    line: line_no,
                    original_column: column,
                    original_len: close + 1 - i,
                    expanded_column: expanded_col + 1,
                    expanded_len: written_len,
                    value,
                    source,
                });
                expanded_col += written_len;
                i = close + 1;
                continue;
            }
            _ => {}
        }
        out.text.push(c);
        expanded_col += 1;
        i += 1;
    }
    Ok(quote)
}

/// The YAML key whose value holds a `${...}` that starts after `before` on
/// its line (`authorization` in `headers: { authorization: "Bearer ${`), to
/// name it in an error; `None` for a list item or anything unclear.
fn key_before(before: &[char]) -> Option<String> {
    let text: String = before.iter().collect();
    // The last `key:` separator (a colon followed by a blank) before the value.
    let colon = text.match_indices(':').rev().find_map(|(at, _)| {
        let next = text[at + 1..].chars().next();
        next.is_some_and(char::is_whitespace).then_some(at)
    })?;
    let mut key = text[..colon].rsplit(['{', ',', '[']).next()?.trim();
    while let Some(rest) = key.strip_prefix("- ") {
        key = rest.trim_start();
    }
    let key = key.trim_matches(['"', '\''].as_ref());
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    plain.then(|| key.to_owned())
}

/// Whether a quote character after `before` starts a quoted scalar (rather
/// than being an apostrophe inside a plain one, as in `msg: it's`).
fn opens_scalar(before: &[char]) -> bool {
    match before.iter().rev().find(|c| !c.is_whitespace()) {
        None => true,
        Some(c) => matches!(c, ':' | '-' | '[' | '{' | ',' | '?'),
    }
}

/// The value of one `${inner}`; errors name the variable or path only.
fn resolve(
    inner: &str,
    source: &str,
    env: EnvLookup<'_>,
    read_file: FileRead<'_>,
) -> Result<String, String> {
    if let Some(path) = inner.strip_prefix("file:") {
        if path.is_empty() {
            return Err(format!("`{source}` names no file"));
        }
        // The error names the file and why, never any of its content.
        let mut contents = read_file(Path::new(path))
            .map_err(|e| format!("cannot read secret file `{path}` (for `{source}`): {e}"))?;
        if contents.ends_with('\n') {
            contents.pop();
            if contents.ends_with('\r') {
                contents.pop();
            }
        }
        return Ok(contents);
    }
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "invalid variable reference `{source}`: expected `${{NAME}}`, `${{NAME:-default}}` or `${{file:PATH}}` (write `$$` for a literal `$`)"
        ));
    }
    match (env(name), default) {
        (Ok(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Ok(value), _) => Ok(value),
        (Err(std::env::VarError::NotPresent), Some(default)) => Ok(default.to_owned()),
        (Err(std::env::VarError::NotPresent), None) => Err(format!(
            "environment variable `{name}` is not set (referenced as `{source}`; `${{{name}:-default}}` gives a default)"
        )),
        (Err(std::env::VarError::NotUnicode(_)), _) => Err(format!(
            "environment variable `{name}` is not valid UTF-8 (referenced as `{source}`)"
        )),
    }
}

/// Maps a 1-based column of the expanded text back to the original line.
pub(crate) fn original_column(substitutions: &[Substitution], line: usize, column: usize) -> usize {
    let mut shift: isize = 0;
    for s in substitutions.iter().filter(|s| s.line == line) {
        if column < s.expanded_column {
            break;
        }
        if column < s.expanded_column + s.expanded_len.max(1) {
            // Inside a substituted value: point at its `${`.
            return s.original_column;
        }
        shift += s.original_len as isize - s.expanded_len as isize;
    }
    column.saturating_add_signed(shift).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "HOST" => Ok("example.com".to_owned()),
            "EMPTY" => Ok(String::new()),
            "QUOTE" => Ok(r#"a"b\c'd"#.to_owned()),
            "TWO_LINES" => Ok("a\nb".to_owned()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn files(path: &Path) -> std::io::Result<String> {
        match path.to_str() {
            Some("/run/token") => Ok("s3cret\n".to_owned()),
            Some("/run/pem") => Ok("line1\nline2\n".to_owned()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    fn run(text: &str) -> Result<Expanded, ExpandError> {
        expand_with(text, &env, &files)
    }

    #[test]
    fn variables_defaults_files_and_dollars() {
        let out = run("a: ${HOST}\nb: ${NOPE:-dflt}\nc: ${EMPTY:-dflt}\nd: x${EMPTY}y\ne: ${file:/run/token}\nf: a$$b $x\n").unwrap();
        assert_eq!(
            out.text,
            "a: example.com\nb: dflt\nc: dflt\nd: xy\ne: s3cret\nf: a$b $x\n"
        );
    }

    #[test]
    fn comments_are_not_expanded() {
        let text = "# token: ${UNDEFINED}\na: 1 # ${UNDEFINED}\nb: \"x # ${HOST}\"\n";
        let out = run(text).unwrap();
        assert_eq!(
            out.text,
            "# token: ${UNDEFINED}\na: 1 # ${UNDEFINED}\nb: \"x # example.com\"\n"
        );
    }

    #[test]
    fn values_are_escaped_for_their_quoting() {
        let out = run("a: \"${QUOTE}\"\nb: '${QUOTE}'\nc: it's ${HOST}\n").unwrap();
        assert_eq!(
            out.text,
            "a: \"a\\\"b\\\\c'd\"\nb: 'a\"b\\c''d'\nc: it's example.com\n"
        );
    }

    #[test]
    fn undefined_variable_names_it_and_the_position() {
        let err = run("a: 1\nb: x ${MISSING_VAR}\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 6));
        assert!(err.message.contains("`MISSING_VAR`"), "{}", err.message);
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = run("a: ${file:/nope/secret}\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 4));
        assert!(err.message.contains("/nope/secret"), "{}", err.message);
    }

    #[test]
    fn errors_name_the_key_holding_the_reference() {
        let err = run("headers: { authorization: \"Bearer ${file:/nope}\" }\n").unwrap_err();
        assert!(
            err.message.starts_with("`authorization`: "),
            "{}",
            err.message
        );
        assert!(err.message.contains("/nope"), "{}", err.message);
        let err = run("  - x-api-key: ${file:/nope}\n").unwrap_err();
        assert!(err.message.starts_with("`x-api-key`: "), "{}", err.message);
        let err = run("  data_dir: ${MISSING_VAR}\n").unwrap_err();
        assert!(err.message.starts_with("`data_dir`: "), "{}", err.message);
        // A list item has no key of its own.
        let err = run("  - ${MISSING_VAR}\n").unwrap_err();
        assert!(err.message.starts_with("environment"), "{}", err.message);
    }

    #[test]
    fn a_trailing_newline_of_a_secret_file_is_dropped() {
        let files = |path: &Path| match path.to_str() {
            Some("/crlf") => Ok("tok\r\n".to_owned()),
            Some("/two") => Ok("tok\n\n".to_owned()),
            _ => Ok("tok".to_owned()),
        };
        let out = expand_with("a: ${file:/crlf}\nb: ${file:/plain}\n", &env, &files).unwrap();
        assert_eq!(out.text, "a: tok\nb: tok\n");
        // Only one newline is dropped: a second one makes it two lines.
        assert!(expand_with("a: ${file:/two}\n", &env, &files).is_err());
    }

    #[test]
    fn multi_line_values_are_refused_without_their_content() {
        for text in ["a: ${file:/run/pem}\n", "a: ${TWO_LINES}\n"] {
            let err = run(text).unwrap_err();
            assert!(!err.message.contains("line1"), "{}", err.message);
            assert!(
                err.message.contains("more than one line"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn malformed_references_are_errors() {
        for text in ["a: ${HOST\n", "a: ${}\n", "a: ${1X}\n", "a: ${file:}\n"] {
            assert!(run(text).is_err(), "{text}");
        }
    }

    #[test]
    fn columns_map_back_to_the_original_line() {
        let out = run("k: ${HOST} ${HOST} x\n").unwrap();
        // "k: example.com example.com x": `x` is at column 28 expanded and
        // column 20 in the original.
        assert_eq!(original_column(&out.substitutions, 1, 28), 20);
        assert_eq!(original_column(&out.substitutions, 1, 8), 4);
        assert_eq!(original_column(&out.substitutions, 1, 2), 2);
        assert_eq!(original_column(&out.substitutions, 2, 9), 9);
    }
}
