//! Tests that assert on the origin's and the proxy's `/metrics`. Those render the
//! process-wide recorder, so every test here holds `support::metrics_exclusive()` for its
//! whole run: no other server in this process records meanwhile, and what a test reads is its
//! own servers' doing. (The gateway's metrics are its own; its tests live in `system`.)
//! `cargo test --test metrics`.

#[path = "../support/mod.rs"]
mod support;

mod origin_slow_consumer;
mod origin_webhooks;
mod origin_ws;
mod proxy_fanout;
