//! Standard Webhooks signing (<https://www.standardwebhooks.com>), pure and socket-free.
//!
//! Every delivery carries three headers:
//!
//! * `webhook-id`: a unique, stable message id. We use the event id, so every retry of one event
//!   to one webhook carries the same id and receivers can deduplicate (delivery is
//!   at-least-once).
//! * `webhook-timestamp`: Unix seconds of *this attempt*; receivers reject stale ones (replay
//!   protection), which is why a retry is re-signed rather than replayed.
//! * `webhook-signature`: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, where the key
//!   is the base64-decoded part of the secret after `whsec_`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix Standard Webhooks secrets carry.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// A signing secret (`whsec_<base64>`). Its `Debug` never shows the key, so a stray `{:?}` in a
/// log line cannot leak it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret must be 'whsec_' followed by base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl Secret {
    /// A fresh secret from the OS-seeded CSPRNG.
    pub fn generate() -> Secret {
        use rand::RngCore;
        let mut key = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Secret(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
    }

    /// Accepts an existing `whsec_…` secret, checking it decodes to a usable key.
    pub fn parse(s: &str) -> Result<Secret, BadSecret> {
        let key = decode_key(s)?;
        if !(24..=64).contains(&key.len()) {
            return Err(BadSecret);
        }
        Ok(Secret(s.to_owned()))
    }

    /// The secret as the receiver configures it. Only for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Result<Vec<u8>, BadSecret> {
        decode_key(&self.0)
    }
}

fn decode_key(s: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = s.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
    STANDARD.decode(b64).map_err(|_| BadSecret)
}

/// The `webhook-signature` header value for one attempt.
pub fn sign(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let key = secret.key()?;
    // HMAC takes keys of any length; this cannot fail, but an error is better than a panic.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector published with the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_spec_vector() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(sign(&secret, MSG_ID, TIMESTAMP, BODY).unwrap(), EXPECTED);
    }

    #[test]
    fn signs_the_reference_crate_vector() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            sign(&secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body).unwrap(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn every_signed_part_matters() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_ne!(
            sign(&secret, "msg_other", TIMESTAMP, BODY).unwrap(),
            EXPECTED
        );
        assert_ne!(
            sign(&secret, MSG_ID, TIMESTAMP + 1, BODY).unwrap(),
            EXPECTED
        );
        assert_ne!(sign(&secret, MSG_ID, TIMESTAMP, b"{}").unwrap(), EXPECTED);
    }

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(Secret::parse(a.expose()).unwrap(), a);
        assert_eq!(a.key().unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::generate();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains(&s.expose()[SECRET_PREFIX.len()..]),
            "{shown}"
        );
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!",
            "whsec_AAAA",
        ] {
            assert_eq!(Secret::parse(bad), Err(BadSecret), "{bad:?}");
        }
    }
}
