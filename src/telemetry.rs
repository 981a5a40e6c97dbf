//! Logging: `tracing` to stderr, level from `RUST_LOG` (default `info`), JSON lines when
//! `SSEPUSH_LOG_FORMAT=json` (what log shippers want in production), colour only on a terminal
//! and never when `NO_COLOR` is set (<https://no-color.org>).
//!
//! Logging is best-effort and never stops the service. Supervisors pipe a server's stderr
//! (systemd, Kubernetes, docker, `| head`), and that reader can stall or go away at any moment:
//! so lines are handed to a bounded queue drained by one background thread
//! (`tracing-appender`'s non-blocking writer in lossy mode) — a full queue drops the line
//! instead of blocking a request or the shutdown path — and the thread ignores write errors
//! (`EPIPE` once the reader is gone) instead of panicking. The thread writes what it found
//! queued in one `write` (up to 64 KiB at a time) rather than one per line: a server logging a
//! line per request spent ~5 % of its CPU in those system calls (the proxy under handoff
//! churn). `tracing-subscriber`'s own report of
//! a failed write (an `eprintln!`, which panics when stderr is broken) is turned off for the
//! same reason.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines queued for the log thread before new ones are dropped (each is one formatted event).
const QUEUED_LINES: usize = 16_384;

/// Most bytes the log thread gathers before writing them out.
const BATCH_BYTES: usize = 64 << 10;

/// What the log thread writes to: stderr, one `write` per batch of lines (the thread flushes
/// after each batch it drains from the queue). Errors are ignored; the batch is dropped.
struct Batched {
    buf: Vec<u8>,
    out: std::io::Stderr,
}

impl std::io::Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + line.len() > BATCH_BYTES {
            self.flush()?;
        }
        self.buf.extend_from_slice(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let _ = self.out.write_all(&self.buf);
            self.buf.clear();
        }
        Ok(())
    }
}

/// Keeps the log thread running; dropping it flushes what is queued (waiting at most a second,
/// so a stalled reader cannot hold up the exit). Hold it for the life of the process.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

/// Whether to colour logs: only on a terminal, and never when `NO_COLOR` is set to a non-empty
/// value (the no-color.org convention).
pub fn use_ansi(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the servers' subscriber at `default_level` unless `RUST_LOG` says otherwise.
/// Does nothing (and returns an inert guard) when a subscriber is already installed.
pub fn init_with_level(default_level: &str) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("SSEPUSH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = use_ansi(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("ssepush-log")
        .finish(Batched {
            buf: Vec::with_capacity(BATCH_BYTES),
            out: std::io::stderr(),
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(writer);
    let installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}

/// [`init_with_level`] at `info`: what every server runs with.
pub fn init() -> LogGuard {
    init_with_level("info")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_colour_off_even_on_a_terminal() {
        assert!(use_ansi(true, None));
        assert!(
            use_ansi(true, Some("".as_ref())),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_ansi(true, Some("1".as_ref())));
        assert!(!use_ansi(false, None));
    }
}
