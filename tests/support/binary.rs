//! The real `ssepush` binary as a test server: started with its stderr piped, on port 0,
//! found by the address it logs. For what only the binary shows: signals, a log reader that
//! goes away, start-up refusals, a fresh process's `/metrics`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr};

/// The grace period every server started here is given.
pub const GRACE_SECS: u64 = 3;

/// A running `ssepush` server process; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `host:port` the server bound.
    pub addr: String,
    /// The read end of the server's stderr, still open (None once the test closed it).
    pub stderr: Option<tokio::io::Lines<BufReader<ChildStderr>>>,
    /// A directory the server uses, kept for its life.
    pub _dir: Option<std::path::PathBuf>,
}

/// Starts `ssepush ARGS…` with stderr piped and debug logging (so every request writes log
/// lines), and reads stderr until the server names the address it bound.
pub async fn start(args: &[&str], env: &[(&str, &str)], dir: Option<std::path::PathBuf>) -> Server {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"));
    cmd.args(args)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // The origin and the proxy log `addr=`, the gateway its `url=http://…`.
            for key in ["addr=", "url=http://"] {
                if let Some(rest) = line.split(key).nth(1) {
                    let addr = rest.split_whitespace().next().unwrap();
                    if !addr.ends_with(":0") {
                        return addr.trim_matches('"').to_owned();
                    }
                }
            }
        }
        panic!("{args:?} exited before listening");
    })
    .await
    .expect("the server did not start");
    Server {
        child,
        addr,
        stderr: Some(lines),
        _dir: dir,
    }
}

/// Drops the read end of the server's stderr: its next log write gets `EPIPE`.
pub fn close_log_reader(server: &mut Server) {
    drop(server.stderr.take());
}

/// The grace period as a setting's value.
pub fn grace() -> String {
    GRACE_SECS.to_string()
}

/// `ssepush origin` on port 0 with the short grace period.
pub async fn origin() -> Server {
    start(
        &["origin", "--listen", "127.0.0.1:0"],
        &[("SSEPUSH_ORIGIN_SHUTDOWN_GRACE_SECS", &grace())],
        None,
    )
    .await
}

/// `ssepush proxy` on port 0 with the short grace period.
pub async fn proxy() -> Server {
    start(
        &["proxy", "--listen", "127.0.0.1:0"],
        &[("SSEPUSH_PROXY_SHUTDOWN_GRACE_SECS", &grace())],
        None,
    )
    .await
}

/// `ssepush gateway` on port 0 with its credentials in a fresh temporary directory.
pub async fn gateway() -> Server {
    let dir = std::env::temp_dir().join(format!(
        "ssepush-signals-gw-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let dir_arg = dir.to_str().unwrap().to_owned();
    start(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--credentials-dir",
            &dir_arg,
        ],
        &[],
        Some(dir),
    )
    .await
}
