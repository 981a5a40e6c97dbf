//! The event announcing each applied change on `datasets.<name>`.

use serde_json::Value;

use super::name::DatasetName;
use super::write::Applied;
use crate::event::NewEvent;

/// Event type of a put.
pub const PUT_TYPE: &str = "dataset.put";
/// Event type of a delete.
pub const DELETE_TYPE: &str = "dataset.delete";

/// The event announcing an applied change on `datasets.<name>`.
pub fn change_event(name: &DatasetName, applied: &Applied) -> NewEvent {
    let mut data = serde_json::Map::new();
    data.insert("key".into(), Value::String(applied.key.as_str().to_owned()));
    if let Some(v) = &applied.value {
        data.insert("value".into(), v.clone());
    }
    data.insert("version".into(), Value::from(applied.version));
    NewEvent {
        channel: name.channel(),
        kind: if applied.value.is_some() {
            PUT_TYPE
        } else {
            DELETE_TYPE
        }
        .to_owned(),
        data: Value::Object(data),
    }
}

#[cfg(test)]
mod tests {
    use super::super::name::Key;
    use super::*;
    use serde_json::json;

    #[test]
    fn change_events_carry_key_value_and_version() {
        let name = DatasetName::parse("prefs").unwrap();
        let put = Applied {
            key: Key::parse("theme").unwrap(),
            version: 3,
            value: Some(json!("dark")),
            created: true,
        };
        let e = change_event(&name, &put);
        assert_eq!(e.channel.as_str(), "datasets.prefs");
        assert_eq!(e.kind, PUT_TYPE);
        assert_eq!(
            e.data,
            json!({"key": "theme", "value": "dark", "version": 3})
        );
        let del = Applied {
            value: None,
            created: false,
            ..put
        };
        let e = change_event(&name, &del);
        assert_eq!(e.kind, DELETE_TYPE);
        assert_eq!(e.data, json!({"key": "theme", "version": 3}));
    }
}
