//! The ssepush push proxy: a phone about to sleep hands its SSE stream over; the proxy watches
//! the origin for it and wakes it through APNs, FCM or Web Push when an event it cares about
//! arrives; the phone resumes from its last event id and takes the stream back.
//!
//! Two layers:
//!
//! * [`protocol`] (always built) — every wire shape as serde types: the handoff request and its
//!   answers, the catch-up events with the gap marker, each platform's wake payload. Clients
//!   depend on the crate with `default-features = false` to get exactly this.
//! * the server (feature `server`, on by default), read top to bottom as a staircase: each
//!   module uses only modules below it.
//!   1. [`server`] — `run(listener, settings, providers, shutdown)`.
//!   2. [`api`] — the HTTP handlers; [`openapi`] their document; [`sweep`] the sweeper;
//!      [`fleet`] — leases, takeovers, rebalancing and the drain on a shared store.
//!   3. [`scheduler`] — the node's one task that asks due and changed handoffs: wakes,
//!      expiry, teardown.
//!   4. [`node`] — [`node::Node`], what handlers and the scheduler share, and the one teardown
//!      path.
//!   5. [`auth`] — who may create handoffs.
//!   6. [`live`] — a live handoff's hot state; [`cursor`] — the one owner of its position.
//!   7. [`upstream`] — shared watchers, lingering when idle; [`replay`] — a watcher's ring of
//!      recent events; [`connector`] — one connection and the read loop;
//!      [`reconnect`] — the reconnect policy; [`verdicts`] — filter verdicts per event.
//!   8. [`handoff`] — request validation and the state machine; [`allow`] — allowed origins;
//!      [`token`] — ids and tokens.
//!   9. [`settings`], [`store`], [`buffer`], [`wake`] (the wake policy), [`schedule`] (when
//!      each handoff is next due), [`retry_after`], [`push`] (the providers).
#![forbid(unsafe_code)]

pub mod protocol;

#[cfg(feature = "server")]
pub mod allow;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod buffer;
#[cfg(feature = "server")]
pub mod connector;
#[cfg(feature = "server")]
pub mod cursor;
#[cfg(feature = "server")]
pub mod fleet;
#[cfg(feature = "server")]
pub mod handoff;
#[cfg(feature = "server")]
pub mod live;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod openapi;
#[cfg(feature = "server")]
pub mod push;
#[cfg(feature = "server")]
pub mod reconnect;
#[cfg(feature = "server")]
pub mod replay;
#[cfg(feature = "server")]
pub mod retry_after;
#[cfg(feature = "server")]
pub mod schedule;
#[cfg(feature = "server")]
pub mod scheduler;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod sweep;
#[cfg(feature = "server")]
pub mod token;
#[cfg(feature = "server")]
pub mod upstream;
#[cfg(feature = "server")]
pub mod verdicts;
#[cfg(feature = "server")]
pub mod wake;
