//! Durations and sizes as people write them in `notes.toml` and on the command line: the unit
//! is always explicit, so "10" is refused rather than guessed.

use std::time::Duration;

/// "250ms", "10s", "2m", "1h". A bare number is refused: the unit must be explicit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration; write e.g. \"250ms\", \"10s\" or \"2m\"")
    })?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(|| {
        format!("{text:?} is not a duration; write e.g. \"250ms\", \"10s\" or \"2m\"")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MB"), Ok(512_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("512").is_err());
        assert!(parse_size("lots").is_err());
    }
}
