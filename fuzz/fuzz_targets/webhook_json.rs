//! Fuzz target `webhook_json`: see [`ssepush_fuzz::harness::webhook_json`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::webhook_json(data));
