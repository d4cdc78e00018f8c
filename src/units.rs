//! Parsing of the sizes, durations and fractions users type.
//!
//! Sizes follow fio and dd: `K`, `M`, `G`, `T`, `P` (and `KiB`…) are powers
//! of 1024, `KB`, `MB`… powers of 1000, a bare number is bytes.

use std::time::Duration;

/// Parse a size such as `4KiB`, `1G`, `512`, `1.5GiB`, `10MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "bad size '{text}': expected a number with an optional unit, e.g. 4KiB or 1G"
        ));
    }
    let multiplier: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "kiB" | "Ki" => 1 << 10,
        "M" | "m" | "MiB" | "Mi" => 1 << 20,
        "G" | "g" | "GiB" | "Gi" => 1 << 30,
        "T" | "t" | "TiB" | "Ti" => 1 << 40,
        "P" | "p" | "PiB" | "Pi" => 1 << 50,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "PB" => 1_000_000_000_000_000,
        other => {
            return Err(format!(
                "bad size '{text}': unknown unit '{other}' (use B, KiB, MiB, GiB, TiB or K, M, G, T)"
            ));
        }
    };
    let value = if number.contains('.') {
        let float: f64 = number
            .parse()
            .map_err(|_| format!("bad size '{text}': '{number}' is not a number"))?;
        let bytes = float * multiplier as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 || bytes.fract() != 0.0 {
            return Err(format!("bad size '{text}': not a whole number of bytes"));
        }
        bytes as u64
    } else {
        let integer: u64 = number
            .parse()
            .map_err(|_| format!("bad size '{text}': '{number}' is too large"))?;
        integer
            .checked_mul(multiplier)
            .ok_or_else(|| format!("bad size '{text}': too large"))?
    };
    Ok(value)
}

/// Parse a size range `4KiB-64KiB`, or a single size (a range of one).
pub fn parse_size_range(text: &str) -> Result<(u64, u64), String> {
    match text.split_once('-') {
        Some((low, high)) => {
            let low = parse_size(low)?;
            let high = parse_size(high)?;
            if low > high {
                return Err(format!(
                    "bad size range '{text}': the low end is above the high end"
                ));
            }
            Ok((low, high))
        }
        None => {
            let size = parse_size(text)?;
            Ok((size, size))
        }
    }
}

/// Parse a duration: `90s`, `10m`, `8h`, `1h30m`, `500ms`, `250us`, `2d`; a
/// bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("bad duration '': expected e.g. 30s, 10m, 8h".to_string());
    }
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return seconds_to_duration(seconds, text);
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("bad duration '{text}': missing unit after the last number"))?;
        if number_end == 0 {
            return Err(format!(
                "bad duration '{text}': expected a number, e.g. 30s, 10m, 8h"
            ));
        }
        let number: f64 = rest[..number_end].parse().map_err(|_| {
            format!(
                "bad duration '{text}': '{}' is not a number",
                &rest[..number_end]
            )
        })?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => {
                return Err(format!(
                    "bad duration '{text}': unknown unit '{other}' (use ns, us, ms, s, m, h, d)"
                ));
            }
        };
        total += seconds_to_duration(number * unit_seconds, text)?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

fn seconds_to_duration(seconds: f64, text: &str) -> Result<Duration, String> {
    if !seconds.is_finite() || !(0.0..=1e12).contains(&seconds) {
        return Err(format!("bad duration '{text}': out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parse a fraction `0.25` or a percentage `25%`, within 0..=1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let value = match trimmed.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => trimmed.parse::<f64>(),
    }
    .map_err(|_| {
        format!("bad fraction '{text}': expected a number from 0 to 1, or a percentage")
    })?;
    if !(0.0..=1.0).contains(&value) || value.is_nan() {
        return Err(format!(
            "bad fraction '{text}': must be between 0 and 1 (or 0% and 100%)"
        ));
    }
    Ok(value)
}

/// Parse a percentage `10%` (the `%` is required, so `10` is not mistaken
/// for a fraction or the other way round) into a fraction: 0.10.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("bad percentage '{text}': write it with a % sign, e.g. 10%"))?;
    match number.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value / 100.0),
        _ => Err(format!(
            "bad percentage '{text}': expected a number of 0 or more before the %, e.g. 10%"
        )),
    }
}

/// `1.5 GiB`, `4 KiB`, `512 B`: a size for people.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `10m`, `2h`, `45s`, `1.5s`: a duration as the flags take it.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if duration.subsec_nanos() != 0 {
        return format!("{seconds:.1}s");
    }
    let whole = duration.as_secs();
    if whole > 0 && whole.is_multiple_of(3600) {
        format!("{}h", whole / 3600)
    } else if whole > 0 && whole.is_multiple_of(60) {
        format!("{}m", whole / 60)
    } else {
        format!("{whole}s")
    }
}

/// `1.2 GB/s` style rate, decimal like every storage data sheet.
pub fn format_rate(bytes_per_second: f64) -> String {
    const UNITS: [&str; 5] = ["B/s", "kB/s", "MB/s", "GB/s", "TB/s"];
    let mut value = bytes_per_second;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `850 µs`, `12.5 ms`, `1.20 s`: a latency given in microseconds.
pub fn format_latency_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `950`, `12.3k`, `1.25M`: a count or rate such as IOPS.
pub fn format_count(value: f64) -> String {
    if value < 1_000.0 {
        format!("{value:.0}")
    } else if value < 1_000_000.0 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{:.2}M", value / 1e6)
    }
}

/// Unix seconds as a UTC calendar date and time: (year, month, day, hour,
/// minute, second), without a time-zone database (Howard Hinnant's
/// `civil_from_days`).
fn civil_utc(unix_s: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (unix_s / 86_400) as i64;
    let seconds = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + (month <= 2) as i64;
    (
        year,
        month,
        day,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
    )
}

/// `2023-11-14 22:13:20 UTC`: Unix seconds as a UTC date and time (the
/// time a stamp carries).
pub fn format_unix_time(unix_s: u64) -> String {
    let (year, month, day, hour, minute, second) = civil_utc(unix_s);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// `2024-05-01T12:34:56Z`: Unix seconds as an ISO 8601 UTC time.
pub fn iso8601_utc(unix_s: u64) -> String {
    let (year, month, day, hour, minute, second) = civil_utc(unix_s);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_are_shown_as_utc_dates() {
        assert_eq!(format_unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_unix_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix_time(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn sizes_use_binary_and_decimal_units_like_fio() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size(" 64 KiB ").unwrap(), 65536);
    }

    #[test]
    fn bad_sizes_are_explained() {
        for bad in [
            "",
            "abc",
            "4XB",
            "-1",
            "1.3B",
            "99999999999999999999",
            "1e3",
            "20000P",
        ] {
            let message = parse_size(bad).unwrap_err();
            assert!(message.starts_with("bad size"), "{bad}: {message}");
        }
    }

    #[test]
    fn ranges_and_single_sizes() {
        assert_eq!(parse_size_range("4KiB-64KiB").unwrap(), (4096, 65536));
        assert_eq!(parse_size_range("8K").unwrap(), (8192, 8192));
        assert!(parse_size_range("64K-4K").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        for bad in ["", "10x", "m", "-5s", "1h30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.25").unwrap(), 0.25);
        assert_eq!(parse_fraction("50%").unwrap(), 0.5);
        for bad in ["1.5", "-0.1", "x", "150%", "NaN"] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_need_their_sign() {
        assert_eq!(parse_percent("10%").unwrap(), 0.1);
        assert_eq!(parse_percent(" 250 %").unwrap(), 2.5);
        assert_eq!(parse_percent("0%").unwrap(), 0.0);
        for bad in ["10", "0.1", "-5%", "x%", "%", "NaN%", "inf%"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_rate(1_500_000_000.0), "1.5 GB/s");
        assert_eq!(format_latency_us(4.31), "4.3 µs");
        assert_eq!(format_latency_us(850.0), "850 µs");
        assert_eq!(format_latency_us(12_500.0), "12.50 ms");
        assert_eq!(format_latency_us(1_200_000.0), "1.20 s");
        assert_eq!(format_count(950.0), "950");
        assert_eq!(format_count(12_345.0), "12.3k");
        assert_eq!(format_count(1_250_000.0), "1.25M");
    }
}
