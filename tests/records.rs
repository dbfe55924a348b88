//! The records `sidekick receive` wrote, and the accounting of which
//! sequence numbers arrived how often.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One log record of the receiver's `logs.ndjson`. File paths and resources
/// repeat on every record and are shared, so 200,000 records stay small.
#[derive(Debug, Clone)]
pub struct Record {
    pub body: String,
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i64,
    /// `attributes["log.file.path"]`.
    pub file_path: Option<Arc<str>>,
    /// `attributes["log.file.name"]`.
    pub file_name: Option<Arc<str>>,
    /// Every attribute, as the receiver wrote them.
    pub attributes: Arc<Map<String, Value>>,
    pub resource: Arc<Map<String, Value>>,
}

impl Record {
    /// A resource attribute as a string, if it is one.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(Value::as_str)
    }
}

/// Parses lines of `logs.ndjson`, sharing repeated strings and maps.
#[derive(Debug, Default)]
pub(crate) struct RecordParser {
    strings: HashMap<String, Arc<str>>,
    last_attributes: Option<Arc<Map<String, Value>>>,
    last_resource: Option<Arc<Map<String, Value>>>,
}

impl RecordParser {
    pub(crate) fn parse(&mut self, line: &[u8]) -> Result<Record, String> {
        let mut v: Value = serde_json::from_slice(line).map_err(|e| {
            format!(
                "logs.ndjson line is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            )
        })?;
        let Some(obj) = v.as_object_mut() else {
            return Err(format!(
                "logs.ndjson line is not an object: {}",
                String::from_utf8_lossy(line)
            ));
        };
        let body = match obj.remove("body") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => {
                return Err(format!(
                    "record without body: {}",
                    Value::Object(obj.clone())
                ))
            }
        };
        let num = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        let time_unix_nano = num(obj, "time_unix_nano");
        let observed_time_unix_nano = num(obj, "observed_time_unix_nano");
        let severity_number = obj
            .get("severity_number")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let attributes = match obj.remove("attributes") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let resource = match obj.remove("resource") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let file_path = self.intern(attributes.get("log.file.path"));
        let file_name = self.intern(attributes.get("log.file.name"));
        let attributes = share(&mut self.last_attributes, attributes);
        let resource = share(&mut self.last_resource, resource);
        Ok(Record {
            body,
            time_unix_nano,
            observed_time_unix_nano,
            severity_number,
            file_path,
            file_name,
            attributes,
            resource,
        })
    }

    fn intern(&mut self, v: Option<&Value>) -> Option<Arc<str>> {
        let s = v?.as_str()?;
        if let Some(a) = self.strings.get(s) {
            return Some(a.clone());
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(s.to_owned(), a.clone());
        Some(a)
    }
}

fn share(
    last: &mut Option<Arc<Map<String, Value>>>,
    m: Map<String, Value>,
) -> Arc<Map<String, Value>> {
    match last {
        Some(prev) if **prev == m => prev.clone(),
        _ => {
            let a = Arc::new(m);
            *last = Some(a.clone());
            a
        }
    }
}

/// How often each sequence number `0..expected` of one file arrived.
#[derive(Debug, Clone)]
pub struct SeqReport {
    pub label: String,
    pub expected: u64,
    counts: Vec<u32>,
    /// Records whose body carries no sequence number or one out of range.
    pub foreign: u64,
    /// Adjacent pairs (in arrival order) where the sequence went down.
    pub out_of_order: u64,
    pub first_out_of_order: Option<(u64, u64)>,
}

impl SeqReport {
    /// Counts the sequence numbers (`seq=NNNNNNNNNN ...` bodies) of `bodies`,
    /// in arrival order.
    pub fn new<'a>(
        label: impl Into<String>,
        expected: u64,
        bodies: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut counts = vec![0u32; usize::try_from(expected).expect("expected fits in usize")];
        let mut foreign = 0;
        let mut out_of_order = 0;
        let mut first_out_of_order = None;
        let mut prev: Option<u64> = None;
        for body in bodies {
            match crate::seq_of(body).filter(|&s| s < expected) {
                Some(s) => {
                    counts[s as usize] += 1;
                    if let Some(p) = prev {
                        if s <= p {
                            out_of_order += 1;
                            first_out_of_order.get_or_insert((p, s));
                        }
                    }
                    prev = Some(s);
                }
                None => foreign += 1,
            }
        }
        Self {
            label: label.into(),
            expected,
            counts,
            foreign,
            out_of_order,
            first_out_of_order,
        }
    }

    /// The records of `records` whose `log.file.path` is `path`.
    pub fn for_file(records: &[crate::Record], path: &std::path::Path, expected: u64) -> Self {
        let path = path.to_str().expect("test paths are UTF-8");
        Self::new(
            path,
            expected,
            records
                .iter()
                .filter(|r| r.file_path.as_deref() == Some(path))
                .map(|r| r.body.as_str()),
        )
    }

    pub fn missing(&self) -> u64 {
        self.counts.iter().filter(|&&c| c == 0).count() as u64
    }

    pub fn first_missing(&self) -> Option<u64> {
        self.counts.iter().position(|&c| c == 0).map(|i| i as u64)
    }

    /// Arrivals beyond the first, summed over all sequence numbers.
    pub fn duplicates(&self) -> u64 {
        self.counts
            .iter()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum()
    }

    pub fn first_duplicate(&self) -> Option<u64> {
        self.counts.iter().position(|&c| c > 1).map(|i| i as u64)
    }

    pub fn assert_none_missing(&self) {
        assert!(
            self.missing() == 0 && self.foreign == 0,
            "lines lost or mangled: {self}"
        );
    }

    pub fn assert_exactly_once(&self) {
        assert!(
            self.missing() == 0 && self.duplicates() == 0 && self.foreign == 0,
            "not exactly once: {self}"
        );
    }

    pub fn assert_in_order(&self) {
        assert_eq!(self.out_of_order, 0, "out of order: {self}");
    }
}

impl fmt::Display for SeqReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected seq 0..{}, missing {} (first {:?}), duplicates {} (first {:?}), \
             foreign {}, out of order {} (first {:?})",
            self.label,
            self.expected,
            self.missing(),
            self.first_missing(),
            self.duplicates(),
            self.first_duplicate(),
            self.foreign,
            self.out_of_order,
            self.first_out_of_order,
        )
    }
}
