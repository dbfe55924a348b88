//! Finds where a key path such as `outputs[0].endpoint` is written in the
//! YAML text, so that errors found after parsing (by `Config::validate`)
//! still point at a line and column.

use serde_saphyr::granit_parser::{Event, Parser};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Parses `outputs[0].endpoint` into its segments. Keys containing `.` or
/// `[` cannot be addressed, which is fine for the paths `validate` reports.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                segments.push(Segment::Key(rest[..open].to_owned()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(index) = stripped[..close].parse() {
                    segments.push(Segment::Index(index));
                }
                rest = &stripped[close + 1..];
            }
        } else {
            segments.push(Segment::Key(rest.to_owned()));
        }
    }
    segments
}

/// Where a container being walked sits, and what comes next in it.
enum Frame {
    Map { expecting_key: bool },
    Seq { next: usize },
}

/// The 1-based (line, column) of the deepest existing prefix of `path` in
/// `text`: the key itself for a mapping entry, the item for a list element.
/// `None` when the text does not parse or not even the first key exists.
pub(crate) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let target = parse_path(path);
    if target.is_empty() {
        return None;
    }
    let mut frames: Vec<Frame> = Vec::new();
    // Path of the node each frame belongs to, plus the pending map key.
    let mut current: Vec<Segment> = Vec::new();
    let mut best: Option<(usize, (usize, usize))> = None;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let position = (span.start.line(), span.start.col() + 1);
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::Alias(_)
        );
        if is_node {
            // Work out this node's path and whether it is a key.
            let mut is_key = false;
            match frames.last_mut() {
                Some(Frame::Map { expecting_key }) => {
                    if *expecting_key {
                        is_key = true;
                        let key = match &event {
                            Event::Scalar(value, ..) => value.to_string(),
                            _ => String::new(),
                        };
                        current.push(Segment::Key(key));
                        *expecting_key = false;
                    } else {
                        *expecting_key = true;
                    }
                }
                Some(Frame::Seq { next }) => {
                    current.push(Segment::Index(*next));
                    *next += 1;
                }
                None => {}
            }
            let in_seq = matches!(frames.last(), Some(Frame::Seq { .. }));
            // A key or a list item names a path position; record the
            // longest match with the target so far.
            if (is_key || in_seq) && target.starts_with(&current) {
                let depth = current.len();
                if best.is_none_or(|(d, _)| depth > d) {
                    best = Some((depth, position));
                }
                if depth == target.len() {
                    return Some(position);
                }
            }
            match event {
                Event::MappingStart(..) => frames.push(Frame::Map {
                    expecting_key: true,
                }),
                Event::SequenceStart(..) => frames.push(Frame::Seq { next: 0 }),
                _ => {
                    // A scalar value ends its map entry or list item; a
                    // scalar key keeps its segment until the value is done.
                    if !is_key && !frames.is_empty() {
                        current.pop();
                    }
                }
            }
        } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
            frames.pop();
            // The container was a value: its entry (or item) is complete.
            if !frames.is_empty() {
                current.pop();
            }
        } else if matches!(event, Event::DocumentEnd) {
            break;
        }
    }
    best.map(|(_, position)| position)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
data_dir: /tmp
target:
  pid: 1
  command: [a, b]
outputs:
  - type: stdout
  - type: otlp_http
    endpoint: ftp://x
    headers: { a: b }
logs:
  - include: [x]
    multiline:
      start_pattern: a
";

    #[test]
    fn finds_keys_and_items() {
        assert_eq!(locate(TEXT, "data_dir"), Some((1, 1)));
        assert_eq!(locate(TEXT, "target.command"), Some((4, 3)));
        assert_eq!(locate(TEXT, "outputs[1]"), Some((7, 5)));
        assert_eq!(locate(TEXT, "outputs[1].endpoint"), Some((8, 5)));
        assert_eq!(locate(TEXT, "outputs[1].headers.a"), Some((9, 16)));
        assert_eq!(
            locate(TEXT, "logs[0].multiline.start_pattern"),
            Some((13, 7))
        );
    }

    #[test]
    fn a_missing_key_points_at_its_parent() {
        assert_eq!(locate(TEXT, "outputs[0].endpoint"), Some((6, 5)));
        assert_eq!(locate(TEXT, "nothing"), None);
        // Broken YAML: whatever was seen before the error, and no panic.
        let _ = locate("a: [", "a.b");
    }
}
