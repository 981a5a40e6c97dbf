//! Dataset names and keys: what a client may write in `/v1/datasets/{name}/{key}`, checked once
//! into [`DatasetName`] and [`Key`].

use crate::channel::Channel;

/// Longest dataset name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Every dataset's changes are published on `datasets.<name>`.
pub const CHANNEL_PREFIX: &str = "datasets.";

/// Why a dataset name or key was refused; the message is meant for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("dataset name must be 1 to {MAX_NAME_LEN} bytes")]
    NameLength,
    #[error(
        "dataset name {0:?} is invalid: use letters, digits, '_' and '-', in tokens separated by \
         single dots (it becomes the channel 'datasets.<name>')"
    )]
    NameChars(String),
    #[error("key must be 1 to {MAX_KEY_LEN} bytes")]
    KeyLength,
    #[error(
        "key {0:?} is invalid: use letters, digits and '_', '-', '.', ':', '@', '~' (not '.' or '..')"
    )]
    KeyChars(String),
}

/// A validated dataset name: dot-separated tokens of `[A-Za-z0-9_-]`, so `datasets.<name>` is a
/// valid channel and the name can sit inside a Redis hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName(String);

impl DatasetName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::NameLength);
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !s.split('.').all(token_ok) {
            return Err(NameError::NameChars(s.chars().take(64).collect()));
        }
        Ok(DatasetName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel this dataset's changes are published on.
    pub fn channel(&self) -> Channel {
        // The name's alphabet is a subset of a channel token's and its tokens are non-empty,
        // and MAX_NAME_LEN + the prefix stays within MAX_CHANNEL_LEN: this always parses.
        Channel::parse(&format!("{CHANNEL_PREFIX}{}", self.0))
            .unwrap_or_else(|e| unreachable!("dataset name {:?} made a bad channel: {e}", self.0))
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated key: URL-safe characters only, so it never needs escaping in a path and cannot
/// be a dot segment that clients or proxies would normalise away.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_KEY_LEN {
            return Err(NameError::KeyLength);
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@~".contains(&b));
        if !ok || s == "." || s == ".." {
            return Err(NameError::KeyChars(s.chars().take(64).collect()));
        }
        Ok(Key(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_validated() {
        for ok in ["prefs", "users.eu", "a-b_c", "X1"] {
            let n = DatasetName::parse(ok).unwrap();
            assert_eq!(n.channel().as_str(), format!("datasets.{ok}"));
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a*",
            "a>",
            "{x}",
            "a:b",
            long.as_str(),
        ] {
            assert!(DatasetName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DatasetName::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
        for ok in ["k", "user:42", "a.b", "x@y~z", "_-"] {
            assert!(Key::parse(ok).is_ok(), "{ok:?}");
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2F", long.as_str()] {
            assert!(Key::parse(bad).is_err(), "{bad:?}");
        }
    }
}
