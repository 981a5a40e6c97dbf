//! `Retry-After` (RFC 9110 §10.2.3) as plain code: the field is either delta-seconds or an
//! HTTP-date, and both mean "not before then". Read from upstream origins (503, 429) and from
//! push services (APNs, FCM and Web Push 429/5xx); the current time is passed in.

use std::time::{Duration, SystemTime};

/// How long a `Retry-After` value asks to wait, as seen at `now`.
///
/// * delta-seconds (`120`): that many seconds (a value too large for `u64` saturates; callers
///   cap what they honour);
/// * an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, or the obsolete RFC 850 and asctime forms
///   RFC 9110 §5.6.7 says to accept): the time until then, zero when it is already past;
/// * anything else: `None` (the field is ignored, as RFC 9110 allows for an invalid value).
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wed, 21 Oct 2015 07:28:00 GMT.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn http_dates_in_every_form_rfc_9110_accepts() {
        for v in [
            "Wed, 21 Oct 2015 07:28:20 GMT",
            "Wednesday, 21-Oct-15 07:28:20 GMT",
            "Wed Oct 21 07:28:20 2015",
        ] {
            assert_eq!(parse(v, now()), Some(Duration::from_secs(20)), "{v}");
        }
        // A date in the past: retry now.
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for v in [
            "",
            "soon",
            "-5",
            "1.5",
            "20 s",
            "Wed, 99 Oct 2015 07:28:20 GMT",
        ] {
            assert_eq!(parse(v, now()), None, "{v:?}");
        }
    }
}
