//! Event-time arithmetic: bucket alignment, windows and Prometheus-style durations.

use crate::event::TimestampMs;

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Start of the bucket of width `width_ms` that holds `ts` (floor, also for
/// times before the epoch).
pub fn bucket_start(ts: TimestampMs, width_ms: i64) -> TimestampMs {
    debug_assert!(width_ms > 0);
    ts.div_euclid(width_ms) * width_ms
}

/// A half-open interval of event time, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: TimestampMs,
    pub end_ms: TimestampMs,
}

impl Window {
    /// The window of length `length_ms` that ends at `end_ms` (exclusive).
    pub fn ending_at(end_ms: TimestampMs, length_ms: i64) -> Self {
        Self {
            start_ms: end_ms - length_ms,
            end_ms,
        }
    }

    pub fn length_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }

    /// Whether a bucket that starts at `bucket_start_ms` counts in this window.
    /// A bucket counts when its start lies inside the window: windows thus have
    /// the resolution of the buckets they are summed from.
    pub fn holds_bucket(&self, bucket_start_ms: TimestampMs) -> bool {
        bucket_start_ms >= self.start_ms && bucket_start_ms < self.end_ms
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a number and a unit (ms, s, m, h, d, w), such as 5m or 7d")]
pub struct DurationError {
    pub input: String,
}

/// Parses a Prometheus-style duration such as `5m`, `1h30m`, `7d` or `250ms`
/// into milliseconds. The result must be positive.
pub fn parse_duration_ms(input: &str) -> Result<i64, DurationError> {
    let error = || DurationError {
        input: input.to_owned(),
    };
    let bytes = input.as_bytes();
    if bytes.is_empty() {
        return Err(error());
    }
    let mut total: i64 = 0;
    let mut position = 0;
    while position < bytes.len() {
        let digits_start = position;
        while position < bytes.len() && bytes[position].is_ascii_digit() {
            position += 1;
        }
        if position == digits_start {
            return Err(error());
        }
        let number: i64 = input[digits_start..position].parse().map_err(|_| error())?;
        let unit_start = position;
        while position < bytes.len() && bytes[position].is_ascii_alphabetic() {
            position += 1;
        }
        let unit_ms = match &input[unit_start..position] {
            "ms" => 1,
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            "w" => 7 * DAY_MS,
            "y" => 365 * DAY_MS,
            _ => return Err(error()),
        };
        total = number
            .checked_mul(unit_ms)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(error)?;
    }
    if total <= 0 {
        return Err(error());
    }
    Ok(total)
}

/// Formats milliseconds back into the shortest Prometheus-style duration.
pub fn format_duration_ms(mut ms: i64) -> String {
    if ms <= 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, unit_ms) in [
        ("w", 7 * DAY_MS),
        ("d", DAY_MS),
        ("h", HOUR_MS),
        ("m", MINUTE_MS),
        ("s", SECOND_MS),
        ("ms", 1),
    ] {
        if ms >= unit_ms {
            out.push_str(&(ms / unit_ms).to_string());
            out.push_str(unit);
            ms %= unit_ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        let check = |input: &str, expected: Option<i64>| {
            assert_eq!(parse_duration_ms(input).ok(), expected, "{input}");
        };
        check("5m", Some(5 * MINUTE_MS));
        check("1h30m", Some(90 * MINUTE_MS));
        check("7d", Some(7 * DAY_MS));
        check("250ms", Some(250));
        check("2w", Some(14 * DAY_MS));
        check("", None);
        check("m", None);
        check("5", None);
        check("5x", None);
        check("-5m", None);
        check("0s", None);
        check("99999999999999999999d", None);
    }

    #[test]
    fn durations_round_trip() {
        for input in ["5m", "1h30m", "7d", "250ms", "1d2h", "2w"] {
            assert_eq!(
                parse_duration_ms(&format_duration_ms(parse_duration_ms(input).unwrap())).unwrap(),
                parse_duration_ms(input).unwrap()
            );
        }
        assert_eq!(format_duration_ms(90 * MINUTE_MS), "1h30m");
    }

    #[test]
    fn buckets_floor_also_before_the_epoch() {
        assert_eq!(bucket_start(61_000, MINUTE_MS), 60_000);
        assert_eq!(bucket_start(-1, MINUTE_MS), -MINUTE_MS);
        assert_eq!(bucket_start(HOUR_MS, HOUR_MS), HOUR_MS);
    }
}
