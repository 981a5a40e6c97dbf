//! The WebSocket's messages as plain values: a client's text frame parsed and checked into a
//! [`Command`] (the subscription parts by the shared parser, [`crate::server::subscription`]),
//! and the server's `error` and `event` frames.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::channel::PatternSet;
use crate::event::{EventId, NewEvent};
use crate::filter::Filter;
use crate::server::subscription::{Form, SubscriptionRequest, compile_filter};
use crate::service::error::ApiError;

/// Longest subscription id or `ref` accepted, in bytes.
pub const MAX_REF_LEN: usize = 128;

/// A client message that was understood.
#[derive(Debug)]
pub enum Command {
    Subscribe {
        id: String,
        patterns: PatternSet,
        filter: Option<Filter>,
        last_event_id: Option<EventId>,
    },
    Unsubscribe {
        id: String,
    },
    Filter {
        id: String,
        filter: Option<Filter>,
    },
    Publish {
        reference: Option<Value>,
        event: NewEvent,
    },
    Ping,
}

/// A client message that was refused: the error frame to send back, and the `ref` it answers
/// when one could be read.
#[derive(Debug)]
pub struct Rejection {
    pub reference: Option<Value>,
    pub error: ApiError,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubscribeMsg {
    id: String,
    channels: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    last_event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeMsg {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterMsg {
    id: String,
    filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishMsg {
    channel: String,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default, rename = "ref")]
    reference: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PingMsg {}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_message", message)
}

/// The `ref` an error about this message should carry: the subscription id, or a publish's
/// `ref`, if it is a short string or a number.
fn reference_of(obj: &Map<String, Value>) -> Option<Value> {
    let r = obj.get("id").or_else(|| obj.get("ref"))?;
    match r {
        Value::String(s) if s.len() <= MAX_REF_LEN => Some(r.clone()),
        Value::Number(_) => Some(r.clone()),
        _ => None,
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_REF_LEN {
        return Err(invalid(format!(
            "a subscription id is a string of 1 to {MAX_REF_LEN} bytes"
        )));
    }
    Ok(())
}

fn fields<T: serde::de::DeserializeOwned>(
    obj: Map<String, Value>,
    kind: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(obj)).map_err(|e| invalid(format!("{kind} message: {e}")))
}

/// Parses and validates one client text frame.
pub fn parse(text: &str) -> Result<Command, Rejection> {
    let value: Value = serde_json::from_str(text).map_err(|e| Rejection {
        reference: None,
        error: ApiError::bad_request("invalid_json", format!("message is not valid JSON: {e}")),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection {
            reference: None,
            error: invalid("a message is a JSON object with a \"type\""),
        });
    };
    let reference = reference_of(&obj);
    let reject = |error: ApiError| Rejection {
        reference: reference.clone(),
        error,
    };
    let kind = match obj.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err(reject(invalid("a message needs a string \"type\""))),
    };
    let command = match kind.as_str() {
        "subscribe" => {
            let m: SubscribeMsg = fields(obj, "subscribe").map_err(reject)?;
            check_id(&m.id).map_err(reject)?;
            let request = SubscriptionRequest::new(
                &m.channels,
                m.filter.as_deref(),
                m.last_event_id.as_deref(),
                Form::Json,
            )
            .map_err(reject)?;
            Command::Subscribe {
                id: m.id,
                patterns: request.patterns,
                filter: request.filter,
                last_event_id: request.cursor,
            }
        }
        "unsubscribe" => {
            let m: UnsubscribeMsg = fields(obj, "unsubscribe").map_err(reject)?;
            Command::Unsubscribe { id: m.id }
        }
        "filter" => {
            if !obj.contains_key("filter") {
                return Err(reject(invalid(
                    "filter message: give \"filter\": a CEL expression, or null to remove it",
                )));
            }
            let m: FilterMsg = fields(obj, "filter").map_err(reject)?;
            Command::Filter {
                id: m.id,
                filter: compile_filter(m.filter.as_deref()).map_err(reject)?,
            }
        }
        "publish" => {
            let m: PublishMsg = fields(obj, "publish").map_err(reject)?;
            let event = NewEvent::new(&m.channel, m.event_type.as_deref(), m.data)
                .map_err(|e| reject(e.into()))?;
            Command::Publish {
                reference: m.reference,
                event,
            }
        }
        "ping" => {
            let _: PingMsg = fields(obj, "ping").map_err(reject)?;
            Command::Ping
        }
        other => {
            return Err(reject(ApiError::bad_request(
                "unknown_type",
                format!(
                    "unknown message type {:?}: use subscribe, unsubscribe, filter, publish or ping",
                    other.chars().take(64).collect::<String>()
                ),
            )));
        }
    };
    Ok(command)
}

/// The error frame for a refused command.
pub fn error_frame(reference: Option<&Value>, error: &ApiError) -> Value {
    let mut frame = json!({"type": "error", "code": error.code, "message": error.message});
    if let Some(obj) = frame.as_object_mut() {
        if let Some(r) = reference {
            obj.insert("ref".into(), r.clone());
        }
        if let Some(Value::Object(extra)) = &error.details {
            obj.extend(extra.clone());
        }
    }
    frame
}

/// An event frame, around the event's shared JSON encoding.
pub fn event_frame(sub_json: &str, event_json: &[u8]) -> String {
    let event = String::from_utf8_lossy(event_json);
    let mut s = String::with_capacity(event.len() + sub_json.len() + 32);
    s.push_str(r#"{"type":"event","sub":"#);
    s.push_str(sub_json);
    s.push_str(r#","event":"#);
    s.push_str(&event);
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Rejection {
        match parse(text) {
            Err(r) => r,
            Ok(c) => panic!("{text} parsed as {c:?}"),
        }
    }

    #[test]
    fn subscribe_frames_parse_and_validate() {
        let c = parse(r#"{"type":"subscribe","id":"s1","channels":["chat.*","news"],"filter":"data.n > 1","lastEventId":"5-1"}"#).unwrap();
        match c {
            Command::Subscribe {
                id,
                patterns,
                filter,
                last_event_id,
            } => {
                assert_eq!(id, "s1");
                assert!(patterns.matches("chat.a") && patterns.matches("news"));
                assert_eq!(filter.unwrap().source(), "data.n > 1");
                assert_eq!(last_event_id, Some(EventId::new(5, 1)));
            }
            other => panic!("{other:?}"),
        }
        // Empty filter and cursor mean none.
        assert!(matches!(
            parse(r#"{"type":"subscribe","id":"s","channels":["a"],"filter":"","lastEventId":""}"#),
            Ok(Command::Subscribe {
                filter: None,
                last_event_id: None,
                ..
            })
        ));
        let r = rejected(r#"{"type":"subscribe","id":"s2","channels":["a.>.b"]}"#);
        assert_eq!(
            (r.error.code, r.reference),
            ("invalid_channel", Some(json!("s2")))
        );
        let r = rejected(r#"{"type":"subscribe","id":"s2","channels":[]}"#);
        assert_eq!(r.error.code, "missing_channel");
        let r = rejected(r#"{"type":"subscribe","id":"s3","channels":["a"],"filter":"data.x >"}"#);
        assert_eq!(r.error.code, "invalid_filter");
        let frame = error_frame(r.reference.as_ref(), &r.error);
        assert_eq!(frame["ref"], "s3");
        assert_eq!(frame["line"], 1);
        assert!(frame["column"].as_u64().unwrap() >= 8, "{frame}");
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":"s","channels":["a"],"lastEventId":"x"}"#)
                .error
                .code,
            "invalid_event_id"
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":"","channels":["a"]}"#)
                .error
                .code,
            "invalid_message"
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":"s","channels":["a"],"colour":1}"#)
                .error
                .code,
            "invalid_message"
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":7,"channels":["a"]}"#).reference,
            Some(json!(7))
        );
    }

    #[test]
    fn other_commands_parse() {
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(Command::Ping)));
        assert!(
            matches!(parse(r#"{"type":"unsubscribe","id":"s1"}"#), Ok(Command::Unsubscribe { id }) if id == "s1")
        );
        assert!(matches!(
            parse(r#"{"type":"filter","id":"s1","filter":null}"#),
            Ok(Command::Filter { filter: None, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"filter","id":"s1","filter":"type == 'x'"}"#),
            Ok(Command::Filter {
                filter: Some(_),
                ..
            })
        ));
        assert_eq!(
            rejected(r#"{"type":"filter","id":"s1"}"#).error.code,
            "invalid_message"
        );
        match parse(
            r#"{"type":"publish","channel":"a.b","eventType":"t","data":{"x":1},"ref":"p1"}"#,
        )
        .unwrap()
        {
            Command::Publish { reference, event } => {
                assert_eq!(reference, Some(json!("p1")));
                assert_eq!((event.channel.as_str(), event.kind.as_str()), ("a.b", "t"));
                assert_eq!(event.data, json!({"x": 1}));
            }
            other => panic!("{other:?}"),
        }
        let r = rejected(r#"{"type":"publish","channel":"a.*","ref":"p2"}"#);
        assert_eq!(
            (r.error.code, r.reference),
            ("invalid_channel", Some(json!("p2")))
        );
        assert_eq!(
            rejected(r#"{"type":"publish","channel":"a","eventType":"ssepush.x"}"#)
                .error
                .code,
            "invalid_event"
        );
    }

    #[test]
    fn garbage_gets_a_clear_error() {
        assert_eq!(rejected("{").error.code, "invalid_json");
        assert_eq!(rejected("[1]").error.code, "invalid_message");
        assert_eq!(rejected(r#"{"id":"s"}"#).error.code, "invalid_message");
        let r = rejected(r#"{"type":"shout","id":"s9"}"#);
        assert_eq!(
            (r.error.code, r.reference),
            ("unknown_type", Some(json!("s9")))
        );
        assert_eq!(
            rejected(r#"{"type":"ping","x":1}"#).error.code,
            "invalid_message"
        );
        let long = "x".repeat(MAX_REF_LEN + 1);
        assert_eq!(
            rejected(&format!(r#"{{"type":"unsubscribe","id":"{long}","x":1}}"#)).reference,
            None
        );
    }

    #[test]
    fn event_frames_wrap_the_shared_encoding() {
        let f = event_frame(r#""s\"1""#, br#"{"id":"1-0"}"#);
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            v,
            json!({"type": "event", "sub": "s\"1", "event": {"id": "1-0"}})
        );
    }
}
