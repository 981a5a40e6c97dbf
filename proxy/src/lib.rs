//! The ssepush push proxy: a phone about to sleep hands its SSE stream over; the proxy watches
//! the origin for it and wakes it through APNs, FCM or Web Push when an event it cares about
//! arrives; the phone resumes from its last event id and takes the stream back.
//!
//! Two layers:
//!
//! * [`protocol`] (always built) — every wire shape as serde types: the handoff request and its
//!   answers, the catch-up events with the gap marker, each platform's wake payload. Clients
//!   depend on the crate with `default-features = false` to get exactly this.
//! * the server (feature `server`, on by default):
//!   * [`push`] — the push providers behind one small trait.
//!   * [`settings`] — the proxy's settings (TOML + `SSEPUSH_PROXY_…` env).
//!   * [`handoff`] — the handoff request's validation, tokens and the per-handoff state machine.
//!   * [`buffer`] — the bounded per-handoff event buffer with gap reporting.
//!   * [`wake`] — the wake policy (coalescing, one outstanding wake, budgets, retries) as plain
//!     code.
//!   * [`upstream`] — the reconnect policy, one SSE connection, shared watchers.
//!   * [`retry_after`] — `Retry-After` (delta-seconds or HTTP-date) as plain code.
//!   * [`live`] — a live handoff on its node and its wake driver.
//!   * [`store`] — the handoff store trait and its in-memory backend.
//!   * [`api`], [`server`] — the HTTP API and `run(listener, settings, providers, shutdown)`.
#![forbid(unsafe_code)]

pub mod protocol;

#[cfg(feature = "server")]
pub mod push;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod buffer;
#[cfg(feature = "server")]
pub mod handoff;
#[cfg(feature = "server")]
pub mod live;
#[cfg(feature = "server")]
pub mod retry_after;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod upstream;
#[cfg(feature = "server")]
pub mod wake;
