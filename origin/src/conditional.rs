//! Conditional requests by entity tag, RFC 9110 §8.8.3 and §13: parsing `If-Match` and
//! `If-None-Match`, the strong and weak comparison functions, and the order in which a server
//! evaluates the two (§13.2.2). Plain code on values, shared by every endpoint that sends an
//! `ETag` (`/latest`, dataset snapshots and deltas, dataset writes).
//!
//! * `If-Match = "*" / #entity-tag` — **strong** comparison: a weak tag (`W/"…"`) never matches,
//!   and `*` matches only an existing representation. False → 412.
//! * `If-None-Match = "*" / #entity-tag` — **weak** comparison (`W/"7"` matches `"7"`), `*`
//!   matches any existing representation. False → 304 for GET/HEAD, 412 otherwise.
//! * A field that is not one of those grammars (an unquoted tag, a lowercase `w/`, `*` inside a
//!   list, a control character) is malformed: the caller answers 400. A well-formed tag that
//!   names no representation the server has is not an error, it simply does not match.
//!
//! Several field lines of one name are one comma-separated list (RFC 9110 §5.3), and empty list
//! elements are ignored (§5.6.1). The `headers` crate has typed `IfMatch`/`IfNoneMatch`, but it
//! skips malformed tags silently, which would turn a client's 400 into a silent 412/200.

use std::fmt;

/// An entity tag, `"opaque"` or `W/"opaque"` (RFC 9110 §8.8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/` prefix: the tag names a semantically equivalent representation, not identical bytes.
    pub weak: bool,
    /// The bytes between the quotes: `%x21 / %x23-7E / %x80-FF`.
    pub opaque: Vec<u8>,
}

impl EntityTag {
    /// A strong tag. `opaque` must not contain `"`, controls or spaces; ours are ids and numbers.
    pub fn strong(opaque: impl Into<String>) -> EntityTag {
        EntityTag {
            weak: false,
            opaque: opaque.into().into_bytes(),
        }
    }

    /// Parses one `entity-tag` (no surrounding whitespace). `None` when malformed.
    pub fn parse(s: &[u8]) -> Option<EntityTag> {
        let (weak, rest) = match s.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let opaque = rest.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            .then(|| EntityTag {
                weak,
                opaque: opaque.to_vec(),
            })
    }

    /// Strong comparison (§8.8.3.2): both strong and the opaque tags identical.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (§8.8.3.2): the opaque tags identical, weak or not.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }

    /// The opaque tag as text, when it is UTF-8.
    pub fn opaque_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.opaque).ok()
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = if self.weak { "W/" } else { "" };
        write!(f, "{w}\"{}\"", String::from_utf8_lossy(&self.opaque))
    }
}

/// The value of an `If-Match` or `If-None-Match` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags (possibly empty: `#` allows it).
    Tags(Vec<EntityTag>),
}

/// A malformed `If-Match` / `If-None-Match` field; the message says what is wrong (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field} must be \"*\" or a comma-separated list of entity tags, each in double quotes \
     (\"42\" or W/\"42\"); {problem}"
)]
pub struct MalformedField {
    pub field: &'static str,
    pub problem: String,
}

impl TagList {
    /// Parses the field lines of one field (`field` names it in errors). Commas inside a quoted
    /// tag do not split it.
    pub fn parse<'a>(
        field: &'static str,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<TagList, MalformedField> {
        let bad = |problem: String| MalformedField { field, problem };
        let mut tags = Vec::new();
        let mut any = false;
        for line in lines {
            for element in split_list(line) {
                let element = element.trim_ascii();
                if element.is_empty() {
                    continue;
                }
                if element == b"*" {
                    any = true;
                } else {
                    tags.push(EntityTag::parse(element).ok_or_else(|| {
                        let shown: String =
                            String::from_utf8_lossy(element).chars().take(64).collect();
                        bad(format!("{shown:?} is not an entity tag"))
                    })?);
                }
            }
        }
        match (any, tags.is_empty()) {
            (true, true) => Ok(TagList::Any),
            (true, false) => Err(bad("\"*\" cannot be combined with tags".to_owned())),
            (false, _) => Ok(TagList::Tags(tags)),
        }
    }

    /// The tags listed (none for `*`).
    pub fn tags(&self) -> &[EntityTag] {
        match self {
            TagList::Any => &[],
            TagList::Tags(t) => t,
        }
    }

    /// `If-Match` (§13.1.1): true when `current` exists and `*` was given or a listed tag
    /// matches it by strong comparison.
    pub fn if_match(&self, current: Option<&EntityTag>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagList::Any, Some(_)) => true,
            (TagList::Tags(tags), Some(c)) => tags.iter().any(|t| t.strong_eq(c)),
        }
    }

    /// `If-None-Match` (§13.1.2): false when `current` exists and `*` was given or a listed tag
    /// matches it by weak comparison; true otherwise.
    pub fn if_none_match(&self, current: Option<&EntityTag>) -> bool {
        match (self, current) {
            (_, None) => true,
            (TagList::Any, Some(_)) => false,
            (TagList::Tags(tags), Some(c)) => !tags.iter().any(|t| t.weak_eq(c)),
        }
    }
}

/// Splits a list at commas outside double quotes.
fn split_list(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    line.split(move |&b| {
        if b == b'"' {
            quoted = !quoted;
        }
        b == b',' && !quoted
    })
}

/// A request's entity-tag preconditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub if_match: Option<TagList>,
    pub if_none_match: Option<TagList>,
}

/// What the preconditions say about a request (§13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// Perform the method.
    Proceed,
    /// `If-None-Match` failed on GET/HEAD: 304 Not Modified with the current `ETag`.
    NotModified,
    /// A precondition failed: 412 Precondition Failed.
    Failed,
}

impl Preconditions {
    /// Parses the request's `If-Match` and `If-None-Match` field lines.
    pub fn parse<'a>(
        if_match: impl IntoIterator<Item = &'a [u8]>,
        if_none_match: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Preconditions, MalformedField> {
        let field = |name, lines: Vec<&'a [u8]>| {
            (!lines.is_empty())
                .then(|| TagList::parse(name, lines))
                .transpose()
        };
        Ok(Preconditions {
            if_match: field("If-Match", if_match.into_iter().collect())?,
            if_none_match: field("If-None-Match", if_none_match.into_iter().collect())?,
        })
    }

    /// No precondition given.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether both fields hold for `current` (the tag of the current representation, `None`
    /// when there is none).
    pub fn hold(&self, current: Option<&EntityTag>) -> bool {
        self.if_match.as_ref().is_none_or(|l| l.if_match(current))
            && self
                .if_none_match
                .as_ref()
                .is_none_or(|l| l.if_none_match(current))
    }

    /// §13.2.2, steps 1 and 3 (this server sends no `Last-Modified`, so the date fields do not
    /// apply): `If-Match` first, then `If-None-Match`. `safe` is true for GET and HEAD.
    pub fn evaluate(&self, current: Option<&EntityTag>, safe: bool) -> Evaluation {
        if self.if_match.as_ref().is_some_and(|l| !l.if_match(current)) {
            return Evaluation::Failed;
        }
        match &self.if_none_match {
            Some(l) if !l.if_none_match(current) => {
                if safe {
                    Evaluation::NotModified
                } else {
                    Evaluation::Failed
                }
            }
            _ => Evaluation::Proceed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Result<TagList, MalformedField> {
        TagList::parse("If-Match", [s.as_bytes()])
    }

    fn tag(s: &str) -> EntityTag {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    fn pre(im: Option<&str>, inm: Option<&str>) -> Preconditions {
        Preconditions::parse(im.map(str::as_bytes), inm.map(str::as_bytes)).unwrap()
    }

    #[test]
    fn entity_tags_parse_by_the_grammar() {
        assert_eq!(tag("\"17-3\""), EntityTag::strong("17-3"));
        assert_eq!(
            tag("W/\"7\""),
            EntityTag {
                weak: true,
                opaque: b"7".to_vec()
            }
        );
        assert_eq!(tag("\"\"").opaque, b"");
        assert_eq!(tag("\"a,b\"").opaque, b"a,b");
        assert_eq!(tag("W/\"7\"").to_string(), "W/\"7\"");
        for bad in [
            "7", "\"7", "7\"", "w/\"7\"", "W/7", "W\"7\"", "\"a b\"", "\"a\"b\"", "\"\t\"", "",
        ] {
            assert_eq!(EntityTag::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // obs-text is allowed inside the quotes.
        assert!(EntityTag::parse(b"\"\xe9t\xe9\"").is_some());
    }

    #[test]
    fn comparison_functions_follow_the_rfc_table() {
        // RFC 9110 §8.8.3.2's example table.
        let cases = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in cases {
            assert_eq!(tag(a).strong_eq(&tag(b)), strong, "{a} {b}");
            assert_eq!(tag(a).weak_eq(&tag(b)), weak, "{a} {b}");
        }
    }

    #[test]
    fn lists_parse_across_lines_and_empty_elements() {
        assert_eq!(list("*"), Ok(TagList::Any));
        assert_eq!(list(" * "), Ok(TagList::Any));
        assert_eq!(
            list("\"1\", W/\"2\" ,,\"a,b\""),
            Ok(TagList::Tags(vec![
                tag("\"1\""),
                tag("W/\"2\""),
                tag("\"a,b\"")
            ]))
        );
        assert_eq!(list(""), Ok(TagList::Tags(vec![])));
        let two = TagList::parse("If-None-Match", [&b"\"1\""[..], &b"\"2\""[..]]).unwrap();
        assert_eq!(two.tags().len(), 2);
        for bad in ["1", "\"1\", 2", "*, \"1\"", "\"1\" \"2\"", "\"1\";x"] {
            let e = list(bad).unwrap_err();
            assert_eq!(e.field, "If-Match", "{bad}");
        }
        // Two lines, one of them `*`: a list with `*` in it.
        assert!(TagList::parse("If-Match", [&b"*"[..], &b"\"1\""[..]]).is_err());
        let e = list("abc").unwrap_err().to_string();
        assert!(e.contains("\"abc\" is not an entity tag"), "{e}");
    }

    #[test]
    fn if_match_is_strong_and_needs_a_representation() {
        let cur = EntityTag::strong("7");
        assert!(list("\"7\"").unwrap().if_match(Some(&cur)));
        assert!(list("\"1\", \"7\"").unwrap().if_match(Some(&cur)));
        assert!(!list("W/\"7\"").unwrap().if_match(Some(&cur)));
        assert!(!list("\"07\"").unwrap().if_match(Some(&cur)));
        assert!(!list("\"8\"").unwrap().if_match(Some(&cur)));
        assert!(list("*").unwrap().if_match(Some(&cur)));
        assert!(!list("*").unwrap().if_match(None));
        assert!(!list("\"7\"").unwrap().if_match(None));
        assert!(!list("").unwrap().if_match(Some(&cur)));
    }

    #[test]
    fn if_none_match_is_weak() {
        let cur = EntityTag::strong("7");
        let l = |s: &str| TagList::parse("If-None-Match", [s.as_bytes()]).unwrap();
        assert!(!l("\"7\"").if_none_match(Some(&cur)));
        assert!(!l("W/\"7\"").if_none_match(Some(&cur)));
        assert!(!l("\"1\", W/\"7\"").if_none_match(Some(&cur)));
        assert!(l("\"8\"").if_none_match(Some(&cur)));
        assert!(!l("*").if_none_match(Some(&cur)));
        assert!(l("*").if_none_match(None));
        assert!(l("\"7\"").if_none_match(None));
    }

    #[test]
    fn evaluation_order_is_if_match_then_if_none_match() {
        let cur = EntityTag::strong("7");
        let c = Some(&cur);
        assert_eq!(pre(None, None).evaluate(c, true), Evaluation::Proceed);
        assert_eq!(
            pre(None, Some("\"7\"")).evaluate(c, true),
            Evaluation::NotModified
        );
        assert_eq!(
            pre(None, Some("\"7\"")).evaluate(c, false),
            Evaluation::Failed
        );
        assert_eq!(
            pre(Some("\"6\""), Some("\"8\"")).evaluate(c, true),
            Evaluation::Failed
        );
        // If-Match holds, then If-None-Match decides.
        assert_eq!(
            pre(Some("\"7\""), Some("W/\"7\"")).evaluate(c, true),
            Evaluation::NotModified
        );
        assert_eq!(
            pre(Some("*"), Some("\"8\"")).evaluate(c, false),
            Evaluation::Proceed
        );
        assert!(pre(Some("*"), Some("\"8\"")).hold(c));
        assert!(!pre(Some("*"), None).hold(None));
        assert!(pre(None, Some("*")).hold(None));
        assert!(pre(None, None).is_empty());
    }

    #[test]
    fn absent_fields_are_none() {
        let p = Preconditions::parse(std::iter::empty(), [&b"*"[..]]).unwrap();
        assert_eq!(p.if_match, None);
        assert_eq!(p.if_none_match, Some(TagList::Any));
        let e = Preconditions::parse([&b"x"[..]], std::iter::empty()).unwrap_err();
        assert_eq!(e.field, "If-Match");
    }
}
