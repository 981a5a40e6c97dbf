//! The ssepush push proxy: a phone about to sleep hands its SSE stream over; the proxy watches
//! the origin for it and wakes it through APNs, FCM or Web Push when an event it cares about
//! arrives; the phone resumes from its last event id and takes the stream back.
//!
//! * [`push`] — the push providers behind one small trait.
//! * [`settings`] — the proxy's settings (TOML + `SSEPUSH_PROXY_…` env).
//! * [`handoff`] — the handoff request, its validation, tokens and the per-handoff state machine.
//! * [`buffer`] — the bounded per-handoff event buffer with gap reporting.
//! * [`wake`] — the wake policy (coalescing, one outstanding wake, budgets, retries) as plain code.
//! * [`upstream`] — the reconnect policy, one SSE connection, shared watchers.
//! * [`retry_after`] — `Retry-After` (delta-seconds or HTTP-date) as plain code.
//! * [`live`] — a live handoff on its node and its wake driver.
//! * [`store`] — the handoff store trait and its in-memory backend.
//! * [`api`], [`server`] — the HTTP API and `run(listener, settings, providers, shutdown)`.
#![forbid(unsafe_code)]

pub mod push;

pub mod api;
pub mod buffer;
pub mod handoff;
pub mod live;
pub mod retry_after;
pub mod server;
pub mod settings;
pub mod store;
pub mod upstream;
pub mod wake;
