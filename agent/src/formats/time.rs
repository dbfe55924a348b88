//! Timestamps as log formats write them: RFC 3339 text and epoch numbers,
//! turned into Unix nanoseconds without a date-time crate.
//!
//! Invariant: every function here returns `None` for input it cannot read
//! exactly (out-of-range fields, times before 1970 or past what `u64`
//! nanoseconds hold) and never panics.

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM|±HHMM)` into Unix nanoseconds.
/// `t` and a space are accepted for `T`, `z` for `Z`; digits of the fraction
/// past nanoseconds are ignored.
pub fn parse_rfc3339(s: &[u8]) -> Option<u64> {
    if s.len() < 20 {
        return None;
    }
    let year = digits(s, 0, 4)? as i64;
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    let hour = digits(s, 11, 2)?;
    let minute = digits(s, 14, 2)?;
    let second = digits(s, 17, 2)?;
    if s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000;
        while let Some(&c) = s.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs: i64 = match s.get(i)? {
        b'Z' | b'z' if i + 1 == s.len() => 0,
        &sign @ (b'+' | b'-') => {
            let rest = &s[i + 1..];
            let (h, m) = match rest.len() {
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let off = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_secs;
    let total = i128::from(secs) * NANOS_PER_SEC + i128::from(nanos);
    u64::try_from(total).ok()
}

/// An epoch number of unknown unit: seconds, milliseconds, microseconds or
/// nanoseconds, told apart by magnitude (seconds up to the year 5138).
pub fn epoch_to_nanos(v: f64) -> Option<u64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let unit: u64 = if v < 1e11 {
        1_000_000_000
    } else if v < 1e14 {
        1_000_000
    } else if v < 1e17 {
        1_000
    } else {
        1
    };
    // Whole and fractional parts apart: `1704164645.25 * 1e9` in `f64` is
    // 250 ns off, the fraction alone is exact to the nanosecond.
    let whole = v.trunc();
    if whole >= u64::MAX as f64 {
        return None;
    }
    let frac = ((v - whole) * unit as f64).round() as u64;
    (whole as u64).checked_mul(unit)?.checked_add(frac)
}

/// An integer epoch of unknown unit (exact, unlike the `f64` path).
pub fn epoch_int_to_nanos(v: u64) -> Option<u64> {
    if v < 100_000_000_000 {
        v.checked_mul(1_000_000_000)
    } else if v < 100_000_000_000_000 {
        v.checked_mul(1_000_000)
    } else if v < 100_000_000_000_000_000 {
        v.checked_mul(1_000)
    } else {
        Some(v)
    }
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in s.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339(b"2024-01-02T03:04:05.123456789Z"),
            Some(1_704_164_645_123_456_789)
        );
        assert_eq!(
            parse_rfc3339(b"2024-01-02T03:04:05.5Z"),
            Some(1_704_164_645_500_000_000)
        );
        // More than nine fraction digits: the rest is ignored.
        assert_eq!(
            parse_rfc3339(b"2024-01-02T03:04:05.1234567891Z"),
            Some(1_704_164_645_123_456_789)
        );
        assert_eq!(
            parse_rfc3339(b"2024-01-02T05:04:05+02:00"),
            Some(1_704_164_645_000_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2024-01-01T22:04:05-0500"),
            Some(1_704_164_645_000_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2024-02-29 12:00:00z"),
            Some(1_709_208_000_000_000_000)
        );
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        for bad in [
            &b""[..],
            b"2024-01-02T03:04:05",
            b"2024-01-02T03:04:05.Z",
            b"2024-13-02T03:04:05Z",
            b"2023-02-29T03:04:05Z",
            b"2024-01-02T24:04:05Z",
            b"2024-01-02T03:04:05Zjunk",
            b"2024-01-02X03:04:05Z",
            b"1969-12-31T23:59:59Z",
            b"9999-12-31T23:59:59Z",
            b"2024-01-02T03:04:05+2:00",
            "2024-01-02T03:04:0\u{e9}Z".as_bytes(),
        ] {
            assert_eq!(
                parse_rfc3339(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn epoch_units_are_told_apart_by_magnitude() {
        let want = 1_704_164_645_000_000_000;
        assert_eq!(epoch_int_to_nanos(1_704_164_645), Some(want));
        assert_eq!(epoch_int_to_nanos(1_704_164_645_000), Some(want));
        assert_eq!(epoch_int_to_nanos(1_704_164_645_000_000), Some(want));
        assert_eq!(epoch_int_to_nanos(want), Some(want));
        assert_eq!(epoch_to_nanos(1_704_164_645.25), Some(want + 250_000_000));
        assert_eq!(epoch_to_nanos(-1.0), None);
        assert_eq!(epoch_to_nanos(f64::NAN), None);
        assert_eq!(epoch_to_nanos(1e300), None);
    }
}
