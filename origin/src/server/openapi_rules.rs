//! The input rules of the origin's validators, written into its OpenAPI document: the patterns,
//! lengths and ranges that `channel`, dataset names and keys, `n`/`limit`/`timeout`, ETag lists
//! and the publish and webhook bodies must meet. Without them the document says "any string"
//! where the server refuses most strings, so a schema-driven client or tester (schemathesis,
//! `deploy/checks/schemathesis.sh`) cannot tell a valid request from an invalid one.
//!
//! The rules live here, next to the constants they come from, rather than on each handler's
//! `#[utoipa::path]`, because the same parameter (`channel`, `If-Match`, …) appears on many
//! operations and must say the same thing on each. Patterns are ECMA-262 regular expressions
//! (OpenAPI 3.1 / JSON Schema 2020-12); each is the validator's rule, character for character.

use serde_json::{Value, json};

use crate::channel::MAX_CHANNEL_LEN;
use crate::datasets::{MAX_KEY_LEN, MAX_NAME_LEN};
use crate::event::MAX_TYPE_LEN;
use crate::filter::MAX_FILTER_LEN;
use crate::server::latest::MAX_N;
use crate::server::subscription::MAX_PATTERNS;
use crate::webhooks::{MAX_CHANNELS, MAX_URL_LEN};

/// A channel: dot-separated tokens of letters, digits and `_-:@~` ([`crate::channel::Channel`]).
pub const CHANNEL_PATTERN: &str = r"^[A-Za-z0-9_:@~-]+(\.[A-Za-z0-9_:@~-]+)*$";
/// A subscription pattern: a channel whose tokens may be `*`, and whose last token may be `>`
/// ([`crate::channel::Pattern`]).
pub const PATTERN_PATTERN: &str = r"^(([A-Za-z0-9_:@~-]+|\*)\.)*([A-Za-z0-9_:@~-]+|\*|>)$";
/// A dataset name ([`crate::datasets::DatasetName`]).
pub const DATASET_PATTERN: &str = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$";
/// A dataset key, never `.` or `..` ([`crate::datasets::Key`]).
pub const KEY_PATTERN: &str = r"^(?!\.{1,2}$)[A-Za-z0-9_.:@~-]+$";
/// `If-Match` / `If-None-Match`: `*` or a list of entity tags (RFC 9110 §8.8.3, §13.1.1);
/// an empty value is read as no header.
pub const ETAGS_PATTERN: &str =
    r#"^[ \t]*(\*|(W/)?"[!#-~]*"([ \t]*,[ \t]*(W/)?"[!#-~]*")*)?[ \t]*$"#;
/// An event type: 1 to [`MAX_TYPE_LEN`] bytes, no line break, not the reserved `ssepush.` prefix.
pub const TYPE_PATTERN: &str = r"^(?!ssepush\.)[^\r\n]+$";

fn channel() -> Value {
    json!({"type": "string", "pattern": CHANNEL_PATTERN, "minLength": 1, "maxLength": MAX_CHANNEL_LEN})
}

fn pattern() -> Value {
    json!({"type": "string", "pattern": PATTERN_PATTERN, "minLength": 1, "maxLength": MAX_CHANNEL_LEN})
}

fn patterns(max: usize) -> Value {
    json!({"type": "array", "items": pattern(), "minItems": 1, "maxItems": max})
}

/// The schema a parameter gets, by where it is and its name; `None` leaves it as generated.
fn parameter_schema(location: &str, name: &str) -> Option<Value> {
    Some(match (location, name) {
        ("path", "channel") => channel(),
        ("query", "channel") => patterns(MAX_PATTERNS),
        ("query", "filter") => json!({"type": "string", "maxLength": MAX_FILTER_LEN}),
        ("query", "n" | "limit") => json!({"type": "integer", "minimum": 1, "maximum": MAX_N}),
        ("query", "timeout") => json!({"type": "number", "minimum": 0, "maximum": 120}),
        // A dataset version: any u64 (the generated `int64` format would end at 2^63 - 1).
        ("query", "since") => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        ("path", "name") => {
            json!({"type": "string", "pattern": DATASET_PATTERN, "minLength": 1, "maxLength": MAX_NAME_LEN})
        }
        ("path", "key") => {
            json!({"type": "string", "pattern": KEY_PATTERN, "minLength": 1, "maxLength": MAX_KEY_LEN})
        }
        // Visible ASCII, as `publish::idempotency_key` reads it.
        ("header", n) if n.eq_ignore_ascii_case("idempotency-key") => json!({
            "type": "string", "pattern": "^[!-~]+$", "minLength": 1,
            "maxLength": crate::server::publish::MAX_IDEMPOTENCY_KEY
        }),
        ("header", n)
            if n.eq_ignore_ascii_case("if-match") || n.eq_ignore_ascii_case("if-none-match") =>
        {
            json!({"type": "string", "pattern": ETAGS_PATTERN})
        }
        _ => return None,
    })
}

/// Property rules of the request bodies' component schemas: (schema, property, rule).
fn property_rules() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("PublishRequest", "channel", channel()),
        (
            "PublishRequest",
            "type",
            json!({"type": ["string", "null"], "pattern": TYPE_PATTERN, "minLength": 1, "maxLength": MAX_TYPE_LEN}),
        ),
        ("CreateRequest", "channels", patterns(MAX_CHANNELS)),
        (
            "CreateRequest",
            "url",
            json!({"type": "string", "minLength": 1, "maxLength": MAX_URL_LEN}),
        ),
        (
            "CreateRequest",
            "filter",
            json!({"type": ["string", "null"], "maxLength": MAX_FILTER_LEN}),
        ),
        ("PatchRequest", "channels", {
            let mut p = patterns(MAX_CHANNELS);
            p["type"] = json!(["array", "null"]);
            p
        }),
        (
            "PatchRequest",
            "url",
            json!({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_URL_LEN}),
        ),
    ]
}

/// Writes the rules into a serialised document (`paths` and `components.schemas`), keeping
/// each replaced schema's description.
pub fn apply(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                    continue;
                };
                for p in params {
                    let location = p["in"].as_str().unwrap_or_default().to_owned();
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    if let Some(schema) = parameter_schema(&location, &name) {
                        p["schema"] = schema;
                    }
                }
            }
        }
    }
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (schema, property, mut rule) in property_rules() {
        let Some(slot) = schemas
            .get_mut(schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(property))
        else {
            continue;
        };
        if let Some(d) = slot.get("description") {
            rule["description"] = d.clone();
        }
        *slot = rule;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Channel, Pattern};
    use crate::datasets::{DatasetName, Key};
    use regex::Regex;

    /// Each pattern accepts exactly what its validator accepts, on the inputs that tell them
    /// apart. (The `regex` crate has no look-ahead; those two rules are checked without it.)
    #[test]
    fn patterns_agree_with_the_validators() {
        let channel = Regex::new(CHANNEL_PATTERN).unwrap();
        let pattern = Regex::new(PATTERN_PATTERN).unwrap();
        let dataset = Regex::new(DATASET_PATTERN).unwrap();
        let key = Regex::new(&KEY_PATTERN.replace(r"(?!\.{1,2}$)", "")).unwrap();
        for s in [
            "a",
            "chat.room42",
            "a.b.c",
            "x-y_z:1@2~3",
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "é",
            "*",
            ">",
            "a.*",
            "a.>",
            "*.b",
            "a.>.b",
            "a*",
            "a.b>",
            "a.*.>",
            ">.a",
            "a\n",
        ] {
            assert_eq!(
                channel.is_match(s),
                Channel::parse(s).is_ok(),
                "channel {s:?}"
            );
            assert_eq!(
                pattern.is_match(s),
                Pattern::parse(s).is_ok(),
                "pattern {s:?}"
            );
            assert_eq!(
                dataset.is_match(s),
                DatasetName::parse(s).is_ok(),
                "dataset {s:?}"
            );
            let key_ok = key.is_match(s) && s != "." && s != "..";
            assert_eq!(key_ok, Key::parse(s).is_ok(), "key {s:?}");
        }
        let etags = Regex::new(ETAGS_PATTERN).unwrap();
        for ok in ["*", "\"1\"", "W/\"1\", \"2\"", "", " "] {
            assert!(etags.is_match(ok), "{ok:?}");
        }
        for bad in ["null", "1", "\"1", "W/1", "*, \"1\""] {
            assert!(!etags.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_document_carries_the_rules() {
        let doc = crate::server::openapi::document_json().clone();
        let latest = &doc["paths"]["/v1/channels/{channel}/latest"]["get"]["parameters"];
        let channel = latest
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "channel")
            .unwrap();
        assert_eq!(channel["schema"]["pattern"], CHANNEL_PATTERN);
        let publish = &doc["components"]["schemas"]["PublishRequest"]["properties"]["channel"];
        assert_eq!(publish["maxLength"], MAX_CHANNEL_LEN);
        let hooks = &doc["components"]["schemas"]["CreateRequest"]["properties"]["channels"];
        assert_eq!(hooks["minItems"], 1);
    }
}
