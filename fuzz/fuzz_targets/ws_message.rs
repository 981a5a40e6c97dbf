//! Fuzz target `ws_message`: see [`ssepush_fuzz::harness::ws_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssepush_fuzz::harness::ws_message(data));
