//! Timestamps: notes store Unix milliseconds (UTC); people see `2026-11-28 01:13 UTC` and JSON
//! carries RFC 3339 (`2026-11-28T01:13:29.123Z`). Small enough not to need a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(millis: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000) as u32;
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
    (year, month, day, sod / 3600, sod / 60 % 60, sod % 60, ms)
}

/// `2026-11-28T01:13:29.123Z`
pub fn rfc3339(millis: i64) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(millis);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// `2026-11-28 01:13 UTC`
pub fn human(millis: i64) -> String {
    let (y, mo, d, h, mi, _, _) = civil(millis);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

pub fn serialize_millis<S: serde::Serializer>(millis: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_828_409_123), "2026-11-28T01:13:29.123Z");
        assert_eq!(human(1_795_828_409_123), "2026-11-28 01:13 UTC");
    }
}
