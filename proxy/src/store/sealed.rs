//! Secrets at rest: a handoff's upstream credentials (stream URL and headers) and its push
//! target are sealed with **AES-256-GCM** before they reach a shared store.
//!
//! A sealed value is `<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`: a random 96-bit nonce
//! per value, the key id bound in as associated data (a ciphertext cannot be passed off under
//! another key's id). **Rotation**: the first configured key seals, every configured key opens
//! — put a new key first, keep the old ones until every record has been rewritten (each
//! write-through re-seals with the current key), then drop them.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;

/// The configured keys; the first seals. See the module docs.
#[derive(Clone)]
pub struct Sealer {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

impl Sealer {
    /// Parses `fleet.encryption_keys` (`"<id>:<base64 of 32 bytes>"`, at least one; ids of
    /// letters, digits, `-` and `_`, unique). Errors name the key by position, never its bytes.
    pub fn from_settings(keys: &[String]) -> Result<Sealer, String> {
        if keys.is_empty() {
            return Err(
                "fleet.encryption_keys: a shared store needs at least one key \
                        (\"<id>:<base64 of 32 random bytes>\")"
                    .into(),
            );
        }
        let mut out: Vec<(String, Aes256Gcm)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let Some((id, b64)) = k.split_once(':') else {
                return Err(format!(
                    "fleet.encryption_keys[{i}]: expected \"<id>:<base64>\""
                ));
            };
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "fleet.encryption_keys[{i}]: the id must be letters, digits, '-' or '_'"
                ));
            }
            if out.iter().any(|(other, _)| other == id) {
                return Err(format!("fleet.encryption_keys[{i}]: id {id:?} is repeated"));
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| format!("fleet.encryption_keys[{i}] ({id}): not base64"))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .ok()
                .filter(|_| bytes.len() == 32)
                .ok_or_else(|| format!("fleet.encryption_keys[{i}] ({id}): not 32 bytes"))?;
            out.push((id.to_owned(), cipher));
        }
        Ok(Sealer { keys: out })
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `plain` with the current key.
    pub fn seal(&self, plain: &[u8]) -> String {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::rng().fill(&mut nonce);
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: id.as_bytes(),
                },
            )
            // Encryption fails only for messages over 64 GiB.
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(blob))
    }

    /// Opens a value sealed with any configured key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, String> {
        let (id, b64) = sealed
            .split_once('.')
            .ok_or("not a sealed value (no key id)")?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| format!("sealed with key {id:?}, which is not configured"))?;
        let blob = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| "sealed value is not base64url")?;
        if blob.len() < 12 + 16 {
            return Err("sealed value is too short".into());
        }
        let (nonce, ct) = blob.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| "bad nonce")?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| format!("sealed value does not open with key {id:?} (tampered?)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn seals_opens_and_rotates() {
        let old = Sealer::from_settings(&[key("k1", 1)]).unwrap();
        let sealed = old.seal(b"Bearer top-secret");
        assert!(sealed.starts_with("k1."));
        assert!(!sealed.contains("top-secret"));
        assert_ne!(
            old.seal(b"Bearer top-secret"),
            sealed,
            "a fresh nonce each time"
        );
        assert_eq!(old.open(&sealed).unwrap(), b"Bearer top-secret");
        // Rotation: the new key seals, the old one still opens.
        let rotated = Sealer::from_settings(&[key("k2", 2), key("k1", 1)]).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), b"Bearer top-secret");
        assert!(rotated.seal(b"x").starts_with("k2."));
        // Dropped key, tampering, a key id swapped: refused.
        let new_only = Sealer::from_settings(&[key("k2", 2)]).unwrap();
        assert!(new_only.open(&sealed).unwrap_err().contains("k1"));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(old.open(&tampered).is_err());
        let same_bytes = Sealer::from_settings(&[key("k3", 1)]).unwrap();
        assert!(same_bytes.open(&sealed.replacen("k1.", "k3.", 1)).is_err());
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        assert!(Sealer::from_settings(&[]).is_err());
        for bad in ["nocolon", "a b:AAAA", ":AAAA", "k:!!!!", "k:AAAA"] {
            let err = Sealer::from_settings(&[bad.into()]).unwrap_err();
            assert!(!err.contains("AAAA"), "{err}");
        }
        assert!(Sealer::from_settings(&[key("k", 1), key("k", 2)]).is_err());
        let s = Sealer::from_settings(&[key("k", 7)]).unwrap();
        assert_eq!(format!("{s:?}"), "Sealer { key_ids: [\"k\"] }");
    }
}
