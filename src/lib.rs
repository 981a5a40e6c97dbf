//! `ssepush`: the one binary's library side and the tester toolkit.
//!
//! * [`client`] — what a Rust app uses: the origin client (publish, subscribe with exact
//!   resume), the proxy client (hand off, catch up, hand back), wake parsing per platform and
//!   Web Push decryption. It imports nothing from the gateway or the device simulator.
//! * [`telemetry`] — logging setup shared by every subcommand.
//! * [`gateway`] — the simulated APNs / FCM / Web Push gateway (`ssepush gateway`).
//! * [`bench`] — `ssepush bench`: SSE fan-out, idle connections, handoffs and wake latency.
//! * [`device`] — the tester toolkit: simulated fleet, publisher, report, the in-process stack
//!   and the demo.
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
