//! A provider's `Retry-After` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date), read without
//! trusting it: whatever it says (`1e300`, `-5`, `NaN`, a date in the year 9999), the wait is
//! a finite duration no longer than the caller's cap. `Duration::from_secs_f64` panics on
//! values it cannot hold; this never does.
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The wait a `Retry-After` value asks for, at most `cap`; `None` when it is not one.
pub fn parse(value: &str, now: DateTime<Utc>, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let seconds = match value.parse::<f64>() {
        Ok(s) => s,
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
            (at - now).num_milliseconds() as f64 / 1000.0
        }
    };
    if seconds.is_nan() {
        return None;
    }
    let seconds = seconds.clamp(0.0, cap.as_secs_f64());
    Some(Duration::try_from_secs_f64(seconds).map_or(cap, |d| d.min(cap)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn seconds_and_dates_are_waits_no_longer_than_the_cap() {
        assert_eq!(parse("2", now(), CAP), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 1.5 ", now(), CAP), Some(Duration::from_millis(1500)));
        assert_eq!(parse("120", now(), CAP), Some(CAP));
        assert_eq!(
            parse("Thu, 03 Dec 2026 10:00:07 GMT", now(), CAP),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse("Thu, 03 Dec 2026 09:00:00 GMT", now(), CAP), Some(Duration::ZERO));
    }

    #[test]
    fn values_that_would_panic_a_conversion_are_capped_or_ignored() {
        for huge in ["1e300", "inf", "Infinity", "1.8e19", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            assert_eq!(parse(huge, now(), CAP), Some(CAP), "{huge}");
        }
        for small in ["-5", "-inf", "-0"] {
            assert_eq!(parse(small, now(), CAP), Some(Duration::ZERO), "{small}");
        }
        for junk in ["NaN", "soon", "", "1e", "0x10"] {
            assert_eq!(parse(junk, now(), CAP), None, "{junk}");
        }
    }
}
