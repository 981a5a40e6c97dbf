//! Fuzz target `url_policy`: see [`ssepush_fuzz::harness::url_policy`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::url_policy(data));
