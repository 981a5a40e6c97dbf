//! The fuzz harnesses on the stable toolchain: every committed input under
//! `fuzz/corpus/<target>/` (seeds, and every crash found, kept as a regression input) goes through
//! the same function the libFuzzer target calls (`fuzz/src/harness.rs`, included here). Keeps the
//! targets compiling and their properties true between fuzzing runs; the runs themselves are
//! `cargo +nightly fuzz run <target>` (README "Reliability and security").

#[allow(dead_code)]
#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::path::PathBuf;

/// Runs `harness` over every file of `fuzz/corpus/<target>/` (the committed seeds and
/// regression inputs, plus whatever local fuzzing runs added); at least one must exist.
fn replay(target: &str, harness: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        // A tokio worker's stack (2 MiB), as the servers give a request: the filter depth limit
        // keeps the CEL parser's recursion inside it even unoptimised (25 nested `{` once
        // overflowed it; see README "Reliability and security").
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || harness(&bytes))
            .unwrap()
            .join();
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn sse_parser_corpus() {
    replay("sse_parser", harness::sse_parser);
}

#[test]
fn channel_pattern_corpus() {
    replay("channel_pattern", harness::channel_pattern);
}

#[test]
fn cel_filter_corpus() {
    replay("cel_filter", harness::cel_filter);
}

#[test]
fn handoff_json_corpus() {
    replay("handoff_json", harness::handoff_json);
}

#[test]
fn webhook_json_corpus() {
    replay("webhook_json", harness::webhook_json);
}

#[test]
fn ws_message_corpus() {
    replay("ws_message", harness::ws_message);
}

#[test]
fn url_policy_corpus() {
    replay("url_policy", harness::url_policy);
}
