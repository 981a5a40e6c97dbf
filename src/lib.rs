//! `ssepush`: the one binary's library side and the tester toolkit.
//!
//! * [`client`] — the origin client a Rust app uses: publish, and subscribe with exact resume.
//! * [`telemetry`] — logging setup shared by every subcommand.
//! * [`gateway`] — the simulated APNs / FCM / Web Push gateway (`ssepush gateway`).
//! * [`bench`] — `ssepush bench`: SSE fan-out, idle connections, handoffs and wake latency.
//! * [`device`] — the tester toolkit: device client, simulated fleet, publisher, report, demo.
//!
//! The servers themselves live in their crates (`ssepush-origin`); `main.rs` only parses flags
//! and calls their `run` functions.
#![forbid(unsafe_code)]

pub mod bench;
pub mod client;
pub mod device;
pub mod gateway;
pub mod telemetry;

pub use ssepush_origin as origin;
