//! The three JWTs the gateway checks, as plain functions on values: the APNs provider token
//! (ES256, `kid` + `iss`), the Google service-account assertion (RS256, exchanged at `/token`) and
//! the VAPID token of Web Push (ES256, `aud` = the push endpoint's origin). Also the signing side,
//! for the client helpers and tests, so both directions live in one place.
//!
//! Hand-rolled rather than `jsonwebtoken`: the checks differ per service (APNs answers *why*
//! with its own reasons, VAPID carries its key next to the token) and the RustCrypto primitives
//! already in the tree do the actual cryptography.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::{Signer, Verifier};
use serde_json::Value;

/// Tokens are small; anything bigger is garbage (or an attack) and is refused before decoding.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock slack for "issued in the future" (clocks of real clients drift a little).
pub const CLOCK_SLACK_SECS: i64 = 60;

/// A decoded but not yet verified JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unexpected algorithm")]
    Algorithm,
    #[error("bad signature")]
    Signature,
}

impl Jwt {
    pub fn parse(token: &str) -> Result<Jwt, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
        let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| JwtError::Malformed)?;
        if !header.is_object() || !claims.is_object() {
            return Err(JwtError::Malformed);
        }
        Ok(Jwt {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature: decode(s)?,
        })
    }

    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric date claim (`iat`, `exp`); JSON numbers with a fraction are truncated.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// ES256: the signature is the raw 64-byte `r || s` (RFC 7518 §3.4), not DER.
    pub fn verify_es256(&self, key: &p256::ecdsa::VerifyingKey) -> Result<(), JwtError> {
        if self.alg() != Some("ES256") {
            return Err(JwtError::Algorithm);
        }
        let sig =
            p256::ecdsa::Signature::from_slice(&self.signature).map_err(|_| JwtError::Signature)?;
        key.verify(self.signing_input.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)
    }

    pub fn verify_rs256(&self, key: &rsa::RsaPublicKey) -> Result<(), JwtError> {
        if self.alg() != Some("RS256") {
            return Err(JwtError::Algorithm);
        }
        let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone());
        let sig = rsa::pkcs1v15::Signature::try_from(self.signature.as_slice())
            .map_err(|_| JwtError::Signature)?;
        key.verify(self.signing_input.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Signs `claims` with ES256; `header` gets `alg` added.
pub fn sign_es256(mut header: Value, claims: &Value, key: &p256::ecdsa::SigningKey) -> String {
    header["alg"] = "ES256".into();
    let input = signing_input(&header, claims);
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Signs `claims` with RS256; `header` gets `alg` added.
pub fn sign_rs256(mut header: Value, claims: &Value, key: &rsa::RsaPrivateKey) -> String {
    use rsa::signature::SignatureEncoding;
    header["alg"] = "RS256".into();
    let input = signing_input(&header, claims);
    let key = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Why APNs refused a provider token: Apple's own reason strings (all answered with 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderTokenError {
    Missing,
    Invalid,
    Expired,
}

impl ProviderTokenError {
    pub fn reason(self) -> &'static str {
        match self {
            ProviderTokenError::Missing => "MissingProviderToken",
            ProviderTokenError::Invalid => "InvalidProviderToken",
            ProviderTokenError::Expired => "ExpiredProviderToken",
        }
    }
}

/// How long Apple accepts a provider token after its `iat`.
pub const APNS_TOKEN_MAX_AGE_SECS: i64 = 3600;

/// Checks an APNs `authorization` header value (`bearer <JWT>`): ES256 by the gateway's key,
/// `kid` = its key id, `iss` = its team id, `iat` at most an hour old and not in the future.
pub fn check_apns_provider_token(
    authorization: Option<&str>,
    key_id: &str,
    team_id: &str,
    key: &p256::ecdsa::VerifyingKey,
    now: i64,
) -> Result<(), ProviderTokenError> {
    let Some(value) = authorization else {
        return Err(ProviderTokenError::Missing);
    };
    let token = value
        .strip_prefix("bearer ")
        .or_else(|| value.strip_prefix("Bearer "))
        .ok_or(ProviderTokenError::Invalid)?
        .trim();
    let jwt = Jwt::parse(token).map_err(|_| ProviderTokenError::Invalid)?;
    if jwt.header.get("kid").and_then(Value::as_str) != Some(key_id)
        || jwt.claim_str("iss") != Some(team_id)
    {
        return Err(ProviderTokenError::Invalid);
    }
    if !verified_before(token, key) {
        jwt.verify_es256(key)
            .map_err(|_| ProviderTokenError::Invalid)?;
        remember_verified(token, key);
    }
    let iat = jwt.claim_time("iat").ok_or(ProviderTokenError::Invalid)?;
    if iat > now + CLOCK_SLACK_SECS {
        return Err(ProviderTokenError::Invalid);
    }
    if now - iat > APNS_TOKEN_MAX_AGE_SECS {
        return Err(ProviderTokenError::Expired);
    }
    Ok(())
}

/// Provider tokens whose signature checked out, with the key that checked them (its SEC1
/// bytes), newest last. A provider reuses one token for up to an hour (Apple asks for that),
/// so the ES256 verification — 80 % of the gateway's CPU under `bench wake` (issue 11, perf),
/// ~0.3 ms a push, serialising a burst of wakes on one HTTP/2 connection — runs once per token
/// and key; the claims (`kid`, `iss`, `iat` age) are still checked on every request.
static VERIFIED: std::sync::Mutex<std::collections::VecDeque<(String, Vec<u8>)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// Most tokens remembered (one per provider connection key is the usual load).
const VERIFIED_CAPACITY: usize = 64;

fn key_bytes(key: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
    key.to_encoded_point(true).as_bytes().to_vec()
}

fn verified_before(token: &str, key: &p256::ecdsa::VerifyingKey) -> bool {
    let key = key_bytes(key);
    VERIFIED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|(t, k)| t == token && *k == key)
}

fn remember_verified(token: &str, key: &p256::ecdsa::VerifyingKey) {
    let mut seen = VERIFIED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.len() >= VERIFIED_CAPACITY {
        seen.pop_front();
    }
    seen.push_back((token.to_owned(), key_bytes(key)));
}

/// The OAuth scope a service account needs to send FCM messages.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Checks a Google service-account assertion (RFC 7523 JWT bearer grant) as Google's token
/// endpoint does. The error is the `error_description` Google answers with `invalid_grant`
/// (or `invalid_scope`, flagged by the bool).
pub fn check_service_account_assertion(
    assertion: &str,
    client_email: &str,
    token_uri: &str,
    key: &rsa::RsaPublicKey,
    now: i64,
) -> Result<(), (bool, &'static str)> {
    let jwt = Jwt::parse(assertion).map_err(|_| (false, "Invalid JWT: malformed token."))?;
    jwt.verify_rs256(key)
        .map_err(|_| (false, "Invalid JWT Signature."))?;
    if jwt.claim_str("iss") != Some(client_email) {
        return Err((
            false,
            "Invalid JWT: iss does not match the service account.",
        ));
    }
    if jwt.claim_str("aud") != Some(token_uri) {
        return Err((false, "Invalid JWT: Failed audience check."));
    }
    let (Some(iat), Some(exp)) = (jwt.claim_time("iat"), jwt.claim_time("exp")) else {
        return Err((false, "Invalid JWT: iat and exp are required."));
    };
    if iat > now + CLOCK_SLACK_SECS || exp <= now || exp - iat > 3600 {
        return Err((
            false,
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scope = jwt.claim_str("scope").unwrap_or_default();
    if !scope.split_whitespace().any(|s| s == FCM_SCOPE) {
        return Err((true, "The scope does not include firebase.messaging."));
    }
    Ok(())
}

/// A VAPID check failure: the status the push service answers (401, or 403 when the key is not
/// the one the subscription was made for) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapidError {
    pub status: u16,
    pub message: &'static str,
}

fn vapid_err(message: &'static str) -> VapidError {
    VapidError {
        status: 401,
        message,
    }
}

/// How far ahead a VAPID `exp` may be (RFC 8292 §2).
pub const VAPID_MAX_EXP_SECS: i64 = 24 * 3600;

/// Checks an RFC 8292 `Authorization: vapid t=<JWT>, k=<key>` header for a push to an endpoint
/// of `origin` (`scheme://host:port`). `subscription_key` is the application server key the
/// subscription was created with, if any (RFC 8292 §4.4: another key gets 403).
/// Returns the key (base64url) on success.
pub fn check_vapid(
    authorization: Option<&str>,
    origin: &str,
    subscription_key: Option<&str>,
    now: i64,
) -> Result<String, VapidError> {
    let value = authorization.ok_or(vapid_err("missing Authorization header"))?;
    let (scheme, params) = value
        .split_once(' ')
        .ok_or(vapid_err("Authorization must be `vapid t=…, k=…`"))?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(vapid_err("Authorization scheme must be vapid"));
    }
    let (mut t, mut k) = (None, None);
    for param in params.split(',') {
        match param.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("k", v)) => k = Some(v.trim()),
            _ => {}
        }
    }
    let (Some(t), Some(k)) = (t, k) else {
        return Err(vapid_err("Authorization needs both t= and k="));
    };
    let key_bytes = URL_SAFE_NO_PAD
        .decode(k.trim_end_matches('='))
        .map_err(|_| vapid_err("k is not base64url"))?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key_bytes)
        .map_err(|_| vapid_err("k is not a P-256 public key"))?;
    let jwt = Jwt::parse(t).map_err(|_| vapid_err("t is not a JWT"))?;
    jwt.verify_es256(&key)
        .map_err(|_| vapid_err("the VAPID token's signature does not verify with k"))?;
    if jwt.claim_str("aud") != Some(origin) {
        return Err(vapid_err(
            "the VAPID token's aud is not this push service's origin",
        ));
    }
    let exp = jwt
        .claim_time("exp")
        .ok_or(vapid_err("the VAPID token has no exp"))?;
    if exp <= now {
        return Err(vapid_err("the VAPID token has expired"));
    }
    if exp > now + VAPID_MAX_EXP_SECS + CLOCK_SLACK_SECS {
        return Err(vapid_err(
            "the VAPID token's exp is more than 24 hours ahead",
        ));
    }
    if let Some(sub) = jwt.claim_str("sub")
        && !(sub.starts_with("mailto:") || sub.starts_with("https:"))
    {
        return Err(vapid_err(
            "the VAPID token's sub must be a mailto: or https: URI",
        ));
    }
    let k = URL_SAFE_NO_PAD.encode(&key_bytes);
    if let Some(expected) = subscription_key {
        let expected = URL_SAFE_NO_PAD.decode(expected.trim_end_matches('=')).ok();
        if expected.as_deref() != Some(key_bytes.as_slice()) {
            return Err(VapidError {
                status: 403,
                message: "the VAPID key is not the subscription's application server key",
            });
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng)
    }

    const NOW: i64 = 1_800_000_000;

    fn apns(key: &p256::ecdsa::SigningKey, kid: &str, iss: &str, iat: i64) -> String {
        format!(
            "bearer {}",
            sign_es256(json!({"kid": kid}), &json!({"iss": iss, "iat": iat}), key)
        )
    }

    #[test]
    fn a_remembered_provider_token_is_still_checked_against_the_key_and_its_age() {
        let (key, other) = (ec_key(), ec_key());
        let token = apns(&key, "KEY1234567", "TEAM123456", NOW - 10);
        let with = |vk: &p256::ecdsa::VerifyingKey, now: i64| {
            check_apns_provider_token(Some(&token), "KEY1234567", "TEAM123456", vk, now)
        };
        assert_eq!(with(key.verifying_key(), NOW), Ok(()));
        // Remembered for this key only: another key's gateway still refuses it.
        assert_eq!(
            with(other.verifying_key(), NOW),
            Err(ProviderTokenError::Invalid)
        );
        // And its age is checked on every request.
        assert_eq!(
            with(key.verifying_key(), NOW + 3600),
            Err(ProviderTokenError::Expired)
        );
        // A forged signature under the remembered claims is verified, and refused.
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
        assert_eq!(
            check_apns_provider_token(
                Some(&forged),
                "KEY1234567",
                "TEAM123456",
                key.verifying_key(),
                NOW
            ),
            Err(ProviderTokenError::Invalid)
        );
    }

    #[test]
    fn apns_provider_token() {
        let key = ec_key();
        let vk = *key.verifying_key();
        let check =
            |h: Option<&str>| check_apns_provider_token(h, "KEY1234567", "TEAM123456", &vk, NOW);
        assert_eq!(
            check(Some(&apns(&key, "KEY1234567", "TEAM123456", NOW - 10))),
            Ok(())
        );
        assert_eq!(check(None), Err(ProviderTokenError::Missing));
        assert_eq!(
            check(Some("bearer nonsense")),
            Err(ProviderTokenError::Invalid)
        );
        assert_eq!(
            check(Some(&apns(&key, "OTHERKEY00", "TEAM123456", NOW))),
            Err(ProviderTokenError::Invalid)
        );
        assert_eq!(
            check(Some(&apns(&key, "KEY1234567", "OTHERTEAM0", NOW))),
            Err(ProviderTokenError::Invalid)
        );
        assert_eq!(
            check(Some(&apns(&ec_key(), "KEY1234567", "TEAM123456", NOW))),
            Err(ProviderTokenError::Invalid)
        );
        assert_eq!(
            check(Some(&apns(&key, "KEY1234567", "TEAM123456", NOW - 3601))),
            Err(ProviderTokenError::Expired)
        );
        assert_eq!(
            check(Some(&apns(&key, "KEY1234567", "TEAM123456", NOW + 600))),
            Err(ProviderTokenError::Invalid)
        );
        // An RS256 or `none` token with the right claims is still not an ES256 provider token.
        let none = format!(
            "bearer {}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"KEY1234567"}"#),
            URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"TEAM123456","iat":{NOW}}}"#))
        );
        assert_eq!(check(Some(&none)), Err(ProviderTokenError::Invalid));
    }

    #[test]
    fn service_account_assertion() {
        let key = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 1024).unwrap();
        let public = key.to_public_key();
        let email = "gw@sim.iam.gserviceaccount.com";
        let uri = "http://127.0.0.1:1/token";
        let make = |aud: &str, scope: &str, iat: i64, exp: i64| {
            sign_rs256(
                json!({"typ": "JWT"}),
                &json!({"iss": email, "aud": aud, "scope": scope, "iat": iat, "exp": exp}),
                &key,
            )
        };
        let check = |a: &str| check_service_account_assertion(a, email, uri, &public, NOW);
        assert_eq!(check(&make(uri, FCM_SCOPE, NOW, NOW + 3600)), Ok(()));
        assert!(
            check(&make(
                "https://oauth2.googleapis.com/token",
                FCM_SCOPE,
                NOW,
                NOW + 3600
            ))
            .is_err()
        );
        // A token without the messaging scope is `invalid_scope`, not `invalid_grant`.
        let cloud = "https://www.googleapis.com/auth/cloud-platform";
        assert!(check(&make(uri, cloud, NOW, NOW + 60)).unwrap_err().0);
        assert!(check(&make(uri, FCM_SCOPE, NOW - 7200, NOW - 3600)).is_err());
        assert!(check(&make(uri, FCM_SCOPE, NOW, NOW + 7200)).is_err());
        assert!(check("a.b.c").is_err());
    }

    #[test]
    fn vapid() {
        let key = ec_key();
        let k = URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes());
        let origin = "http://127.0.0.1:8070";
        let header = |aud: &str, exp: i64, sub: &str| {
            let t = sign_es256(
                json!({"typ": "JWT"}),
                &json!({"aud": aud, "exp": exp, "sub": sub}),
                &key,
            );
            format!("vapid t={t}, k={k}")
        };
        let ok = header(origin, NOW + 3600, "mailto:ops@example.com");
        assert_eq!(check_vapid(Some(&ok), origin, None, NOW), Ok(k.clone()));
        assert_eq!(check_vapid(Some(&ok), origin, Some(&k), NOW), Ok(k.clone()));
        let other =
            URL_SAFE_NO_PAD.encode(ec_key().verifying_key().to_encoded_point(false).as_bytes());
        assert_eq!(
            check_vapid(Some(&ok), origin, Some(&other), NOW)
                .unwrap_err()
                .status,
            403
        );
        for bad in [
            header("http://127.0.0.1:9999", NOW + 3600, "mailto:a@b"),
            header(origin, NOW - 1, "mailto:a@b"),
            header(origin, NOW + 25 * 3600, "mailto:a@b"),
            header(origin, NOW + 60, "http://insecure"),
            format!("WebPush {}", "x.y.z"),
            ok.replace(&k, &other),
        ] {
            assert_eq!(
                check_vapid(Some(&bad), origin, None, NOW)
                    .unwrap_err()
                    .status,
                401,
                "{bad}"
            );
        }
        assert_eq!(
            check_vapid(None, origin, None, NOW).unwrap_err().status,
            401
        );
    }
}
