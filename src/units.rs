//! Durations and sizes as people write them in `notes.toml` and on the command line. The unit
//! is always explicit, so "10" is refused rather than guessed.
//!
//! Durations are humantime's syntax ("250ms", "10s", "2m", "1h30m", "1h 30m"); the message
//! for a mistake keeps humantime's reason and adds an example. The serde functions here report
//! a mistake from inside the deserializer, so the TOML parser attaches the value's line and
//! column to it.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// "250ms", "10s", "2m", "1h30m". A bare number is refused: the unit must be explicit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"250ms\", \"10s\" or \"1h30m\"")
    })
}

/// "512MB", "1GB", "300MiB", "2GiB": a memory size in bytes. The unit must be explicit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a memory size; write e.g. \"512MB\" or \"1GiB\"");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// serde `deserialize_with` for an optional duration field (`#[serde(default)]` beside it).
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map(Some).map_err(de::Error::custom)
}

/// Like `duration`, refusing zero: a timeout of nothing would give up at once.
pub fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match duration(d)? {
        Some(z) if z.is_zero() => Err(de::Error::custom("must be more than 0")),
        other => Ok(other),
    }
}

/// A duration value of its own, for fields kept with their position (`toml::Spanned`), which
/// a cross-field check points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Self).map_err(de::Error::custom)
    }
}

/// serde `deserialize_with` for an optional count that must be at least 1.
pub fn at_least_one<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialEq + From<u8>,
{
    let n = T::deserialize(d)?;
    if n == T::from(0) {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10 s"), Ok(Duration::from_secs(10)));
        for bad in ["fast", "10", "", "-1s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("time unit needed")
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MB"), Ok(512_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("512").is_err());
        assert!(parse_size("lots").is_err());
    }
}
