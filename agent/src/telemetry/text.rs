//! The Prometheus text exposition format (0.0.4): a writer for `/metrics`,
//! the mapping of OpenTelemetry metric names and units to Prometheus names,
//! and a small reader for `sidekick status`.
//!
//! Invariants: every family is written once, with its `# HELP` and `# TYPE`
//! lines before its samples; names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, label
//! names `[a-zA-Z_][a-zA-Z0-9_]*`; label values and help texts are escaped.

use sidekick_pipeline::{AttrValue, MetricKind, MetricPoint, MetricValue};
use std::collections::HashMap;
use std::fmt::Write as _;

/// A Prometheus family type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Writes one exposition, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines. The samples that
    /// follow must carry `name`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape_help(help),
            kind.as_str()
        );
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `s` with every character outside `[a-zA-Z0-9_]` replaced by `_`, runs of
/// `_` collapsed, and a leading digit prefixed with `_`.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus name and type of an OpenTelemetry metric, after the
/// OpenTelemetry-to-Prometheus compatibility rules: dots become `_`, the
/// unit becomes a suffix (`By` → `_bytes`, `s` → `_seconds`, `1` → `_ratio`
/// for gauges; annotations such as `{thread}` are dropped), and monotonic
/// sums are counters ending in `_total`.
/// `process.memory.usage` (By, gauge) → `process_memory_usage_bytes`;
/// `process.cpu.time` (s, sum) → `process_cpu_time_seconds_total`.
pub fn prometheus_name(name: &str, unit: &str, kind: MetricKind) -> (String, Kind) {
    let counter = matches!(kind, MetricKind::Sum { monotonic: true });
    let mut base = sanitize(name);
    if counter {
        if let Some(b) = base.strip_suffix("_total") {
            base = b.to_string();
        }
    }
    let suffix = match unit {
        "By" => "bytes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "%" => "percent",
        "1" if !counter => "ratio",
        _ => "",
    };
    if !suffix.is_empty() && !base.ends_with(suffix) {
        base.push('_');
        base.push_str(suffix);
    }
    if counter {
        base.push_str("_total");
        (base, Kind::Counter)
    } else {
        (base, Kind::Gauge)
    }
}

/// Writes metric points (the target's last sample) as Prometheus families:
/// points of one name form one family, attributes become labels.
pub fn write_points(exp: &mut Exposition, points: &[MetricPoint]) {
    let mut order: Vec<(String, Kind, &MetricPoint)> = Vec::new();
    let mut families: HashMap<String, Vec<&MetricPoint>> = HashMap::new();
    for p in points {
        let (name, kind) = prometheus_name(&p.name, &p.unit, p.kind);
        let members = families.entry(name.clone()).or_default();
        if members.is_empty() {
            order.push((name, kind, p));
        }
        members.push(p);
    }
    for (name, kind, first) in order {
        let help = format!(
            "The target's {} ({}) from the last metrics sample.",
            first.name, first.unit
        );
        exp.family(&name, kind, &help);
        for p in &families[&name] {
            let labels: Vec<(String, String)> = p
                .attributes
                .iter()
                .map(|a| (sanitize(&a.key), attr_text(&a.value)))
                .collect();
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let value = match p.value {
                MetricValue::Int(i) => i as f64,
                MetricValue::Double(d) => d,
            };
            exp.sample(&name, &labels, value);
        }
    }
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Double(d) => d.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// One sample read back from an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name.
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the samples of an exposition; comments and lines it cannot read
/// are skipped (this is for `sidekick status`, not a validator).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            rest = &rest[end + 1..];
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}
