//! What the benchmarks read about a server process from Linux's `/proc` (proc(5)): its CPU
//! time (`utime + stime` of `/proc/<pid>/stat`, every thread's, dead ones included) and its
//! resident set (`VmRSS` of `/proc/<pid>/status`). The parsing is plain code over the files'
//! text; only [`sample`] reads them.

use std::sync::OnceLock;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time consumed so far (clock-tick resolution, 10 ms on Linux).
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
///
/// Errors: the process does not exist (or is not ours to read), or the files are not in the
/// format proc(5) documents.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/stat: {e}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/status: {e}"))?;
    let ticks =
        cpu_ticks(&stat).ok_or_else(|| anyhow::anyhow!("unexpected format of /proc/{pid}/stat"))?;
    let rss_bytes =
        rss_bytes(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64),
        rss_bytes,
    })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the *last* `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; utime is field 14, stime field 15.
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (the file says kB, meaning KiB).
pub fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (this crate forbids the `unsafe` a direct
/// call needs); 100, what Linux uses everywhere, if that fails.
pub fn clock_ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_counts_fields_after_the_last_parenthesis() {
        // A name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (ssepush (w) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 269 0 0 20 0 6 0 1000 123456789 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(731 + 269));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tssepush\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(rss_bytes(status), Some(12345 * 1024));
        assert_eq!(rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
    }
}

/// A measured window over some processes: CPU consumed between [`Window::start`] and
/// [`Window::end`], and the resident set at both ends and at its peak (sampled every 250 ms).
#[derive(Debug)]
pub struct Window {
    pids: Vec<u32>,
    start: Vec<ProcSample>,
    started: std::time::Instant,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

/// What a [`Window`] saw, summed over its processes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub wall: Duration,
    pub cpu: Duration,
    pub rss_start: u64,
    pub rss_end: u64,
    pub rss_peak: u64,
}

impl Window {
    /// Starts a window over `pids` (their RSS is summed).
    ///
    /// Errors: a pid that cannot be read.
    pub fn start(pids: Vec<u32>) -> anyhow::Result<Window> {
        let start = pids
            .iter()
            .map(|&p| sample(p))
            .collect::<Result<Vec<_>, _>>()?;
        let first = start.iter().map(|s| s.rss_bytes).sum();
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(first));
        let (p, watch) = (peak.clone(), pids.clone());
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let rss: u64 = watch
                    .iter()
                    .filter_map(|&pid| sample(pid).ok())
                    .map(|s| s.rss_bytes)
                    .sum();
                p.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(Window {
            pids,
            start,
            started: std::time::Instant::now(),
            peak,
            sampler,
        })
    }

    /// Ends the window.
    ///
    /// Errors: a process went away.
    pub fn end(self) -> anyhow::Result<Usage> {
        self.sampler.abort();
        let end = self
            .pids
            .iter()
            .map(|&p| sample(p))
            .collect::<Result<Vec<_>, _>>()?;
        let cpu = end
            .iter()
            .zip(&self.start)
            .map(|(e, s)| e.cpu.saturating_sub(s.cpu))
            .sum();
        let rss_end: u64 = end.iter().map(|s| s.rss_bytes).sum();
        Ok(Usage {
            wall: self.started.elapsed(),
            cpu,
            rss_start: self.start.iter().map(|s| s.rss_bytes).sum(),
            rss_end,
            rss_peak: self
                .peak
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(rss_end),
        })
    }
}
