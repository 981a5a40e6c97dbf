//! Fuzz target `channel_pattern`: see [`ssepush_fuzz::harness::channel_pattern`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::channel_pattern(data));
