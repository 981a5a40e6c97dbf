//! Faults on request: testers tell the gateway to answer the next pushes (for a provider, a
//! device, or all) with an error, a delay, or a silent drop. Plain data and matching here; each
//! provider renders the chosen fault in its own wire format.
//!
//! A fault applies to a push that passed validation — the service *would* have accepted it —
//! so a tester's fault never hides a malformed request, and `count` counts real pushes.

use serde::{Deserialize, Serialize};

use super::records::Provider;

/// How many faults may be armed at once (each is scanned per push).
pub const MAX_FAULTS: usize = 1024;

/// `POST /_gateway/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Only pushes to this provider (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Only pushes to this device token / Web Push subscription id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The HTTP status to answer with (an error, 400–599); absent = the normal success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The provider's reason / error code (APNs `reason`, FCM `errorCode`); a sensible default
    /// for the status otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds for a `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Send `Retry-After` as an HTTP-date (IMF-fixdate, now + `retryAfter` seconds) instead of
    /// delta-seconds: RFC 9110 §10.2.3 allows both, and services use both.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_after_date: bool,
    /// Delay before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// How many pushes it applies to; absent = until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Answer success but do not forward to the device: a lost wake.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
}

/// Longest accepted latency: a fault must not park a connection forever.
pub const MAX_LATENCY_MS: u64 = 120_000;

impl FaultSpec {
    /// Rejects faults that would do nothing or cannot be rendered.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.status
            && !(400..=599).contains(&s)
        {
            return Err(format!("status must be an error (400–599), not {s}"));
        }
        if self.status.is_some() && self.drop {
            return Err(
                "a fault either answers an error (status) or drops (drop), not both".into(),
            );
        }
        if self.status.is_none() && !self.drop && self.latency_ms.is_none() {
            return Err("a fault needs at least one of status, drop or latencyMs".into());
        }
        if self.latency_ms.is_some_and(|l| l > MAX_LATENCY_MS) {
            return Err(format!("latencyMs is at most {MAX_LATENCY_MS}"));
        }
        if self.retry_after_date && self.retry_after.is_none() {
            return Err("retryAfterDate needs retryAfter (the seconds from now)".into());
        }
        if self.count == Some(0) {
            return Err("count must be at least 1 (omit it for until-cleared)".into());
        }
        if self.reason.as_ref().is_some_and(|r| r.len() > 128) {
            return Err("reason is at most 128 bytes".into());
        }
        Ok(())
    }

    /// The `Retry-After` value this fault answers with at `now`, if any: delta-seconds, or the
    /// HTTP-date that many seconds after `now`.
    pub fn retry_after_value(&self, now: std::time::SystemTime) -> Option<String> {
        let secs = self.retry_after?;
        Some(if self.retry_after_date {
            httpdate::fmt_http_date(now + std::time::Duration::from_secs(secs))
        } else {
            secs.to_string()
        })
    }

    fn matches(&self, provider: Provider, token: &str) -> bool {
        self.provider.is_none_or(|p| p == provider)
            && self.token.as_deref().is_none_or(|t| t == token)
    }
}

/// An armed fault, as `GET /_gateway/faults` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmedFault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Pushes left (None = until cleared).
    pub remaining: Option<u32>,
}

/// The armed faults, first armed first matched.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Vec<ArmedFault>,
    next_id: u64,
}

impl Faults {
    pub fn add(&mut self, spec: FaultSpec) -> Result<u64, String> {
        spec.validate()?;
        if self.armed.len() >= MAX_FAULTS {
            return Err(format!(
                "at most {MAX_FAULTS} faults at once; clear some first"
            ));
        }
        self.next_id += 1;
        self.armed.push(ArmedFault {
            id: self.next_id,
            remaining: spec.count,
            spec,
        });
        Ok(self.next_id)
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    pub fn list(&self) -> Vec<ArmedFault> {
        self.armed.clone()
    }

    /// The fault for this push, if any; counts it down and disarms it at zero.
    pub fn take(&mut self, provider: Provider, token: &str) -> Option<FaultSpec> {
        let i = self
            .armed
            .iter()
            .position(|f| f.spec.matches(provider, token))?;
        let fault = &mut self.armed[i];
        let spec = fault.spec.clone();
        if let Some(left) = fault.remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                self.armed.remove(i);
            }
        }
        Some(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn matching_counts_down_and_expires() {
        let mut f = Faults::default();
        f.add(spec(
            r#"{"provider":"apns","token":"aa","status":410,"count":2}"#,
        ))
        .unwrap();
        f.add(spec(r#"{"status":500,"count":1}"#)).unwrap();
        assert_eq!(f.take(Provider::Apns, "aa").unwrap().status, Some(410));
        // Other devices and providers skip the first fault and hit the catch-all one.
        assert_eq!(f.take(Provider::Fcm, "aa").unwrap().status, Some(500));
        assert_eq!(f.take(Provider::Fcm, "aa"), None);
        assert_eq!(f.take(Provider::Apns, "bb"), None);
        assert_eq!(f.take(Provider::Apns, "aa").unwrap().status, Some(410));
        assert_eq!(f.take(Provider::Apns, "aa"), None);
    }

    #[test]
    fn until_cleared() {
        let mut f = Faults::default();
        f.add(spec(r#"{"provider":"webpush","drop":true}"#))
            .unwrap();
        for _ in 0..5 {
            assert!(f.take(Provider::Webpush, "x").unwrap().drop);
        }
        assert_eq!(f.list().len(), 1);
        f.clear();
        assert_eq!(f.take(Provider::Webpush, "x"), None);
    }

    #[test]
    fn retry_after_renders_as_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_445_412_480);
        let f = spec(r#"{"status":429,"retryAfter":30}"#);
        assert_eq!(f.retry_after_value(now).as_deref(), Some("30"));
        let f = spec(r#"{"status":429,"retryAfter":30,"retryAfterDate":true}"#);
        assert_eq!(
            f.retry_after_value(now).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:30 GMT")
        );
        assert_eq!(spec(r#"{"status":500}"#).retry_after_value(now), None);
    }

    #[test]
    fn validation() {
        let mut f = Faults::default();
        for bad in [
            r#"{"status":200}"#,
            r#"{"token":"x"}"#,
            r#"{"status":500,"drop":true}"#,
            r#"{"status":500,"count":0}"#,
            r#"{"latencyMs":999999999}"#,
            r#"{"status":429,"retryAfterDate":true}"#,
        ] {
            assert!(f.add(spec(bad)).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<FaultSpec>(r#"{"provider":"mpns","status":500}"#).is_err());
        assert!(serde_json::from_str::<FaultSpec>(r#"{"stauts":500}"#).is_err());
        assert!(f.add(spec(r#"{"latencyMs":50}"#)).is_ok());
        assert!(
            f.add(spec(
                r#"{"status":429,"retryAfter":3,"reason":"TooManyRequests"}"#
            ))
            .is_ok()
        );
    }
}
