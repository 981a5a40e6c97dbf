//! What one test's servers log, and nothing else: a `tracing` subscriber set as the default
//! of the test's own thread. A `#[tokio::test]` runtime (current-thread, the default flavour)
//! runs every task it spawns — servers, connections, drivers — on that thread, so the
//! capture sees exactly this test's servers even while other tests run in the same binary.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The most bytes kept (the oldest go first): tests assert on recent lines only.
const MAX_BYTES: usize = 16 << 20;

/// A capture, active until dropped. Use only in current-thread tests.
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

/// Captures this thread's log lines that pass `filter` (an `EnvFilter` directive, e.g.
/// `ssepush_proxy=trace,info`).
pub fn capture(filter: &str) -> Logs {
    let buf = Arc::new(Mutex::new(Vec::new()));
    struct W(Arc<Mutex<Vec<u8>>>);
    impl Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut buf = self.0.lock().unwrap();
            buf.extend_from_slice(b);
            if buf.len() > MAX_BYTES {
                let excess = buf.len() - MAX_BYTES;
                buf.drain(..excess);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(move || W(writer.clone()))
        .finish();
    Logs {
        buf,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Logs {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}
