//! The units a route file writes values in: durations (`"250ms"`, `"30s"`,
//! `"5m"`, `"1h"`, `"1m 30s"`) and sizes (`"512B"`, `"64KiB"`, `"1MiB"`,
//! `"1GiB"`). Pure parsing; the messages say how to write the value.

use std::time::Duration;

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"` (and combinations such as `"1m 30s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim().chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {text:?} needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\""
        ));
    }
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "invalid duration {text:?} ({e}): write it like \"250ms\", \"30s\", \"5m\" or \"1h\""
        )
    })
}

/// `"512B"`, `"64KiB"`, `"1MiB"`, `"1GiB"` (also `KB`/`MB`/`GB` = powers of
/// 1000, and `K`/`M`/`G` = `KiB`/`MiB`/`GiB`), a whole number of a unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let hint = || "write it like \"512B\", \"64KiB\", \"1MiB\" or \"1GiB\"";
    let trimmed = text.trim();
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    if number.is_empty() {
        return Err(format!("invalid size {text:?}: {}", hint()));
    }
    if unit.trim().is_empty() {
        return Err(format!("size {text:?} needs a unit: {}", hint()));
    }
    let factor: u64 = match unit.trim() {
        "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "size {text:?} has an unknown unit {other:?}: {}",
                hint()
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("five seconds").is_err());
    }

    #[test]
    fn sizes_need_units() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("0B"), Ok(0));
        assert!(parse_size("1024").unwrap_err().contains("needs a unit"));
        assert!(parse_size("1 parsec").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MiB").is_err());
        assert!(
            parse_size("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
