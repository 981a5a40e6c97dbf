//! Web Push from the receiving side: a subscription's keys and the decryption of what the push
//! service delivers — RFC 8291 message encryption (`aes128gcm` content coding, RFC 8188), done
//! by `web-push-native`, the crate the proxy encrypts with.
//!
//! A browser makes these keys when it subscribes (`PushManager.subscribe`) and keeps the private
//! half; [`UserAgentKeys`] is that (RFC 8291 calls the receiver the *user agent*). A native or
//! test client that receives Web Push does the same: [`UserAgentKeys::generate`], hand out
//! [`UserAgentKeys::p256dh`] and [`UserAgentKeys::auth`] in the subscription, and
//! [`UserAgentKeys::decrypt`] each push body. [`encrypt`] is the sender's side, for tests that
//! must produce a real Web Push body without a proxy.
//!
//! ```
//! use ssepush::client::webpush::{UserAgentKeys, encrypt};
//!
//! let keys = UserAgentKeys::generate();
//! // What an application server (the proxy) sends to the subscription's endpoint:
//! let body = encrypt(br#"{"ssepush":{"handoff":"h1","pending":1}}"#, &keys.p256dh, &keys.auth)?;
//! assert_eq!(keys.decrypt(&body)?, br#"{"ssepush":{"handoff":"h1","pending":1}}"#);
//! # Ok::<_, ssepush::client::webpush::WebPushError>(())
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};

/// A subscription's keys, all base64url without padding: what a browser keeps (`private`) and
/// what it hands out in its `PushSubscription` (`keys.p256dh`, `keys.auth`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserAgentKeys {
    /// The P-256 private scalar (32 bytes). Never leaves the receiver.
    pub private: String,
    /// The uncompressed P-256 public key (65 bytes): the subscription's `keys.p256dh`.
    pub p256dh: String,
    /// The 16-byte authentication secret: the subscription's `keys.auth`.
    pub auth: String,
}

impl std::fmt::Debug for UserAgentKeys {
    // The private key and the auth secret decrypt every push: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserAgentKeys(<redacted>)")
    }
}

/// Why a key or a push body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    /// A key that is not base64url, or not a P-256 key / 16-byte secret.
    #[error("bad {0}")]
    Key(&'static str),
    /// The body is not an `aes128gcm` message for these keys: malformed, tampered with, or
    /// encrypted for another subscription.
    #[error("cannot decrypt the push message: {0}")]
    Decrypt(String),
    /// The sender's side failed (e.g. a message too large for one record).
    #[error("cannot encrypt the push message: {0}")]
    Encrypt(String),
}

impl UserAgentKeys {
    /// Fresh keys, as `PushManager.subscribe` makes them.
    pub fn generate() -> UserAgentKeys {
        let secret = SecretKey::random(&mut rand_core_06::OsRng);
        let mut auth = [0u8; 16];
        rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut auth);
        UserAgentKeys {
            private: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
            p256dh: URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        }
    }

    /// Decrypts a push body (the raw `aes128gcm` bytes, as the push service delivered them)
    /// sent to this subscription. Errors: [`WebPushError::Key`] when these keys are not
    /// well-formed, [`WebPushError::Decrypt`] for any body these keys cannot open.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, WebPushError> {
        let secret = SecretKey::from_slice(&b64(&self.private, "private key")?)
            .map_err(|_| WebPushError::Key("private key"))?;
        let auth = auth_secret(&self.auth)?;
        web_push_native::decrypt(body.to_vec(), &secret, &auth)
            .map_err(|e| WebPushError::Decrypt(e.to_string()))
    }
}

/// Encrypts `plaintext` for a subscription (`p256dh`, `auth`, base64url) as an application
/// server does: one `aes128gcm` record, a fresh sender key and salt each time.
pub fn encrypt(plaintext: &[u8], p256dh: &str, auth: &str) -> Result<Vec<u8>, WebPushError> {
    let public = PublicKey::from_sec1_bytes(&b64(p256dh, "p256dh")?)
        .map_err(|_| WebPushError::Key("p256dh"))?;
    web_push_native::encrypt(plaintext.to_vec(), &public, &auth_secret(auth)?)
        .map_err(|e| WebPushError::Encrypt(e.to_string()))
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, WebPushError> {
    // Browsers hand out unpadded base64url; tolerate padding anyway.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| WebPushError::Key(what))
}

fn auth_secret(s: &str) -> Result<web_push_native::Auth, WebPushError> {
    let bytes: [u8; 16] = b64(s, "auth secret")?
        .try_into()
        .map_err(|_| WebPushError::Key("auth secret"))?;
    Ok(web_push_native::Auth::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8291 Section 5 / Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn rfc_keys() -> UserAgentKeys {
        UserAgentKeys {
            private: UA_PRIVATE.into(),
            p256dh: UA_PUBLIC.into(),
            auth: AUTH.into(),
        }
    }

    #[test]
    fn decrypts_the_rfc_8291_example() {
        let body = URL_SAFE_NO_PAD.decode(BODY).unwrap();
        assert_eq!(rfc_keys().decrypt(&body).unwrap(), PLAINTEXT.as_bytes());
    }

    #[test]
    fn round_trip_and_wrong_keys() {
        let keys = UserAgentKeys::generate();
        let body = encrypt(br#"{"ssepush":{}}"#, &keys.p256dh, &keys.auth).unwrap();
        assert_eq!(keys.decrypt(&body).unwrap(), br#"{"ssepush":{}}"#);
        let other = UserAgentKeys::generate();
        assert!(matches!(
            other.decrypt(&body),
            Err(WebPushError::Decrypt(_))
        ));
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            keys.decrypt(&tampered),
            Err(WebPushError::Decrypt(_))
        ));
        assert!(keys.decrypt(&body[..30]).is_err());
        assert!(keys.decrypt(b"").is_err());
        let broken = UserAgentKeys {
            auth: "short".into(),
            ..keys.clone()
        };
        assert_eq!(broken.decrypt(&body), Err(WebPushError::Key("auth secret")));
        assert!(!format!("{keys:?}").contains(&keys.private));
    }
}
