//! One keep-alive clock for every SSE stream of the process.
//!
//! A stream writes a `: keep-alive` comment when a tick comes and nothing else is ready. Each
//! stream used to own a `tokio::time::Interval`: a boxed timer entry (~110 bytes) and the
//! interval's own state in every connection, for an idle stream most of what it does (issue 11,
//! RSS per idle connection). One task now ticks every `keep_alive_secs` and every stream waits
//! on a [`Ticks`] receiver (two words); an idle stream still gets a comment at least once per
//! period, the first one up to a period after it opens rather than exactly one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The shared clock: hand each stream [`ticks`](KeepAlive::ticks).
#[derive(Clone, Debug)]
pub struct KeepAlive(Arc<watch::Sender<()>>);

impl KeepAlive {
    /// Starts the ticking task: a tick every `period` until `shutdown`.
    pub fn start(period: Duration, shutdown: CancellationToken) -> KeepAlive {
        let clock = KeepAlive::stopped();
        let tx = clock.0.clone();
        tokio::spawn(async move {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => { tx.send_replace(()); }
                }
            }
        });
        clock
    }

    /// A clock that never ticks (for streams built without a server, e.g. in tests).
    pub fn stopped() -> KeepAlive {
        KeepAlive(Arc::new(watch::channel(()).0))
    }

    /// A receiver of the ticks after now.
    pub fn ticks(&self) -> Ticks {
        Ticks(self.0.subscribe())
    }
}

/// One stream's view of the clock.
#[derive(Debug)]
pub struct Ticks(watch::Receiver<()>);

impl Ticks {
    /// Waits for the next tick (forever once the clock has stopped). Cancel-safe: a tick that
    /// came while nobody waited is returned by the next call.
    pub async fn tick(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn every_receiver_sees_each_tick_once() {
        let shutdown = CancellationToken::new();
        let clock = KeepAlive::start(Duration::from_millis(300), shutdown.clone());
        let mut a = clock.ticks();
        let mut b = clock.ticks();
        assert!(a.tick().now_or_never().is_none(), "no tick before a period");
        tokio::time::timeout(Duration::from_secs(5), a.tick())
            .await
            .expect("a tick within a period");
        assert!(a.tick().now_or_never().is_none(), "a tick is seen once");
        // `b` was not waiting when it came: it still sees it.
        assert!(b.tick().now_or_never().is_some());
        let mut late = clock.ticks();
        assert!(
            late.tick().now_or_never().is_none(),
            "a new receiver starts after the ticks so far"
        );
        tokio::time::timeout(Duration::from_secs(5), late.tick())
            .await
            .expect("the next tick");
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(700), late.tick())
                .await
                .is_err(),
            "no tick after shutdown"
        );
        assert!(KeepAlive::stopped().ticks().tick().now_or_never().is_none());
    }
}
