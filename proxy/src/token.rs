//! A handoff's identifiers and secret: its public id, and the token the phone presents for
//! every later call. The token is returned once, at creation; only its SHA-256 is kept and
//! compared in constant time, and neither type prints it.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A handoff's secret, as handed to the phone once. 256 random bits, hex.
pub struct Token(String);

impl Token {
    pub fn generate() -> Token {
        Token(random_hex(32))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What the proxy keeps of a token: its SHA-256. A leaked store does not leak the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// The hash from its [`hex`](Self::hex) form (a stored record).
    pub fn from_hex(hex: &str) -> Option<TokenHash> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TokenHash(out))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Constant-time comparison of a presented token against this hash.
    pub fn verify(&self, presented: &str) -> bool {
        bool::from(TokenHash::of(presented).0.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(…)")
    }
}

/// A fresh handoff id: `h_` and 128 random bits, hex.
pub fn new_id() -> String {
    format!("h_{}", random_hex(16))
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex(&buf)
}

/// `bytes` as lower-case hex (a table, not `format!` per byte: ids, tokens and digests are
/// made several times per handoff).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_hash_and_never_print() {
        let t = Token::generate();
        assert_eq!(t.expose().len(), 64);
        let h = t.hash();
        assert!(h.verify(t.expose()));
        assert!(!h.verify("nope"));
        assert!(!format!("{t:?} {h:?}").contains(t.expose()));
        assert_ne!(Token::generate().expose(), t.expose());
        assert!(new_id().starts_with("h_"));
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(TokenHash::from_hex(&h.hex()), Some(h));
    }
}
