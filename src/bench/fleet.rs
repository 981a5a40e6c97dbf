//! The parent's side of the subscriber workers: spawns `ssepush bench worker` child processes
//! (the running binary, re-executed), splits the connections between them so none holds more
//! than its open-file limit allows, and drives them through `open`, `close` and `finish`
//! (see [`super::worker`] for the protocol).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use super::worker::{FromWorker, WorkerSpec, WorkerTotals};

/// Descriptors a worker keeps for itself (stdio, the runtime, reqwest's resolver …) beside its
/// connections.
const RESERVED_FDS: u64 = 64;

/// The most connections one process can hold under an open-file limit of `limit`.
pub fn per_process_cap(limit: u64) -> usize {
    limit.saturating_sub(RESERVED_FDS).max(1) as usize
}

/// `total` split into `workers` near-equal shares (the first ones one larger).
pub fn split(total: usize, workers: usize) -> Vec<usize> {
    let workers = workers.max(1);
    (0..workers)
        .map(|i| total / workers + usize::from(i < total % workers))
        .collect()
}

/// Opening results summed over the workers.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    pub connected: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    messages: mpsc::UnboundedReceiver<FromWorker>,
    received: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// Running child workers.
pub struct Fleet {
    workers: Vec<Worker>,
}

impl Fleet {
    /// Spawns `ceil(total / per_process)` workers sharing `total` connections of `spec`.
    ///
    /// Errors: the binary cannot be re-executed.
    pub fn spawn(spec: &WorkerSpec, total: usize, per_process: usize) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("locating the ssepush binary")?;
        let count = total.div_ceil(per_process.max(1)).max(1);
        let mut workers = Vec::with_capacity(count);
        for share in split(total, count) {
            let spec = WorkerSpec {
                connections: share,
                ..spec.clone()
            };
            let mut child = tokio::process::Command::new(&exe)
                .args(["bench", "worker", "--spec", &serde_json::to_string(&spec)?])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let (tx, messages) = mpsc::unbounded_channel();
            let received = Arc::new(AtomicU64::new(0));
            let dropped = Arc::new(AtomicU64::new(0));
            let (r, d) = (received.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<FromWorker>(&line) {
                        Ok(FromWorker::Progress { received, dropped }) => {
                            r.store(received, Ordering::Relaxed);
                            d.store(dropped, Ordering::Relaxed);
                        }
                        Ok(other) => {
                            if let FromWorker::Done(t) = &other {
                                r.store(t.received, Ordering::Relaxed);
                                d.store(t.dropped, Ordering::Relaxed);
                            }
                            let _ = tx.send(other);
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable worker line"),
                    }
                }
            });
            workers.push(Worker {
                child,
                stdin,
                messages,
                received,
                dropped,
            });
        }
        Ok(Fleet { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The workers' process ids (to read their own CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Stamped events received so far, over every worker (updated every 200 ms).
    pub fn received(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.received.load(Ordering::Relaxed))
            .sum()
    }

    /// Subscribers whose stream ended while open, so far.
    pub fn dropped(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.dropped.load(Ordering::Relaxed))
            .sum()
    }

    async fn command(&mut self, cmd: &str) -> anyhow::Result<()> {
        for w in &mut self.workers {
            w.stdin
                .write_all(format!("{cmd}\n").as_bytes())
                .await
                .context("a worker exited")?;
            w.stdin.flush().await?;
        }
        Ok(())
    }

    async fn next(w: &mut Worker) -> anyhow::Result<FromWorker> {
        match w.messages.recv().await {
            Some(m) => Ok(m),
            None => bail!(
                "a worker exited early ({:?})",
                w.child.try_wait().ok().flatten()
            ),
        }
    }

    /// Every worker opens its connections; returns when all are connected or failed.
    pub async fn open(&mut self) -> anyhow::Result<Opened> {
        self.command("open").await?;
        let mut sum = Opened::default();
        for w in &mut self.workers {
            match Self::next(w).await? {
                FromWorker::Opened {
                    connected,
                    failed,
                    first_error,
                } => {
                    sum.connected += connected;
                    sum.failed += failed;
                    if sum.first_error.is_none() {
                        sum.first_error = first_error;
                    }
                }
                other => bail!("unexpected worker message {other:?}"),
            }
        }
        Ok(sum)
    }

    /// Every worker closes its connections.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        self.command("close").await?;
        for w in &mut self.workers {
            match Self::next(w).await? {
                FromWorker::Closed => {}
                other => bail!("unexpected worker message {other:?}"),
            }
        }
        Ok(())
    }

    /// Ends the workers and collects their counts.
    pub async fn finish(mut self) -> anyhow::Result<Vec<WorkerTotals>> {
        self.command("finish").await?;
        let mut all = Vec::with_capacity(self.workers.len());
        for w in &mut self.workers {
            loop {
                match Self::next(w).await? {
                    FromWorker::Done(t) => {
                        all.push(t);
                        break;
                    }
                    FromWorker::Opened { .. } | FromWorker::Closed => {}
                    FromWorker::Progress { .. } => {}
                }
            }
            let _ = w.child.wait().await;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (total, workers) in [(10, 3), (7, 7), (3, 5), (20_000, 2), (0, 1)] {
            let s = split(total, workers);
            assert_eq!(s.len(), workers);
            assert_eq!(s.iter().sum::<usize>(), total);
            assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
        }
        assert_eq!(per_process_cap(20_000), 19_936);
        assert_eq!(per_process_cap(10), 1);
    }
}
