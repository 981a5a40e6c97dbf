//! The fuzz harnesses of ssepush, as plain functions over bytes: the libFuzzer targets in
//! `fuzz_targets/` call them, and the stable test `tests/system/fuzz_corpus.rs` replays the
//! committed corpus (`fuzz/corpus/<target>/`) through the very same functions.
#![forbid(unsafe_code)]

pub mod harness;
