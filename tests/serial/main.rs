//! Tests that read process-wide state: the origin's and the proxy's `/metrics` (they render
//! one recorder per process) and the process's own sockets. Every test here holds
//! `crate::support::exclusive()` for its whole run, so no other test runs in this process meanwhile
//! and what a test reads is its own servers' doing. (The gateway's metrics are its own; its
//! tests live in `system`.) `cargo test --test serial`.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod filter_cost;
mod origin_redis;
mod origin_slow_consumer;
mod origin_webhooks;
mod origin_ws;
mod proxy_fanout;
mod sse_lean_path;
