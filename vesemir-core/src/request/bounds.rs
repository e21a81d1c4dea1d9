//! Upper bounds on the numbers of requests and configurations, and THE check that applies them,
//! so that no value a person writes can overflow time arithmetic, exhaust memory or make a
//! library panic (a semaphore of `usize::MAX` permits, `u64::MAX + 1`). Every front end checks
//! its configuration's durations and counts with [`check_duration`] and [`check_count`]; every
//! duration of a request is checked against [`MAX_REQUEST_DURATION`] by its validation.

use std::time::Duration;

use super::errors::FieldError;

/// The longest duration a request may give (timeouts, holds, pauses, drain timeout, canary
/// hold, health timeout and interval): 7 days. A deployment waiting longer on one thing is a
/// mistake, and the bound keeps every deadline the rollout computes far from overflow.
pub const MAX_REQUEST_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest bound a configuration may put on one network call or connection (connect, read
/// and call timeouts, retry back-offs, polling intervals): 1 hour.
pub const MAX_CALL_DURATION: Duration = Duration::from_secs(3600);

/// `value` of `field` if it is at most `limit`, else the problem naming the field, the value
/// and the limit: `strategy.pause_between_batches: 10000000000000000000s is above the limit of
/// 7d`.
pub fn check_duration(field: &str, value: Duration, limit: Duration) -> Result<Duration, FieldError> {
    if value <= limit {
        Ok(value)
    } else {
        Err(FieldError::new(field, format!("{} is above the limit of {}", short(value), short(limit))))
    }
}

/// `value` of `field` if it lies in `min..=max`, else the problem naming the field, the value
/// and the range.
pub fn check_count<T>(field: &str, value: T, min: T, max: T) -> Result<T, FieldError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min {
        Err(FieldError::new(field, format!("{value} is below the minimum of {min}")))
    } else if value > max {
        Err(FieldError::new(field, format!("{value} is above the limit of {max}")))
    } else {
        Ok(value)
    }
}

/// A duration as a person writes it: `7d`, `1h`, `90s`, or humantime's form when it has a
/// fraction of a second.
fn short(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return humantime::format_duration(d).to_string();
    }
    let secs = d.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_above_the_limit_name_the_field_value_and_limit() {
        let huge = Duration::from_secs(10_000_000_000_000_000_000);
        let error =
            check_duration("strategy.pause_between_batches", huge, MAX_REQUEST_DURATION).expect_err("above");
        assert_eq!(
            error.to_string(),
            "strategy.pause_between_batches: 10000000000000000000s is above the limit of 7d"
        );
        assert_eq!(check_duration("x", MAX_REQUEST_DURATION, MAX_REQUEST_DURATION), Ok(MAX_REQUEST_DURATION));
        let error =
            check_duration("x", Duration::from_millis(3_600_500), MAX_CALL_DURATION).expect_err("above");
        assert_eq!(error.message, "1h 500ms is above the limit of 1h");
        assert_eq!(short(Duration::from_secs(90)), "90s");
        assert_eq!(short(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn counts_outside_their_range_name_the_field() {
        assert_eq!(check_count("n", 5u32, 1, 10), Ok(5));
        assert_eq!(check_count("n", 0u32, 1, 10).expect_err("low").message, "0 is below the minimum of 1");
        assert_eq!(
            check_count("n", u64::MAX, 0, 1 << 30).expect_err("high").to_string(),
            "n: 18446744073709551615 is above the limit of 1073741824"
        );
    }
}
