//! Fuzz target `cel_filter`: see [`ssepush_fuzz::harness::cel_filter`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::cel_filter(data));
