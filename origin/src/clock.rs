//! The one clock helper of the product: the wall clock as Unix milliseconds, and Unix
//! milliseconds as RFC 3339 text (through `chrono`, never by hand).
//!
//! Policies never call [`now_ms`]: they take the time as an argument, so they are tested on
//! values. Only the shells that drive them (servers, stores, workers) read the clock.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, by the system clock (0 if it is set before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-24T19:10:00.123Z`.
/// `None` past the year 262143, where `chrono` stops; no Unix-ms clock reading gets there.
pub fn rfc3339(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            rfc3339(1_795_547_400_123).as_deref(),
            Some("2026-11-24T19:10:00.123Z")
        );
        assert_eq!(
            rfc3339(951_782_400_000).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(rfc3339(u64::MAX), None);
    }

    #[test]
    fn the_clock_is_past_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
