//! Times on the wire: RFC 3339 in UTC with milliseconds (`2026-11-24T19:10:00.123Z`), formatted
//! and parsed by chrono. [`rfc3339_millis`] is the serde `with` module the protocol's time
//! fields use; [`from_unix_ms`] turns the proxy's Unix-millisecond clocks into them.

use chrono::{DateTime, SecondsFormat, Utc};

/// Unix milliseconds as a UTC time; `None` only for values past chrono's range (year 262143).
pub fn from_unix_ms(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

/// `time` as RFC 3339 UTC with exactly three fractional digits and a `Z`.
pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde for `DateTime<Utc>` as [`format`] writes it; reading takes any RFC 3339 offset and
/// converts it to UTC.
pub mod rfc3339_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_milliseconds_format_as_utc_with_milliseconds() {
        let t = |ms| format(&from_unix_ms(ms).unwrap());
        assert_eq!(t(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(1_795_547_400_123), "2026-11-24T19:10:00.123Z");
        assert_eq!(t(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(from_unix_ms(u64::MAX), None);
    }

    #[test]
    fn round_trips_through_serde() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "rfc3339_millis")]
            at: DateTime<Utc>,
        }
        let v = T {
            at: from_unix_ms(1_795_547_400_123).unwrap(),
        };
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, r#"{"at":"2026-11-24T19:10:00.123Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), v);
        let offset: T = serde_json::from_str(r#"{"at":"2026-11-24T20:10:00.123+01:00"}"#).unwrap();
        assert_eq!(offset, v);
    }
}
