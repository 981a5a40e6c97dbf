//! Channel names and subscription patterns.
//!
//! A channel is a dot-separated list of tokens (`chat.room42`). A pattern follows the NATS
//! convention: `*` matches exactly one token, `>` (only as the last token) matches one or more
//! trailing tokens. Both are validated once, at the edge, so the hot path only compares tokens.

use std::fmt;
use std::str::FromStr;

/// Longest channel name or pattern accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 256;

/// Why a channel name or pattern was refused. The message is meant for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel must not be empty")]
    Empty,
    #[error("channel is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    #[error("channel {0:?} has an empty token (leading, trailing or double '.')")]
    EmptyToken(String),
    #[error(
        "channel {0:?} has an invalid character {1:?}: tokens use letters, digits, '_', '-', ':', '@' and '~'"
    )]
    BadChar(String, char),
    #[error("{0:?} is a pattern; a channel to publish on cannot contain '*' or '>'")]
    Wildcard(String),
    #[error("pattern {0:?}: '>' may only be the last token")]
    TailNotLast(String),
    #[error("pattern {0:?}: '*' and '>' must be whole tokens")]
    PartialWildcard(String),
}

fn valid_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '@' | '~')
}

fn check_common(s: &str) -> Result<(), ChannelError> {
    if s.is_empty() {
        return Err(ChannelError::Empty);
    }
    if s.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    if s.split('.').any(str::is_empty) {
        return Err(ChannelError::EmptyToken(s.to_owned()));
    }
    Ok(())
}

/// A validated channel name: what an event is published on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        check_common(s)?;
        for c in s.chars() {
            if c == '*' || c == '>' {
                return Err(ChannelError::Wildcard(s.to_owned()));
            }
            if c != '.' && !valid_token_char(c) {
                return Err(ChannelError::BadChar(s.to_owned(), c));
            }
        }
        Ok(Channel(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Channel::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens.
    Tail,
}

/// A validated subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        check_common(s)?;
        let parts: Vec<&str> = s.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Tail,
                ">" => return Err(ChannelError::TailNotLast(s.to_owned())),
                lit => {
                    if let Some(c) = lit.chars().find(|c| !valid_token_char(*c)) {
                        return Err(if c == '*' || c == '>' {
                            ChannelError::PartialWildcard(s.to_owned())
                        } else {
                            ChannelError::BadChar(s.to_owned(), c)
                        });
                    }
                    Token::Literal(lit.to_owned())
                }
            };
            tokens.push(token);
        }
        Ok(Pattern {
            source: s.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The channel this pattern names when it has no wildcard.
    pub fn literal(&self) -> Option<&str> {
        self.tokens
            .iter()
            .all(|t| matches!(t, Token::Literal(_)))
            .then_some(self.source.as_str())
    }

    pub fn matches(&self, channel: &str) -> bool {
        let mut parts = channel.split('.');
        for token in &self.tokens {
            match token {
                Token::Tail => return parts.next().is_some(),
                Token::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Pattern {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// The patterns of one subscription: an event is wanted when any of them matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet(Vec<Pattern>);

impl PatternSet {
    /// Builds a set, dropping exact duplicates so an event is never delivered twice.
    pub fn new(patterns: impl IntoIterator<Item = Pattern>) -> Self {
        let mut out: Vec<Pattern> = Vec::new();
        for p in patterns {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        PatternSet(out)
    }

    pub fn parse_all<'a>(sources: impl IntoIterator<Item = &'a str>) -> Result<Self, ChannelError> {
        let patterns = sources
            .into_iter()
            .map(Pattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(patterns))
    }

    pub fn matches(&self, channel: &str) -> bool {
        self.0.iter().any(|p| p.matches(channel))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.0.iter()
    }

    /// The channel names, when every pattern is a literal one.
    pub fn literals(&self) -> Option<Vec<&str>> {
        self.0.iter().map(Pattern::literal).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, c: &str) -> bool {
        Pattern::parse(p).unwrap().matches(c)
    }

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(m("chat.room42", "chat.room42"));
        assert!(!m("chat.room42", "chat.room4"));
        assert!(!m("chat.room42", "chat.room42.x"));
        assert!(!m("chat", "chat.room42"));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(m("chat.*", "chat.a"));
        assert!(!m("chat.*", "chat"));
        assert!(!m("chat.*", "chat.a.b"));
        assert!(m("*.temp", "eu.temp"));
        assert!(m("sensors.*.temp", "sensors.eu.temp"));
        assert!(!m("sensors.*.temp", "sensors.eu.hum"));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
    }

    #[test]
    fn tail_matches_one_or_more_trailing_tokens() {
        assert!(m("chat.>", "chat.a"));
        assert!(m("chat.>", "chat.a.b.c"));
        assert!(!m("chat.>", "chat"));
        assert!(!m("chat.>", "chatter.a"));
        assert!(m(">", "anything.at.all"));
        assert!(m("*.>", "a.b"));
        assert!(!m("*.>", "a"));
    }

    #[test]
    fn bad_patterns_are_refused_with_reasons() {
        assert_eq!(Pattern::parse(""), Err(ChannelError::Empty));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(ChannelError::EmptyToken(_))
        ));
        assert!(matches!(
            Pattern::parse(".a"),
            Err(ChannelError::EmptyToken(_))
        ));
        assert!(matches!(
            Pattern::parse("a.>.b"),
            Err(ChannelError::TailNotLast(_))
        ));
        assert!(matches!(
            Pattern::parse("a.b*"),
            Err(ChannelError::PartialWildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("a b"),
            Err(ChannelError::BadChar(_, ' '))
        ));
        assert_eq!(Pattern::parse(&"a".repeat(300)), Err(ChannelError::TooLong));
    }

    #[test]
    fn channels_cannot_hold_wildcards() {
        assert!(Channel::parse("chat.room-1:x@y~z_9").is_ok());
        assert!(matches!(
            Channel::parse("chat.*"),
            Err(ChannelError::Wildcard(_))
        ));
        assert!(matches!(
            Channel::parse("chat.>"),
            Err(ChannelError::Wildcard(_))
        ));
        assert!(matches!(
            Channel::parse("chat/x"),
            Err(ChannelError::BadChar(_, '/'))
        ));
        assert!(matches!(
            Channel::parse("chat."),
            Err(ChannelError::EmptyToken(_))
        ));
    }

    #[test]
    fn pattern_sets_dedupe_and_report_literals() {
        let set = PatternSet::parse_all(["a.b", "a.b", "c"]).unwrap();
        assert_eq!(set.iter().count(), 2);
        assert_eq!(set.literals(), Some(vec!["a.b", "c"]));
        let wild = PatternSet::parse_all(["a.b", "c.*"]).unwrap();
        assert_eq!(wild.literals(), None);
        assert!(wild.matches("c.d"));
        assert!(!wild.matches("a.c"));
    }
}
