//! Durations and byte sizes as people write them in a config file: `500ms`,
//! `1.5s`, `4MiB`, `10MB`.
//!
//! Parsing is exact (integer arithmetic on the decimal digits, no floats), so
//! that `format_duration` / `ByteSize`'s `Display` and the parsers round-trip.
//! A duration always needs a unit: a bare `10` is ambiguous (seconds?
//! milliseconds?) and is refused. A bare byte count is unambiguous and
//! accepted.

use serde::de::{self, Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Marks where the deserialization error mapper inserts ``for `key.path` ``
/// into a value error; a control character, so it can never come from a
/// value formatted with `{:?}` (which escapes control characters).
pub(crate) const KEY_MARK: char = '\u{1}';

/// Builds the message of a bad scalar value: `invalid WHAT "VALUE": HINT`,
/// with [`KEY_MARK`] where the key path goes.
pub(crate) fn value_error(what: &str, value: &str, hint: &str) -> String {
    format!("invalid {what} {value:?}{KEY_MARK}: {hint}")
}

/// Why a duration or a size did not parse: a hint for the user, without the
/// input (the caller decides whether the input may be shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError(pub String);

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnitError {}

const DURATION_HINT: &str =
    "expected a number with a unit: ns, us, ms, s, m, h (e.g. 500ms, 1.5s, 2m)";
const SIZE_HINT: &str = "expected a number of bytes, optionally with a unit: B, kB, MB, GB, TB (1000-based), KiB, MiB, GiB, TiB (1024-based)";

const NANOS: u128 = 1;
const MICROS: u128 = 1_000;
const MILLIS: u128 = 1_000_000;
const SECS: u128 = 1_000_000_000;
const MINS: u128 = 60 * SECS;
const HOURS: u128 = 60 * MINS;

/// Duration units, largest first (the order `format_duration` tries them).
const DURATION_UNITS: &[(&str, u128)] = &[
    ("h", HOURS),
    ("m", MINS),
    ("s", SECS),
    ("ms", MILLIS),
    ("us", MICROS),
    ("ns", NANOS),
];

/// Parses `500ms`, `1s`, `1.5s`, `2m`, `1h`, `10us`, `100ns` (also `µs`).
/// Sub-nanosecond fractions are truncated.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(text.trim())?;
    if unit.is_empty() {
        return Err(UnitError(format!(
            "a duration needs a unit: ns, us, ms, s, m, h (e.g. {}s)",
            number
        )));
    }
    let scale = match unit {
        "µs" | "μs" => MICROS,
        _ => DURATION_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| UnitError(DURATION_HINT.to_owned()))?,
    };
    let nanos =
        scaled(number, scale).ok_or_else(|| UnitError("the duration is too large".to_owned()))?;
    let secs = u64::try_from(nanos / SECS)
        .map_err(|_| UnitError("the duration is too large".to_owned()))?;
    // The remainder of a division by 10^9 always fits in u32.
    let subsec = (nanos % SECS) as u32;
    Ok(Duration::new(secs, subsec))
}

/// Formats a duration with the largest unit that represents it exactly, so
/// that `parse_duration(&format_duration(d)) == Ok(d)` (the round-trip the
/// property tests check).
#[cfg(test)]
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (name, scale) in DURATION_UNITS {
        if nanos.is_multiple_of(*scale) {
            return format!("{}{}", nanos / scale, name);
        }
    }
    format!("{nanos}ns")
}

/// A number of bytes. Parses `4MiB`, `512KiB`, `1GiB`, `10MB`, `10kB`,
/// `100B` and plain integers (bytes); `k`/`M`/`G`/`T` are 1000-based,
/// `Ki`/`Mi`/`Gi`/`Ti` are 1024-based. Fractions (`1.5MiB`) are rounded
/// down to a whole byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Size units, largest first within each family (the order `Display` tries).
const BINARY_UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];
const DECIMAL_UNITS: &[(&str, u64)] = &[
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
];

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (number, unit) = split_number(text.trim())?;
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(UnitError(SIZE_HINT.to_owned())),
        };
        scaled(number, u128::from(scale))
            .and_then(|bytes| u64::try_from(bytes).ok())
            .map(ByteSize)
            .ok_or_else(|| UnitError("the size is too large".to_owned()))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that represents the size exactly (binary units
    /// first), so that `Display` and `FromStr` round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (name, scale) in BINARY_UNITS.iter().chain(DECIMAL_UNITS) {
                if self.0.is_multiple_of(*scale) {
                    return write!(f, "{}{}", self.0 / scale, name);
                }
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl ByteSize {
    /// The size rounded for a person (`1.3GiB`, `20MiB`, `512KiB`, `100B`):
    /// for estimates, where `Display`'s exact form would read `1363148KiB`.
    pub fn approx(self) -> String {
        for (name, scale) in BINARY_UNITS {
            if self.0 >= *scale {
                let tenths =
                    (u128::from(self.0) * 10 + u128::from(*scale) / 2) / u128::from(*scale);
                return if tenths % 10 == 0 || tenths >= 1000 {
                    format!("{}{name}", (tenths + 5) / 10)
                } else {
                    format!("{}.{}{name}", tenths / 10, tenths % 10)
                };
            }
        }
        format!("{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e: UnitError| de::Error::custom(value_error("size", &text, &e.0)))
    }
}

/// `deserialize_with` helper for `Duration` fields.
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(|e| de::Error::custom(value_error("duration", &text, &e.0)))
}

/// Splits `1.5MiB` into `("1.5", "MiB")`, allowing blanks between the two.
fn split_number(text: &str) -> Result<(&str, &str), UnitError> {
    if text.starts_with('-') {
        return Err(UnitError("must not be negative".to_owned()));
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let valid_number = number.bytes().any(|b| b.is_ascii_digit())
        && number.bytes().filter(|&b| b == b'.').count() <= 1;
    if !valid_number {
        return Err(UnitError(
            "expected a number followed by a unit (e.g. 10s, 4MiB)".to_owned(),
        ));
    }
    Ok((number, unit.trim_start()))
}

/// `number * scale` exactly, for a decimal `number` such as `1.5`; the part
/// below one unit of `scale`'s base is truncated. `None` on overflow.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int_value: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int_value.checked_mul(scale)?;
    // Digits past the 30th cannot change the result for any of our scales
    // (< 10^13 * 3600 < 10^17), and 10^30 still fits in u128.
    let frac = &frac[..frac.len().min(30)];
    if !frac.is_empty() {
        let frac_value: u128 = frac.parse().ok()?;
        let denominator = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        total = total.checked_add(frac_value.checked_mul(scale)? / denominator)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_duration_form_parses() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("100ns", Duration::from_nanos(100)),
            ("0s", Duration::ZERO),
            ("0.25h", Duration::from_secs(900)),
            (".5s", Duration::from_millis(500)),
            ("3 s", Duration::from_secs(3)),
            (" 7ms ", Duration::from_millis(7)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn a_bare_number_is_refused_with_the_units() {
        let err = parse_duration("10").unwrap_err();
        assert!(err.0.contains("ns, us, ms, s, m, h"), "{err}");
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "",
            "s",
            "10 parsecs",
            "1.2.3s",
            "-1s",
            "1d",
            "abc",
            "1e3s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn every_size_form_parses() {
        let cases = [
            ("4MiB", 4 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("10MB", 10_000_000),
            ("10kB", 10_000),
            ("10KB", 10_000),
            ("3GB", 3_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("100B", 100),
            ("4096", 4096),
            ("1.5KiB", 1536),
            ("0", 0),
            ("64 MiB", 64 << 20),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(expected)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        for text in ["", "MiB", "4 parsecs", "-1", "1.2.3MB", "4M", "99999999TiB"] {
            assert!(text.parse::<ByteSize>().is_err(), "{text}");
        }
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(4).to_string(), "4MiB");
        assert_eq!(ByteSize(10_000_000).to_string(), "10MB");
        assert_eq!(ByteSize(1000).to_string(), "1kB");
        assert_eq!(ByteSize(1001).to_string(), "1001B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn approx_rounds_for_people() {
        assert_eq!(ByteSize(100).approx(), "100B");
        assert_eq!(ByteSize::kib(512).approx(), "512KiB");
        assert_eq!(ByteSize::mib(20).approx(), "20MiB");
        assert_eq!(ByteSize((1 << 30) + (300 << 20)).approx(), "1.3GiB");
        assert_eq!(ByteSize(1_310_720).approx(), "1.3MiB");
        assert_eq!(ByteSize(1023 * 1024 + 1000).approx(), "1024KiB");
    }

    proptest! {
        #[test]
        fn durations_round_trip(secs in 0u64..(1 << 40), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn round_durations_round_trip(n in 0u64..1_000_000, unit in 0usize..DURATION_UNITS.len()) {
            let (name, scale) = DURATION_UNITS[unit];
            let text = format!("{n}{name}");
            let d = parse_duration(&text).unwrap();
            prop_assert_eq!(d.as_nanos(), u128::from(n) * scale);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn sizes_round_trip(bytes in any::<u64>()) {
            let size = ByteSize(bytes);
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        #[test]
        fn unit_parsers_never_panic(text in ".{0,40}") {
            let _ = parse_duration(&text);
            let _ = text.parse::<ByteSize>();
        }
    }
}
