//! What an app developer uses to talk to ssepush from Rust — and what every tool in this
//! package uses too. It imports nothing from the simulated gateway or the device simulator
//! (they depend on it, never the reverse); the wire shapes are those of `docs/protocol.md`.
//!
//! * [`http`] — the HTTP client they all use: the product's outbound TLS, plus an extra CA.
//! * [`origin`] — the origin: publish, and a subscription that resumes exactly across
//!   disconnects (`Last-Event-ID`, `retry:`, `Retry-After`, resets).
//! * [`proxy`] — the push proxy: hand a stream off, catch up from its buffer, hand it back.
//! * [`device`] — one phone's stream: the position bookkeeping over the two, for the whole
//!   stream → hand off → wake → catch up → hand back loop.
//! * [`wake`] — read the `ssepush` object of a wake, from each platform's payload.
//! * [`webpush`] — a Web Push subscription's keys and RFC 8291 decryption of what it receives.

pub mod device;
pub mod http;
pub mod origin;
pub mod proxy;
pub mod wake;
pub mod webpush;
