//! Timestamps: notes store Unix milliseconds (UTC); people see `2026-11-28 01:13 UTC`, JSON
//! carries RFC 3339 (`2026-11-28T01:13:29.123Z`) and log lines microseconds. Small enough not
//! to need a date crate. Digits are placed by hand: padded `format!` cost more than the
//! database read on a note page, which shows two of these and logs one.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// (year, month, day, hour, minute, second) in UTC of a Unix second.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, sod / 3600, sod / 60 % 60, sod % 60)
}

/// Writes `value` as exactly `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `2026-11-28T01:13:29` (with `sep` between date and time) of a Unix second.
fn date_time(secs: i64, sep: u8) -> [u8; 19] {
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut out = *b"0000-00-00T00:00:00";
    out[10] = sep;
    put_digits(&mut out[0..4], y.clamp(0, 9999) as u64);
    put_digits(&mut out[5..7], mo.into());
    put_digits(&mut out[8..10], d.into());
    put_digits(&mut out[11..13], h.into());
    put_digits(&mut out[14..16], mi.into());
    put_digits(&mut out[17..19], s.into());
    out
}

/// `2026-11-28T01:13:29`, a dot, `fraction` as `digits` digits (at most 6), and `Z`.
fn stamp(secs: i64, fraction: u64, digits: usize) -> String {
    let mut out = String::with_capacity(28);
    // All ASCII: the conversions cannot fail.
    out.push_str(std::str::from_utf8(&date_time(secs, b'T')).unwrap_or_default());
    let mut buf = [b'.'; 7];
    put_digits(&mut buf[1..=digits], fraction);
    out.push_str(std::str::from_utf8(&buf[..=digits]).unwrap_or_default());
    out.push('Z');
    out
}

/// `2026-11-28T01:13:29.123Z`
pub fn rfc3339(millis: i64) -> String {
    stamp(millis.div_euclid(1000), millis.rem_euclid(1000) as u64, 3)
}

/// `2026-11-28T01:13:29.123456Z`, the log lines' timestamp, from Unix microseconds.
pub fn rfc3339_micros(micros: i64) -> String {
    stamp(
        micros.div_euclid(1_000_000),
        micros.rem_euclid(1_000_000) as u64,
        6,
    )
}

/// `2026-11-28 01:13 UTC`
pub fn human(millis: i64) -> String {
    let date_time = date_time(millis.div_euclid(1000), b' ');
    let mut out = String::with_capacity(20);
    // All ASCII: the conversion cannot fail.
    out.push_str(std::str::from_utf8(&date_time[..16]).unwrap_or_default());
    out.push_str(" UTC");
    out
}

/// Unix milliseconds of an RFC 3339 time in UTC, as `rfc3339` writes it
/// (`2026-11-28T01:13:29.123Z`): a fraction of any length (cut to milliseconds) or none, `Z` or
/// `+00:00`. Other offsets are refused rather than guessed at: exports carry UTC.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|(at, c)| b.get(*at) != Some(c))
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let first3 = format!("{:0<3}", &fraction[..len.min(3)]);
        millis = first3.parse::<i64>().ok()?;
        rest = &fraction[len..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    // Howard Hinnant's days-from-civil, the inverse of `civil`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000 + millis)
}

pub fn serialize_millis<S: serde::Serializer>(millis: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*millis))
}

/// `serialize_millis` for a time that may not have happened yet: `null` then.
pub fn serialize_opt_millis<S: serde::Serializer>(
    millis: &Option<i64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match millis {
        Some(millis) => s.serialize_str(&rfc3339(*millis)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_828_409_123), "2026-11-28T01:13:29.123Z");
        assert_eq!(rfc3339(1_795_828_409_007), "2026-11-28T01:13:29.007Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(human(1_795_828_409_123), "2026-11-28 01:13 UTC");
        assert_eq!(human(0), "1970-01-01 00:00 UTC");
        assert_eq!(
            rfc3339_micros(1_795_828_409_000_456),
            "2026-11-28T01:13:29.000456Z"
        );
    }

    #[test]
    fn parses_what_it_writes() {
        for millis in [0, 951_782_400_000, 1_795_828_409_123, 1_795_828_409_007, -1] {
            assert_eq!(parse_rfc3339(&rfc3339(millis)), Some(millis), "{millis}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-28T01:13:29Z"),
            Some(1_795_828_409_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-28T01:13:29.1239+00:00"),
            Some(1_795_828_409_123)
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-11-28T01:13:29",
            "2026-11-28T01:13:29+02:00",
            "2026-13-28T01:13:29Z",
            "2026-11-28T01:13:29.Z",
            "2026-11-28T01:13:2xZ",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
