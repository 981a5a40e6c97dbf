//! Fuzz target `sse_parser`: see [`ssepush_fuzz::harness::sse_parser`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::sse_parser(data));
