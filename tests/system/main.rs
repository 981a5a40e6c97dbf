//! Whole-system tests: the product's real servers on ephemeral loopback ports, real Redis,
//! real HTTP/2 to the simulated gateway, the real binary. One test binary (each links the
//! whole product), one module per area; run one area with
//! `cargo test --test system origin_sse::` or one test by a part of its name.

#[path = "../support/mod.rs"]
mod support;

mod admin_listener;
mod cli;
mod conditional_requests;
mod config_errors;
mod cors;
mod deploy;
mod device_run;
mod egress_policy;
mod filter_cost;
mod fuzz_corpus;
mod gateway;
mod http_conventions;
mod metrics;
mod openapi;
mod origin_auth;
mod origin_cursor;
mod origin_datasets;
mod origin_faults;
mod origin_latest;
mod origin_nodes;
mod origin_poll;
mod origin_readers;
mod origin_resume;
mod origin_shutdown;
mod origin_sse;
mod origin_static_filters;
mod origin_webhooks;
mod origin_ws;
mod proxy_budgets;
mod proxy_faults;
mod proxy_fleet;
mod proxy_gateway;
mod proxy_handoff;
mod proxy_upstream;
mod proxy_watchers;
mod push_providers;
mod readme;
mod redis_cluster;
mod sample_configs;
mod signals;
mod slow_requests;
mod sse_clients;
mod tls;
