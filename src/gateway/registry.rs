//! What the simulated services hand out and check on later requests: the OAuth access tokens
//! FCM's `/token` mints, and the Web Push subscriptions a phone makes through the control API.
//! Plain data, bounded; the handlers that use it are in [`super::fcm`], [`super::webpush`] and
//! [`super::control`].

use std::collections::HashMap;

use base64::Engine;

/// What `expires_in` says (Google hands out 3599).
pub const TOKEN_LIFETIME_SECS: i64 = 3599;
/// Access tokens remembered at once; the oldest go first when full.
pub const MAX_ACCESS_TOKENS: usize = 10_000;

/// The access tokens minted by `/token`, with their expiry (unix seconds). Bounded.
#[derive(Debug, Default)]
pub struct AccessTokens {
    tokens: HashMap<String, i64>,
}

impl AccessTokens {
    /// A fresh token valid for [`TOKEN_LIFETIME_SECS`] from `now` (unix seconds); expired
    /// tokens, then the oldest, make room when [`MAX_ACCESS_TOKENS`] are held.
    pub fn mint(&mut self, now: i64) -> String {
        if self.tokens.len() >= MAX_ACCESS_TOKENS {
            self.tokens.retain(|_, exp| *exp > now);
        }
        if self.tokens.len() >= MAX_ACCESS_TOKENS
            && let Some(oldest) = self
                .tokens
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(t, _)| t.clone())
        {
            self.tokens.remove(&oldest);
        }
        let mut raw = [0u8; 48];
        rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut raw);
        let token = format!(
            "ya29.sim-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        self.tokens.insert(token.clone(), now + TOKEN_LIFETIME_SECS);
        token
    }

    /// Whether `token` was minted here and has not expired at `now`.
    pub fn is_valid(&self, token: &str, now: i64) -> bool {
        self.tokens.get(token).is_some_and(|exp| *exp > now)
    }
}

/// A Web Push subscription the gateway handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The application server key it was created with (base64url), if any: VAPID must use it.
    pub application_server_key: Option<String>,
    /// Unsubscribed: pushes get 410 Gone.
    pub gone: bool,
}

/// Subscriptions by id, bounded by the gateway's device limit.
pub type Subscriptions = HashMap<String, Subscription>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_expire_and_are_bounded() {
        let mut t = AccessTokens::default();
        let a = t.mint(100);
        assert!(t.is_valid(&a, 100 + TOKEN_LIFETIME_SECS - 1));
        assert!(!t.is_valid(&a, 100 + TOKEN_LIFETIME_SECS));
        assert!(!t.is_valid("ya29.forged", 100));
        for i in 0..MAX_ACCESS_TOKENS + 5 {
            t.mint(200 + i as i64);
        }
        assert!(t.tokens.len() <= MAX_ACCESS_TOKENS);
    }
}
