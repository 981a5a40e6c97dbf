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

    /// Whether every channel this pattern can match is matched by one of `allowed`: the
    /// authorisation question "may a reader allowed `allowed` subscribe to this?". `chat.*` is
    /// covered by `chat.*`, `chat.>` or `>`, but not by `chat.a`; `chat.>` is not covered by
    /// `chat.*`, but is by `chat.*` together with `chat.*.>`.
    ///
    /// Why it is exact: a request's `*` is checked as a token no allowed pattern names (if such
    /// a token is covered, every token is, since a named one only adds matching patterns), and a
    /// request's `>` as every length of such tokens, which only allowed `*`s and `>` can match.
    pub fn is_covered_by(&self, allowed: &[Pattern]) -> bool {
        let rests: Vec<&[Token]> = allowed.iter().map(|p| p.tokens.as_slice()).collect();
        covered(&self.tokens, rests)
    }
}

/// [`Pattern::is_covered_by`] on token lists: `want` is covered by the union of `allowed`.
fn covered(want: &[Token], allowed: Vec<&[Token]>) -> bool {
    let Some((first, rest)) = want.split_first() else {
        // The request ends here: covered when an allowed pattern ends here too.
        return allowed.iter().any(|a| a.is_empty());
    };
    match first {
        Token::Literal(_) | Token::One => {
            let mut next = Vec::with_capacity(allowed.len());
            for a in allowed {
                match a.split_first() {
                    // `>` takes this token and anything after it.
                    Some((Token::Tail, _)) => return true,
                    Some((Token::One, tail)) => next.push(tail),
                    Some((Token::Literal(l), tail)) => {
                        if matches!(first, Token::Literal(w) if w == l) {
                            next.push(tail);
                        }
                    }
                    None => {}
                }
            }
            covered(rest, next)
        }
        Token::Tail => {
            // Every length k ≥ 1 of arbitrary tokens must be matched: only patterns made of
            // `*`s (exactly their length) or `*`s then `>` (longer than the `*`s) can.
            let mut exact = Vec::new();
            let mut from: Option<usize> = None;
            for a in allowed {
                let stars = a.iter().take_while(|t| matches!(t, Token::One)).count();
                match a.get(stars) {
                    None if stars > 0 => exact.push(stars),
                    Some(Token::Tail) if stars + 1 == a.len() => {
                        from = Some(from.map_or(stars + 1, |f| f.min(stars + 1)));
                    }
                    _ => {}
                }
            }
            from.is_some_and(|from| (1..from).all(|k| exact.contains(&k)))
        }
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
///
/// Shared, not copied, by its clones (the hub's registry and the subscriber each hold one for
/// a connection's life: a copy was ≈ 100 bytes in six allocations per idle SSE connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet(std::sync::Arc<[Pattern]>);

impl PatternSet {
    /// Builds a set, dropping exact duplicates so an event is never delivered twice.
    pub fn new(patterns: impl IntoIterator<Item = Pattern>) -> Self {
        let mut out: Vec<Pattern> = Vec::new();
        for p in patterns {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        PatternSet(out.into())
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

    fn covered_by(want: &str, allowed: &[&str]) -> bool {
        let allowed: Vec<Pattern> = allowed.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        Pattern::parse(want).unwrap().is_covered_by(&allowed)
    }

    #[test]
    fn coverage_by_allowed_patterns() {
        assert!(covered_by("chat.a", &["chat.*"]));
        assert!(covered_by("chat.*", &["chat.*"]));
        assert!(!covered_by("chat.>", &["chat.*"]));
        assert!(!covered_by("chat.a.b", &["chat.*"]));
        assert!(!covered_by("chat", &["chat.*"]));
        assert!(covered_by("chat.>", &["chat.>"]));
        assert!(covered_by("chat.*.x", &["chat.>"]));
        assert!(covered_by("anything.at.all", &[">"]));
        assert!(covered_by(">", &[">"]));
        assert!(!covered_by(">", &["*.>"]));
        assert!(covered_by(">", &["*", "*.>"]));
        assert!(covered_by("chat.>", &["chat.*", "chat.*.>"]));
        assert!(covered_by("chat.>", &["chat.*", "chat.*.*", "chat.*.*.>"]));
        assert!(!covered_by("chat.>", &["chat.*", "chat.*.*.>"]));
        assert!(!covered_by("chat.*", &["chat.a", "chat.b"]));
        assert!(!covered_by("*.a", &["x.a"]));
        assert!(covered_by("x.a", &["*.a", "y.>"]));
        assert!(!covered_by("chat.a", &[]));
        assert!(covered_by("a.b", &["a.c", "a.b"]));
    }

    /// Every pattern of up to three tokens over `x`, `y`, `*`, `>` against every set of up to
    /// three such patterns drawn by a fixed generator, checked against brute force: every
    /// channel of up to five tokens over `x`, `y`, `z` (a token no pattern names).
    #[test]
    fn coverage_agrees_with_brute_force() {
        let mut patterns = Vec::new();
        let tokens = ["x", "y", "*", ">"];
        let mut grow: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..3 {
            let mut next = Vec::new();
            for p in &grow {
                if p.last() == Some(&">") {
                    continue;
                }
                for t in tokens {
                    let mut q = p.clone();
                    q.push(t);
                    patterns.push(q.join("."));
                    next.push(q);
                }
            }
            grow = next;
        }
        let mut channels = Vec::new();
        let mut grow: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..5 {
            let mut next = Vec::new();
            for c in &grow {
                for t in ["x", "y", "z"] {
                    let mut d = c.clone();
                    d.push(t);
                    channels.push(d.join("."));
                    next.push(d);
                }
            }
            grow = next;
        }
        let parsed: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut draw = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..3000 {
            let allowed: Vec<Pattern> = (0..1 + draw(3))
                .map(|_| parsed[draw(parsed.len())].clone())
                .collect();
            for want in &parsed {
                let brute = channels
                    .iter()
                    .filter(|c| want.matches(c))
                    .all(|c| allowed.iter().any(|a| a.matches(c)));
                assert_eq!(
                    want.is_covered_by(&allowed),
                    brute,
                    "{want} by {:?}",
                    allowed.iter().map(Pattern::as_str).collect::<Vec<_>>()
                );
            }
        }
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
