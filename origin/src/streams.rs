//! Static filters: the operator's named streams, computed once at ingest
//! (`docs/configuration.md`, `streams`).
//!
//! A stream is configured as `[[streams]] name = "alerts-eu"  channels = ["sensors.>"]
//! filter = "data.severity >= 3"`. For every event a client publishes, each stream whose channel
//! patterns match and whose filter passes gets a **derived event** on its own channel
//! `streams.<name>`. [`StaticStreams::derive`] places each derived event right after its original
//! in the same batch, so the event log appends both atomically (one Redis script on Redis) and the
//! derived event's id is the next one after the original's: a stream is resumable with
//! `Last-Event-ID` exactly like any channel.
//!
//! What a derived event carries: the original's **type and data, unchanged**; only the channel
//! differs. That way a subscriber's code (and any dynamic filter over `type` and `data`) works
//! the same on a stream as on the source channels. The source channel is not carried: a stream
//! is the operator's curated view, and a client that needs the channel subscribes to the source
//! patterns with a dynamic filter instead.
//!
//! Rules that keep ingest simple and bounded:
//! * derived events are not fed back into derivation, so a stream over `>` never sees other
//!   streams' events and one publish can never fan out without bound;
//! * clients cannot publish to `streams.…` themselves ([`is_reserved`]); only derivation writes
//!   there;
//! * ids are assigned when the batch is appended, after derivation, so in a stream's filter `id`
//!   reads as `"0-0"`: stream filters select on `channel`, `type` and `data`.
//!
//! Cost: one [`EventVars`] per event (built only when some stream's patterns match) and one
//! evaluation per *distinct* filter source, its verdict shared by every stream using it.

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, PatternSet};
use crate::event::{Event, EventId, NewEvent};
use crate::filter::{EventVars, Filter, FilterError};

/// The channel prefix (first token) of every static stream.
pub const STREAMS_PREFIX: &str = "streams";
/// Most streams an origin may define; each costs work on every publish.
pub const MAX_STREAMS: usize = 256;

/// One `[[streams]]` entry of the origin's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    /// The stream's name: one channel token (letters, digits, `_ - : @ ~`); events go to
    /// `streams.<name>`.
    pub name: String,
    /// Channel patterns (NATS `*` / `>`) whose events the stream considers.
    pub channels: Vec<String>,
    /// Optional CEL filter over `channel`, `type` and `data`; without one every matching event
    /// is taken.
    #[serde(default)]
    pub filter: Option<String>,
}

/// A stream definition that cannot be used; the message names the stream and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("streams: more than {MAX_STREAMS} streams are defined")]
    TooMany,
    #[error(
        "stream {0:?}: a name is one channel token of letters, digits, '_', '-', ':', '@' or '~'"
    )]
    BadName(String),
    #[error("stream {0:?} is defined twice")]
    Duplicate(String),
    #[error("stream {0:?}: give at least one channel pattern")]
    NoChannels(String),
    #[error("stream {name:?}: {message}")]
    BadPattern { name: String, message: String },
    #[error("stream {name:?}: {source}")]
    BadFilter { name: String, source: FilterError },
}

/// True for channels only derivation may write: `streams.<anything>`.
pub fn is_reserved(channel: &str) -> bool {
    channel
        .strip_prefix(STREAMS_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

#[derive(Debug, Clone)]
struct Compiled {
    channel: Channel,
    patterns: PatternSet,
    /// Index into [`StaticStreams::filters`]; `None` takes every matching event.
    filter: Option<usize>,
}

/// The compiled streams of one origin. Build once at startup with [`StaticStreams::compile`].
#[derive(Debug, Clone, Default)]
pub struct StaticStreams {
    streams: Vec<Compiled>,
    /// Distinct filters, so streams sharing a filter share its verdict.
    filters: Vec<Filter>,
}

/// A batch ready to append: originals with their derived events right after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub events: Vec<NewEvent>,
    /// `original[i]` is true where `events[i]` is one the client published.
    pub original: Vec<bool>,
}

impl StaticStreams {
    /// Validates and compiles the definitions; the first problem found is the error.
    pub fn compile(defs: &[StreamDef]) -> Result<Self, StreamError> {
        if defs.len() > MAX_STREAMS {
            return Err(StreamError::TooMany);
        }
        let mut out = StaticStreams::default();
        for def in defs {
            let name = &def.name;
            if name.is_empty() || name.contains(['.', '*', '>']) {
                return Err(StreamError::BadName(name.clone()));
            }
            let channel = Channel::parse(&format!("{STREAMS_PREFIX}.{name}"))
                .map_err(|_| StreamError::BadName(name.clone()))?;
            if out.streams.iter().any(|s| s.channel == channel) {
                return Err(StreamError::Duplicate(name.clone()));
            }
            if def.channels.is_empty() {
                return Err(StreamError::NoChannels(name.clone()));
            }
            let patterns =
                PatternSet::parse_all(def.channels.iter().map(String::as_str)).map_err(|e| {
                    StreamError::BadPattern {
                        name: name.clone(),
                        message: e.to_string(),
                    }
                })?;
            let filter = match def.filter.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(src) => {
                    let f = Filter::compile(src).map_err(|source| StreamError::BadFilter {
                        name: name.clone(),
                        source,
                    })?;
                    Some(match out.filters.iter().position(|g| g == &f) {
                        Some(i) => i,
                        None => {
                            out.filters.push(f);
                            out.filters.len() - 1
                        }
                    })
                }
            };
            out.streams.push(Compiled {
                channel,
                patterns,
                filter,
            });
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Adds the derived events of `events`, each right after its original.
    pub fn derive(&self, events: Vec<NewEvent>) -> Derived {
        if self.streams.is_empty() {
            let original = vec![true; events.len()];
            return Derived { events, original };
        }
        let mut out = Vec::with_capacity(events.len());
        let mut original = Vec::with_capacity(events.len());
        // Verdicts of the distinct filters for the current event, computed on first use.
        let mut verdicts: Vec<Option<bool>> = vec![None; self.filters.len()];
        for event in events {
            let hits: Vec<&Compiled> = self
                .streams
                .iter()
                .filter(|s| s.patterns.matches(event.channel.as_str()))
                .collect();
            let mut derived = Vec::new();
            if !hits.is_empty() {
                let probe = Event {
                    id: EventId::ZERO,
                    channel: event.channel.to_string(),
                    kind: event.kind.clone(),
                    data: event.data.clone(),
                    time: 0,
                };
                // Built lazily: streams without a filter need no CEL values at all.
                let mut vars: Option<EventVars> = None;
                verdicts.iter_mut().for_each(|v| *v = None);
                for s in hits {
                    let pass = match s.filter {
                        None => true,
                        Some(i) => *verdicts[i].get_or_insert_with(|| {
                            let vars = vars.get_or_insert_with(|| EventVars::new(&probe));
                            self.filters[i].matches(vars)
                        }),
                    };
                    if pass {
                        derived.push(NewEvent {
                            channel: s.channel.clone(),
                            kind: event.kind.clone(),
                            data: event.data.clone(),
                        });
                    }
                }
            }
            out.push(event);
            original.push(true);
            original.extend(std::iter::repeat_n(false, derived.len()));
            out.extend(derived);
        }
        Derived {
            events: out,
            original,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(name: &str, channels: &[&str], filter: Option<&str>) -> StreamDef {
        StreamDef {
            name: name.into(),
            channels: channels.iter().map(|s| s.to_string()).collect(),
            filter: filter.map(Into::into),
        }
    }

    fn ev(channel: &str, data: serde_json::Value) -> NewEvent {
        NewEvent::new(channel, Some("reading"), data).unwrap()
    }

    fn channels(d: &Derived) -> Vec<String> {
        d.events.iter().map(|e| e.channel.to_string()).collect()
    }

    #[test]
    fn matching_events_get_a_derived_copy_right_after_them() {
        let s = StaticStreams::compile(&[
            def(
                "alerts-eu",
                &["sensors.>"],
                Some("data.severity >= 3 && data.region == 'eu'"),
            ),
            def("all-sensors", &["sensors.*"], None),
        ])
        .unwrap();
        let d = s.derive(vec![
            ev("sensors.t1", json!({"severity": 4, "region": "eu"})),
            ev("sensors.a.b", json!({"severity": 1, "region": "eu"})),
            ev("chat.x", json!({"severity": 9, "region": "eu"})),
            ev("sensors.t2", json!({"severity": 5, "region": "us"})),
        ]);
        assert_eq!(
            channels(&d),
            [
                "sensors.t1",
                "streams.alerts-eu",
                "streams.all-sensors",
                "sensors.a.b",
                "chat.x",
                "sensors.t2",
                "streams.all-sensors",
            ]
        );
        assert_eq!(d.original, [true, false, false, true, true, true, false]);
        // Type and data travel unchanged.
        assert_eq!(d.events[1].kind, "reading");
        assert_eq!(d.events[1].data, json!({"severity": 4, "region": "eu"}));
    }

    #[test]
    fn streams_sharing_a_filter_share_one_compiled_program() {
        let s = StaticStreams::compile(&[
            def("a", &["x"], Some("data > 1")),
            def("b", &["x"], Some("data > 1")),
            def("c", &["x"], Some("data > 5")),
        ])
        .unwrap();
        assert_eq!(s.filters.len(), 2);
        let d = s.derive(vec![ev("x", json!(3))]);
        assert_eq!(channels(&d), ["x", "streams.a", "streams.b"]);
    }

    #[test]
    fn no_streams_is_the_identity() {
        let s = StaticStreams::compile(&[]).unwrap();
        let d = s.derive(vec![ev("a", json!(1)), ev("b", json!(2))]);
        assert_eq!(channels(&d), ["a", "b"]);
        assert_eq!(d.original, [true, true]);
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let err = |d: StreamDef| StaticStreams::compile(&[d]).unwrap_err();
        assert!(matches!(
            err(def("a.b", &["x"], None)),
            StreamError::BadName(_)
        ));
        assert!(matches!(
            err(def("", &["x"], None)),
            StreamError::BadName(_)
        ));
        assert!(matches!(
            err(def("a b", &["x"], None)),
            StreamError::BadName(_)
        ));
        assert!(matches!(
            err(def("a", &[], None)),
            StreamError::NoChannels(_)
        ));
        assert!(matches!(
            err(def("a", &["x.>.y"], None)),
            StreamError::BadPattern { .. }
        ));
        let e = err(def("a", &["x"], Some("data.x >")));
        let StreamError::BadFilter { source, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(source.line, 1);
        assert!(e.to_string().contains("column"), "{e}");
        let dup = StaticStreams::compile(&[def("a", &["x"], None), def("a", &["y"], None)]);
        assert!(matches!(dup, Err(StreamError::Duplicate(_))));
    }

    #[test]
    fn only_streams_channels_are_reserved() {
        assert!(is_reserved("streams.a"));
        assert!(is_reserved("streams.a.b"));
        assert!(!is_reserved("streams"));
        assert!(!is_reserved("streamsx.a"));
        assert!(!is_reserved("chat.streams"));
    }
}
