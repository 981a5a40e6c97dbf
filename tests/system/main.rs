//! Whole-system tests: the product's real servers on ephemeral loopback ports, real Redis,
//! real HTTP/2 to the simulated gateway, the real binary. One test binary (each links the
//! whole product), one module per area; run one area with
//! `cargo test --test system origin_sse::` or one test by a part of its name.

#[path = "../support/mod.rs"]
mod support;

mod admin_listener;
mod conditional_requests;
mod cors;
mod device_run;
mod fuzz_corpus;
mod gateway;
mod openapi;
mod origin_auth;
mod origin_cursor;
mod origin_datasets;
mod origin_faults;
mod origin_latest;
mod origin_poll;
mod origin_readers;
mod origin_resume;
mod origin_shutdown;
mod origin_sse;
mod origin_static_filters;
mod origin_webhooks;
mod origin_ws;
mod proxy_gateway;
mod proxy_handoff;
mod proxy_upstream;
mod push_providers;
mod sample_configs;
mod slow_requests;
mod sse_clients;
