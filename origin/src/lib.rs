//! The ssepush origin: the streaming API that phones, browsers and the push proxy read.
//!
//! The crate has two layers:
//!
//! * the **protocol** (always built): [`event`] (events and their totally ordered ids),
//!   [`channel`] (channel names and NATS-style patterns), [`sse`] (the wire format: encoding,
//!   and the WHATWG parser every reader uses), [`filter`] (CEL filters), [`conditional`]
//!   (RFC 9110 entity-tag preconditions), [`streams`] (static filter streams), [`store`]
//!   (the event-log trait and its in-memory backend), and [`datasets`] (data sync: versioned
//!   key/value maps, snapshots, deltas, preconditions, the dataset-store trait).
//!   The proxy and the device simulator depend on exactly this, with `default-features = false`.
//! * the **server** (feature `server`, on by default): the Redis event log, the subscription
//!   [`hub`](crate::hub) that fans events out, the HTTP API and the ops endpoints, driven by
//!   [`server::run`](crate::server::run).
#![forbid(unsafe_code)]

pub mod channel;
pub mod conditional;
pub mod datasets;
pub mod event;
pub mod filter;
pub mod sse;
pub mod store;
pub mod streams;

#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod webhooks;

pub use channel::{Channel, Pattern, PatternSet};
pub use event::{Event, EventId, NewEvent};
pub use filter::Filter;
