//! Web Push message encryption (RFC 8291, `aes128gcm` of RFC 8188) from the phone's side: make
//! a subscription's keys, and decrypt what the push service hands over. [`encrypt`] is here too,
//! so tests (and anything else that must produce a real Web Push body) have the sender's side.
//!
//! The gateway itself never decrypts: it passes the ciphertext through untouched, as a real push
//! service does. Only simulated phones hold the private key.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size senders use (RFC 8291 §4: a push message fits in one 4096-byte record).
pub const RECORD_SIZE: u32 = 4096;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 16 + 4 + 1;

/// A subscription's keys, all base64url without padding: what a browser keeps (`private`) and
/// what it hands out in its `PushSubscription` (`p256dh`, `auth`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebPushKeys {
    /// The P-256 private scalar (32 bytes). Never leaves the (simulated) phone.
    pub private: String,
    /// The uncompressed P-256 public key (65 bytes).
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

impl WebPushKeys {
    pub fn generate() -> WebPushKeys {
        let secret = SecretKey::random(&mut rand_core_06::OsRng);
        let mut auth = [0u8; 16];
        rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut auth);
        WebPushKeys {
            private: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
            p256dh: URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        }
    }

    /// Decrypts a push body delivered to this subscription.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        decrypt(body, &self.private, &self.auth)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("bad key: {0}")]
    Key(&'static str),
    #[error("malformed aes128gcm body: {0}")]
    Format(&'static str),
    #[error("decryption failed (wrong keys or corrupted body)")]
    Decrypt,
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, CryptoError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| CryptoError::Key(what))
}

/// The content key and base nonce (RFC 8291 §3.4, RFC 8188 §2.2–2.3).
fn derive(
    ecdh_secret: &[u8],
    auth: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8],
) -> ([u8; 16], [u8; 12]) {
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh_secret)
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("valid length");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("valid length");
    (cek, nonce)
}

/// The nonce of record `seq`: the base nonce XOR the big-endian sequence number.
fn record_nonce(base: &[u8; 12], seq: u64) -> [u8; 12] {
    let mut n = *base;
    for (i, b) in seq.to_be_bytes().iter().enumerate() {
        n[4 + i] ^= b;
    }
    n
}

/// Decrypts an `aes128gcm` push body with the subscription's private key and auth secret
/// (both base64url).
pub fn decrypt(body: &[u8], private: &str, auth: &str) -> Result<Vec<u8>, CryptoError> {
    let secret = SecretKey::from_slice(&b64(private, "private key")?)
        .map_err(|_| CryptoError::Key("private key"))?;
    let auth = b64(auth, "auth secret")?;
    if body.len() < HEADER_LEN {
        return Err(CryptoError::Format("shorter than the header"));
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let idlen = body[20] as usize;
    if rs <= TAG_LEN + 1 {
        return Err(CryptoError::Format("record size too small"));
    }
    if body.len() < HEADER_LEN + idlen {
        return Err(CryptoError::Format("truncated key id"));
    }
    let as_public_bytes = &body[HEADER_LEN..HEADER_LEN + idlen];
    let as_public = PublicKey::from_sec1_bytes(as_public_bytes)
        .map_err(|_| CryptoError::Format("key id is not a P-256 public key"))?;
    let ua_public = secret.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), as_public.as_affine());
    let (cek, base_nonce) = derive(
        shared.raw_secret_bytes(),
        &auth,
        ua_public.as_bytes(),
        as_public_bytes,
        salt,
    );
    let cipher = Aes128Gcm::new(&cek.into());
    let records: Vec<&[u8]> = body[HEADER_LEN + idlen..].chunks(rs).collect();
    if records.is_empty() {
        return Err(CryptoError::Format("no records"));
    }
    let mut out = Vec::new();
    for (seq, record) in records.iter().enumerate() {
        let nonce = record_nonce(&base_nonce, seq as u64);
        let mut plain = cipher
            .decrypt(&Nonce::from(nonce), *record)
            .map_err(|_| CryptoError::Decrypt)?;
        // Strip the padding: zeros after the delimiter, which is 2 on the last record, 1 before.
        let last = seq + 1 == records.len();
        let delim = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(CryptoError::Format("record without a delimiter"))?;
        if plain[delim] != if last { 2 } else { 1 } {
            return Err(CryptoError::Format("wrong padding delimiter"));
        }
        plain.truncate(delim);
        out.extend_from_slice(&plain);
    }
    Ok(out)
}

/// Encrypts `plaintext` for a subscription (`p256dh`, `auth`, base64url) as one `aes128gcm`
/// record. `salt` and `sender` are random unless given (tests pin them to reproduce RFC 8291's
/// example).
pub fn encrypt(
    plaintext: &[u8],
    p256dh: &str,
    auth: &str,
    salt: Option<[u8; 16]>,
    sender: Option<SecretKey>,
) -> Result<Vec<u8>, CryptoError> {
    let ua_public_bytes = b64(p256dh, "p256dh")?;
    let ua_public =
        PublicKey::from_sec1_bytes(&ua_public_bytes).map_err(|_| CryptoError::Key("p256dh"))?;
    let auth = b64(auth, "auth secret")?;
    if plaintext.len() + 1 + TAG_LEN > RECORD_SIZE as usize {
        return Err(CryptoError::Format("plaintext does not fit one record"));
    }
    let salt = salt.unwrap_or_else(|| {
        let mut s = [0u8; 16];
        rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut s);
        s
    });
    let sender = sender.unwrap_or_else(|| SecretKey::random(&mut rand_core_06::OsRng));
    let as_public = sender.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), ua_public.as_affine());
    let ua_public_uncompressed = ua_public.to_encoded_point(false);
    let (cek, nonce) = derive(
        shared.raw_secret_bytes(),
        &auth,
        ua_public_uncompressed.as_bytes(),
        as_public.as_bytes(),
        &salt,
    );
    let mut record = plaintext.to_vec();
    record.push(2);
    let ciphertext = Aes128Gcm::new(&cek.into())
        .encrypt(&Nonce::from(nonce), record.as_slice())
        .map_err(|_| CryptoError::Decrypt)?;
    let mut body = Vec::with_capacity(HEADER_LEN + 65 + ciphertext.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.as_bytes().len() as u8);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8291 Section 5 / Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn decrypts_the_rfc_8291_example() {
        let body = URL_SAFE_NO_PAD.decode(BODY).unwrap();
        let plain = decrypt(&body, UA_PRIVATE, AUTH).unwrap();
        assert_eq!(plain, PLAINTEXT.as_bytes());
    }

    #[test]
    fn encrypts_the_rfc_8291_example_exactly() {
        let salt: [u8; 16] = URL_SAFE_NO_PAD.decode(SALT).unwrap().try_into().unwrap();
        let sender = SecretKey::from_slice(&URL_SAFE_NO_PAD.decode(AS_PRIVATE).unwrap()).unwrap();
        let body = encrypt(
            PLAINTEXT.as_bytes(),
            UA_PUBLIC,
            AUTH,
            Some(salt),
            Some(sender),
        )
        .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(body), BODY);
    }

    #[test]
    fn round_trip_and_wrong_keys() {
        let keys = WebPushKeys::generate();
        let body = encrypt(br#"{"ssepush":{}}"#, &keys.p256dh, &keys.auth, None, None).unwrap();
        assert_eq!(keys.decrypt(&body).unwrap(), br#"{"ssepush":{}}"#);
        let other = WebPushKeys::generate();
        assert_eq!(other.decrypt(&body), Err(CryptoError::Decrypt));
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(keys.decrypt(&tampered), Err(CryptoError::Decrypt));
        assert!(matches!(
            keys.decrypt(&body[..30]),
            Err(CryptoError::Format(_))
        ));
        assert!(matches!(keys.decrypt(b""), Err(CryptoError::Format(_))));
    }
}
