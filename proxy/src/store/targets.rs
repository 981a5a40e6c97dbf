//! The memory store's index of push targets: which handoffs each target has, oldest first
//! (budgets and replacement are per target, [`super::HandoffStore::claim_target`]).
//!
//! A node has an entry per live handoff (issue 11: a sleeping handoff's memory), so it is held
//! tight: a target is known by 128 bits of a SHA-256 of its digest string (no two targets of a
//! node collide short of 2^64 of them), and the usual case — one handoff, with an id of the
//! form the proxy makes (`h_` and 32 lowercase hex digits, [`crate::token::new_id`]) — is 32
//! bytes in a table and nothing else. Anything else (several handoffs, another id form) is an
//! exact-size list.

use std::collections::HashMap;

type Key = [u8; 16];

/// See the module docs.
#[derive(Debug, Default)]
pub struct Targets {
    /// One handoff of a canonical id, packed.
    one: HashMap<Key, [u8; 16]>,
    /// Anything else.
    many: HashMap<Key, Box<[Box<str>]>>,
}

fn key(target: &str) -> Key {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(target.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// `h_` and 32 lowercase hex digits as 16 bytes.
fn pack(id: &str) -> Option<[u8; 16]> {
    let hex = id.strip_prefix("h_")?.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn unpack(p: &[u8; 16]) -> String {
    let mut s = String::with_capacity(34);
    s.push_str("h_");
    for b in p {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Targets {
    /// Takes `target`'s handoffs out of the index, oldest first.
    fn take(&mut self, k: &Key) -> Vec<String> {
        if let Some(p) = self.one.remove(k) {
            return vec![unpack(&p)];
        }
        self.many
            .remove(k)
            .map(|ids| ids.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    }

    fn put(&mut self, k: Key, ids: Vec<String>) {
        if let [only] = ids.as_slice()
            && let Some(p) = pack(only)
        {
            self.one.insert(k, p);
        } else if !ids.is_empty() {
            self.many
                .insert(k, ids.into_iter().map(String::into_boxed_str).collect());
        }
    }

    /// Records `id` as the newest handoff of `target`; returns those beyond the newest `cap`
    /// (at least 1), oldest first, which leave the index.
    pub fn claim(&mut self, target: &str, id: &str, cap: usize) -> Vec<String> {
        let k = key(target);
        let mut ids = self.take(&k);
        ids.retain(|i| i != id);
        ids.push(id.to_owned());
        let over = ids.len().saturating_sub(cap.max(1));
        let evicted = ids.drain(..over).collect();
        self.put(k, ids);
        evicted
    }

    /// Forgets handoff `id` (whatever its target).
    pub fn remove(&mut self, id: &str) {
        if let Some(p) = pack(id) {
            self.one.retain(|_, v| *v != p);
        }
        self.many.retain(|_, ids| {
            if ids.iter().any(|i| &**i == id) {
                *ids = ids.iter().filter(|i| &***i != id).cloned().collect();
            }
            !ids.is_empty()
        });
    }

    /// Targets held (for tests).
    pub fn len(&self) -> usize {
        self.one.len() + self.many.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "h_00112233445566778899aabbccddeeff";
    const B: &str = "h_ffeeddccbbaa99887766554433221100";

    #[test]
    fn canonical_ids_pack_into_16_bytes_and_back() {
        assert_eq!(pack(A).map(|p| unpack(&p)).as_deref(), Some(A));
        for other in [
            "h_a",
            "x_00112233445566778899aabbccddeeff",
            "h_00112233445566778899AABBCCDDEEFF",
        ] {
            assert_eq!(pack(other), None, "{other}");
        }
    }

    #[test]
    fn a_new_handoff_for_a_target_evicts_the_oldest_beyond_the_cap() {
        let mut t = Targets::default();
        assert!(t.claim("t1", A, 1).is_empty());
        assert_eq!(t.one.len(), 1);
        assert_eq!(t.claim("t1", B, 1), vec![A.to_string()]);
        // Claiming again for the newest evicts nothing.
        assert!(t.claim("t1", B, 1).is_empty());
        // Two a target: kept as a list; other id forms too.
        assert!(t.claim("t2", "h_c", 2).is_empty());
        assert!(t.claim("t2", A, 2).is_empty());
        assert_eq!(t.claim("t2", "h_d", 2), vec!["h_c".to_string()]);
        assert_eq!(t.len(), 2);
        t.remove(B);
        t.remove("h_d");
        assert_eq!(t.len(), 1);
        t.remove(A);
        assert!(t.is_empty());
    }
}
