//! Tests in a real headless Chromium, driven over the DevTools protocol
//! (`support/browser.rs`): the origin's console page and the web client's whole loop. They
//! need Chromium (and Node.js with npm for the web client; `cargo xtask test` installs what is
//! missing) and fail, never skip, without them. `cargo test --test browser`.

#[path = "../support/mod.rs"]
mod support;

mod origin_console;
mod web_client;
