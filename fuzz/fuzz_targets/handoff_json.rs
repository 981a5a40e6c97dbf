//! Fuzz target `handoff_json`: see [`ssepush_fuzz::harness::handoff_json`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::handoff_json(data));
