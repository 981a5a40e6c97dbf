//! Delivery: the [`WebhookService`] that runs one worker task per webhook, and the worker loop.
//!
//! Every node runs a worker for every stored webhook (a supervisor lists the store periodically,
//! so webhooks registered on other nodes are picked up), but a worker only delivers while it
//! holds the webhook's lease; the others stand by and take over when the holder stops renewing
//! (it died) or releases the lease (graceful shutdown).
//!
//! A delivering worker loops: read the log after its position with the webhook's patterns,
//! apply the filter, POST the first matching event, and on a 2xx save the cursor (a write fenced
//! by the lease and guarded by the record's revision). On failure the policy picks a backoff or
//! disables the webhook. Idle, it waits for a doorbell — a hub subscription with the webhook's
//! own patterns and filter, drained by a tiny task so the hub never sees a slow consumer — or
//! for `poll_interval_ms`, whichever comes first; the log, not the doorbell, is the source of
//! truth, so a missed ring only costs latency.
//!
//! On shutdown an in-flight attempt is abandoned: its event was not acknowledged, so the cursor
//! still points before it and it is delivered again by whoever delivers next (at-least-once).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use super::policy::Decision;
use super::signing::{self, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::store::{Insert, Put, Versioned, WebhookStore};
use super::{Policy, Record, Selection, Webhook, WebhookSettings, check_url};
use crate::clock::{now_ms, rfc3339};
use crate::event::{Event, EventId, SharedEvent};
use crate::filter::{EventVars, Verdict};
use crate::hub::Hub;
use crate::store::{EventLog, LogError, Resume, resume_point};

/// Events read from the log per step; the filter may skip most of them.
const READ_BATCH: usize = 256;
/// Log reads one pending count may take (each does bounded work in the store).
const PENDING_READS: usize = 8;
/// Frames the doorbell's hub subscription may queue; its drain task empties it at once.
const BELL_QUEUE: usize = 256;
/// Attempts at a guarded write that keeps losing races before giving up for this round.
const CAS_ATTEMPTS: usize = 8;

/// Runs and supervises the delivery workers of one origin node.
pub struct WebhookService {
    store: Arc<dyn WebhookStore>,
    log: Arc<dyn EventLog>,
    hub: Arc<Hub>,
    settings: WebhookSettings,
    policy: Policy,
    http: reqwest::Client,
    /// This node's lease identity: random per process, so a restarted node never mistakes a
    /// predecessor's lease for its own.
    node: String,
    workers: Mutex<HashMap<String, WorkerHandle>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

struct WorkerHandle {
    stop: CancellationToken,
    poke: Arc<Notify>,
    task: JoinHandle<()>,
}

impl WebhookService {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        log: Arc<dyn EventLog>,
        hub: Arc<Hub>,
        settings: WebhookSettings,
        shutdown: CancellationToken,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Arc<Self>, String> {
        settings.validate()?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        // The product's TLS: ring, Mozilla's roots plus `tls.extra_ca_path`.
        let http = crate::service::tls::reqwest_builder(extra_ca)
            .map_err(|e| e.to_string())?
            // A redirect would be a way around the target checks, and a receiver that moved
            // should be re-registered: 3xx counts as a failure.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .dns_resolver(GuardedResolver {
                allow_private: settings.allow_private_targets,
            })
            .no_proxy()
            .user_agent(concat!("ssepush-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Arc::new(WebhookService {
            store,
            log,
            hub,
            policy: settings.policy(),
            settings,
            http,
            node: format!("node-{}", &Webhook::new_id()[3..]),
            workers: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            shutdown,
        }))
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.store
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    fn renew_every(&self) -> Duration {
        Duration::from_millis((self.settings.lease_ttl_ms / 3).max(1))
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.settings.lease_ttl_ms)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms).min(self.renew_every())
    }

    /// Starts the supervisor: a worker for every stored webhook now, and for webhooks other
    /// nodes register later. The returned task ends after shutdown, once every worker stopped
    /// and released its lease.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                svc.sync_workers().await;
                tokio::select! {
                    _ = svc.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(svc.renew_every()) => {}
                }
            }
            svc.tracker.close();
            svc.tracker.wait().await;
        })
    }

    async fn sync_workers(self: &Arc<Self>) {
        let records = match self.store.list().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list webhooks");
                return;
            }
        };
        let disabled = records.iter().filter(|v| !v.record.state.enabled).count();
        metrics::gauge!("ssepush_origin_webhooks", "state" => "active")
            .set((records.len() - disabled) as f64);
        metrics::gauge!("ssepush_origin_webhooks", "state" => "disabled").set(disabled as f64);
        for v in &records {
            self.ensure_worker(&v.record.hook.id);
        }
        let mut workers = self.lock_workers();
        workers.retain(|_, w| !w.task.is_finished());
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkerHandle>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns a worker for `id` unless one is running.
    pub fn ensure_worker(self: &Arc<Self>, id: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let mut workers = self.lock_workers();
        if workers.get(id).is_some_and(|w| !w.task.is_finished()) {
            return;
        }
        let stop = self.shutdown.child_token();
        let poke = Arc::new(Notify::new());
        let worker = Worker {
            svc: self.clone(),
            id: id.to_owned(),
            stop: stop.clone(),
            poke: poke.clone(),
            holding: false,
            renewed_at: Instant::now(),
            version: None,
            selection: None,
            bell: None,
            scan: EventId::ZERO,
            buffer: VecDeque::new(),
            retry_at: None,
        };
        let task = self.tracker.spawn(worker.run());
        workers.insert(id.to_owned(), WorkerHandle { stop, poke, task });
    }

    /// Wakes the local worker of `id` (its record changed).
    pub fn poke(&self, id: &str) {
        if let Some(w) = self.lock_workers().get(id) {
            w.poke.notify_one();
        }
    }

    /// Stops the local worker of `id` (it was deleted). Workers on other nodes notice the
    /// deletion at their next look at the record.
    pub fn forget(&self, id: &str) {
        if let Some(w) = self.lock_workers().remove(id) {
            w.stop.cancel();
        }
    }

    /// Stores a new webhook and starts delivering it.
    pub async fn register(self: &Arc<Self>, record: &Record) -> Result<Insert, LogError> {
        let done = self
            .store
            .insert(record, self.settings.max_webhooks)
            .await?;
        if done == Insert::Done {
            self.ensure_worker(&record.hook.id);
        }
        Ok(done)
    }

    /// Applies `change` to a webhook's latest record and writes it back, re-reading and
    /// re-applying when another writer got there first. `holder`: fence the write by this node's
    /// lease (workers). `Ok(None)`: the webhook is gone (or the lease was lost).
    pub async fn update<T>(
        &self,
        id: &str,
        holder: bool,
        mut change: impl FnMut(&mut Record) -> T,
    ) -> Result<Option<(Versioned, T)>, LogError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut v) = self.store.get(id).await? else {
                return Ok(None);
            };
            let out = change(&mut v.record);
            let node = holder.then_some(self.node.as_str());
            match self.store.put(&v.record, v.rev, node).await? {
                Put::Done(rev) => {
                    v.rev = rev;
                    return Ok(Some((v, out)));
                }
                Put::Conflict => continue,
                Put::Gone | Put::NotHolder => return Ok(None),
            }
        }
        Err(LogError::Unavailable(format!(
            "webhook {id} kept changing under {CAS_ATTEMPTS} attempts to update it"
        )))
    }

    /// Matching events after the cursor, counting at most `pending_scan_limit` log entries.
    /// Returns the count and whether the scan stopped at its limit (the count is then a lower
    /// bound).
    pub async fn pending(&self, record: &Record) -> Result<(u64, bool), LogError> {
        let Ok(sel) = record.hook.selection() else {
            return Ok((0, false));
        };
        let limit = self.settings.pending_scan_limit;
        let upto = self.log.last_id().await?;
        let mut after = match resume_point(record.state.cursor, upto) {
            Resume::From(from) | Resume::Reset { from, .. } => from,
        };
        let (mut seen, mut n) = (0usize, 0u64);
        for _ in 0..PENDING_READS {
            let read = self
                .log
                .read(&sel.patterns, after, upto, limit.saturating_sub(seen))
                .await?;
            seen += read.events.len();
            n += read.events.iter().filter(|e| selects(&sel, e)).count() as u64;
            after = read.next;
            if after >= upto {
                return Ok((n, false));
            }
            if seen >= limit {
                break;
            }
        }
        Ok((n, true))
    }
}

fn selects(sel: &Selection, event: &Event) -> bool {
    // Control events are the origin's own and never leave through webhooks.
    !event.is_control() && sel.filter.as_ref().is_none_or(|f| {
        match f.evaluate(&EventVars::new(event)) {
            Verdict::Match => true,
            Verdict::NoMatch => false,
            Verdict::OverBudget => {
                // Counted and skipped: the webhook's owner sees the counter, the worker
                // goes on with the next event instead of stalling on this one.
                metrics::counter!("ssepush_origin_filter_over_budget_total", "site" => "webhook")
                    .increment(1);
                false
            }
        }
    })
}

/// New-event notifications for one worker.
struct Bell {
    rx: watch::Receiver<EventId>,
    _drain: AbortOnDropHandle<()>,
}

struct Worker {
    svc: Arc<WebhookService>,
    id: String,
    stop: CancellationToken,
    poke: Arc<Notify>,
    holding: bool,
    renewed_at: Instant,
    /// The record version `selection` was compiled from.
    version: Option<u64>,
    selection: Option<Selection>,
    bell: Option<Bell>,
    /// Where the next read starts: after the last event read into `buffer` or skipped by the
    /// filter. Rewound to the cursor whenever the definition or the holder changes.
    scan: EventId,
    /// Matching events read but not yet acknowledged, in id order; the front is in flight.
    /// At most one read batch, so a backlog costs one log read per batch, not per event.
    buffer: VecDeque<SharedEvent>,
    /// Backing off until then.
    retry_at: Option<Instant>,
}

impl Worker {
    async fn run(mut self) {
        tracing::debug!(webhook = %self.id, "webhook worker started");
        self.run_loop().await;
        if self.holding
            && let Err(e) = self.svc.store.release(&self.id, &self.svc.node).await
        {
            tracing::warn!(webhook = %self.id, error = %e, "cannot release webhook lease");
        }
        tracing::debug!(webhook = %self.id, "webhook worker stopped");
    }

    async fn run_loop(&mut self) {
        let svc = self.svc.clone();
        while !self.stop.is_cancelled() {
            if !self.renew_lease(false).await {
                // Standing by: another node delivers this webhook.
                self.bell = None;
                self.version = None;
                self.wait(svc.renew_every()).await;
                continue;
            }
            let record = match svc.store.get(&self.id).await {
                Ok(Some(v)) => v.record,
                Ok(None) => return, // deleted
                Err(e) => {
                    tracing::warn!(webhook = %self.id, error = %e, "cannot read webhook");
                    self.wait(svc.poll_interval()).await;
                    continue;
                }
            };
            if !record.state.enabled {
                self.bell = None;
                self.retry_at = None;
                // Re-enabling starts over from the cursor, with whatever definition it has then.
                self.version = None;
                self.wait(svc.poll_interval()).await;
                continue;
            }
            if self.version != Some(record.hook.version) {
                match record.hook.selection() {
                    Ok(sel) => self.selection = Some(sel),
                    Err(e) => {
                        tracing::error!(webhook = %self.id, error = %e, "stored webhook does not compile");
                        self.wait(svc.poll_interval()).await;
                        continue;
                    }
                }
                // A new definition applies to every event after the cursor, and a fixed URL
                // deserves a prompt try rather than the old backoff.
                self.version = Some(record.hook.version);
                self.scan = record.state.cursor;
                self.buffer.clear();
                self.retry_at = None;
                self.bell = None;
            }
            let Some(sel) = self.selection.clone() else {
                continue;
            };
            if self.bell.is_none() {
                self.bell = Some(ring(&svc.hub, &sel));
            }
            self.scan = self.scan.max(record.state.cursor);
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if now < at {
                    self.wait((at - now).min(svc.renew_every())).await;
                    continue;
                }
            }
            match self.step(&record, &sel).await {
                Ok(true) => {}
                Ok(false) => self.wait(svc.poll_interval()).await,
                Err(e) => {
                    tracing::warn!(webhook = %self.id, error = %e, "webhook delivery step failed");
                    self.wait(svc.poll_interval()).await;
                }
            }
        }
    }

    /// Takes or renews the lease when due (`force`: now). False when this node may not deliver.
    async fn renew_lease(&mut self, force: bool) -> bool {
        if self.holding && !force && self.renewed_at.elapsed() < self.svc.renew_every() {
            return true;
        }
        let started = Instant::now();
        match self
            .svc
            .store
            .lease(&self.id, &self.svc.node, self.svc.lease_ttl())
            .await
        {
            Ok(true) => {
                if !self.holding {
                    tracing::debug!(webhook = %self.id, node = %self.svc.node, "webhook lease taken");
                    metrics::counter!("ssepush_origin_webhook_lease_claims_total").increment(1);
                }
                self.holding = true;
                self.renewed_at = started;
                true
            }
            Ok(false) => {
                self.holding = false;
                false
            }
            Err(e) => {
                tracing::warn!(webhook = %self.id, error = %e, "cannot renew webhook lease");
                self.holding = false;
                false
            }
        }
    }

    /// One read-and-deliver step. `Ok(false)`: nothing to deliver now, wait for the doorbell.
    async fn step(&mut self, record: &Record, sel: &Selection) -> Result<bool, LogError> {
        let svc = self.svc.clone();
        if self.buffer.is_empty() {
            if let Some(bell) = &mut self.bell {
                // Seen before reading, so an event that lands after the read rings again.
                bell.rx.borrow_and_update();
            }
            let upto = svc.log.last_id().await?;
            if let Resume::Reset { cause, from } = resume_point(self.scan, upto) {
                // The history the cursor pointed into is gone (the log's epoch changed, or it
                // lost its newest events): record the gap and deliver the new history.
                tracing::warn!(webhook = %self.id, cursor = %self.scan, %cause, %from,
                    "webhook cursor names history the log no longer has; continuing from {from}");
                let now = now_ms();
                if svc
                    .update(&self.id, true, |r| r.state.restart_at(from, now))
                    .await?
                    .is_none()
                {
                    self.holding = false;
                }
                self.scan = from;
                return Ok(true);
            }
            let read = svc
                .log
                .read(&sel.patterns, self.scan, upto, READ_BATCH)
                .await?;
            // Asked after the read, so an event dropped in between is reported, not skipped.
            if let Some(reset) = svc.log.gap(&sel.patterns, self.scan).await?
                && record
                    .state
                    .last_gap
                    .is_none_or(|g| g.cursor != record.state.cursor || g.oldest != reset.oldest)
            {
                tracing::warn!(webhook = %self.id, cursor = %record.state.cursor, oldest = ?reset.oldest,
                    "webhook cursor fell behind retention; continuing with the oldest retained event");
                let now = now_ms();
                svc.update(&self.id, true, |r| r.state.record_gap(reset.oldest, now))
                    .await?;
            }
            let more = read.next < upto;
            self.scan = read.next;
            self.buffer
                .extend(read.events.into_iter().filter(|e| selects(sel, e)));
            if self.buffer.is_empty() {
                return Ok(more);
            }
        }
        let Some(event) = self.buffer.front().cloned() else {
            return Ok(false);
        };
        if event.id <= record.state.cursor {
            // Acknowledged already (by a previous holder of the lease).
            self.buffer.pop_front();
            return Ok(true);
        }
        // Renewed right before sending: the attempt's timeout is shorter than the lease, so no
        // other node can start on this webhook while it is in flight.
        if !self.renew_lease(true).await {
            return Ok(true);
        }
        let outcome = tokio::select! {
            _ = self.stop.cancelled() => return Ok(true),
            r = deliver(&svc.http, &record.hook, &event, svc.settings.allow_private_targets) => r,
        };
        let now = now_ms();
        match outcome {
            Ok(()) => {
                metrics::counter!("ssepush_origin_webhook_deliveries_total", "outcome" => "success")
                    .increment(1);
                self.retry_at = None;
                self.buffer.pop_front();
                if svc
                    .update(&self.id, true, |r| r.state.record_success(event.id, now))
                    .await?
                    .is_none()
                {
                    // Lost the lease or the webhook: whoever delivers next starts from the
                    // stored cursor (at-least-once).
                    self.holding = false;
                }
            }
            Err(error) => {
                metrics::counter!("ssepush_origin_webhook_deliveries_total", "outcome" => "failure")
                    .increment(1);
                tracing::info!(webhook = %self.id, event = %event.id, %error, "webhook delivery failed");
                // The retry reads the log again from the cursor: what retention dropped meanwhile
                // shows up as a gap instead of being sent from memory.
                self.buffer.clear();
                self.scan = record.state.cursor;
                let jitter: f64 = rand::random();
                let policy = svc.policy;
                let decision = svc
                    .update(&self.id, true, |r| {
                        r.state.record_failure(&policy, &error, now, jitter)
                    })
                    .await?;
                match decision {
                    Some((_, Decision::Retry(after))) => {
                        self.retry_at = Some(Instant::now() + after)
                    }
                    Some((v, Decision::Disable)) => {
                        metrics::counter!("ssepush_origin_webhooks_disabled_total").increment(1);
                        tracing::warn!(webhook = %self.id, failures = v.record.state.consecutive_failures,
                            error = ?v.record.state.last_error, "webhook disabled after repeated failures");
                    }
                    None => self.holding = false,
                }
            }
        }
        Ok(true)
    }

    /// Sleeps up to `max`, waking early on shutdown, a poke, or the doorbell.
    async fn wait(&mut self, max: Duration) {
        let bell = self.bell.as_mut().map(|b| &mut b.rx);
        let lost_bell = tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = self.poke.notified() => false,
            rung = async {
                match bell {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => !rung,
            _ = tokio::time::sleep(max) => false,
        };
        if lost_bell {
            self.bell = None;
        }
    }
}

/// Subscribes to the hub with the webhook's selection; a drain task turns frames into a
/// "newest matching id" so the hub's queue never fills, whatever the worker is doing.
fn ring(hub: &Arc<Hub>, sel: &Selection) -> Bell {
    // Rings for every event on the selection's channels; the worker applies the filter.
    let mut sub = hub.subscribe(sel.patterns.clone(), BELL_QUEUE, CancellationToken::new());
    let (tx, rx) = watch::channel(EventId::ZERO);
    let drain = tokio::spawn(async move {
        while let Some(frame) = sub.rx.recv().await {
            tx.send_replace(frame.id());
        }
    });
    Bell {
        rx,
        _drain: AbortOnDropHandle::new(drain),
    }
}

/// The delivery body (see the module docs of [`crate::webhooks`]).
pub fn payload(event: &Event) -> Result<Vec<u8>, String> {
    let timestamp = rfc3339(event.time);
    serde_json::to_vec(&serde_json::json!({
        "type": event.kind,
        "timestamp": timestamp,
        "data": event,
    }))
    .map_err(|e| format!("cannot encode event {}: {e}", event.id))
}

/// One signed attempt. `Err` holds a description fit for the status (no secrets, no URL).
pub async fn deliver(
    http: &reqwest::Client,
    hook: &Webhook,
    event: &Event,
    allow_private: bool,
) -> Result<(), String> {
    // IP-literal hosts bypass the resolver, so they are checked here, on every attempt.
    let url = check_url(&hook.url, allow_private).map_err(|e| e.to_string())?;
    let body = payload(event)?;
    let msg_id = event.id.to_string();
    let timestamp = (now_ms() / 1000) as i64;
    let signature = signing::sign(&hook.secret, &msg_id, timestamp, &body)
        .map_err(|e| format!("cannot sign: {e}"))?;
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_ID, msg_id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_SIGNATURE, signature)
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!(
            "target answered HTTP {status}; redirects are not followed"
        ))
    } else {
        Err(format!("target answered HTTP {status}"))
    }
}

/// The error and its causes (a certificate problem named first), without the URL.
fn describe(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut msg = crate::service::tls::describe_error(&e);
    if timeout {
        msg.insert_str(0, "timed out: ");
    }
    msg
}

/// The HTTP client's resolver: refuses a host when any of its addresses is not allowed, at
/// connection time, so a name cannot pass the registration check and later resolve to the
/// origin's own network (DNS rebinding).
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = crate::service::egress::resolve_global(&host, 0, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> Webhook {
        Webhook {
            id: Webhook::new_id(),
            url: url.into(),
            channels: vec!["a".into()],
            filter: None,
            secret: crate::webhooks::Secret::generate(),
            created_at: 0,
            version: 1,
        }
    }

    fn event() -> Event {
        Event {
            id: EventId::new(1, 0),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::Value::Null,
            time: 1,
        }
    }

    fn client(allow_private: bool) -> reqwest::Client {
        crate::service::tls::reqwest_builder(None)
            .unwrap()
            .dns_resolver(GuardedResolver { allow_private })
            .no_proxy()
            .build()
            .unwrap()
    }

    /// The delivery-time check: a name that resolves to a disallowed address is refused when
    /// connecting, whatever it resolved to at registration (DNS rebinding).
    #[tokio::test]
    async fn delivery_refuses_names_that_resolve_to_private_addresses() {
        let err = deliver(
            &client(false),
            &hook("http://localhost:9/x"),
            &event(),
            false,
        )
        .await
        .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        // IP literals never reach the resolver: they are checked before sending.
        let err = deliver(
            &client(false),
            &hook("http://127.0.0.1:9/x"),
            &event(),
            false,
        )
        .await
        .unwrap_err();
        assert!(err.contains("127.0.0.1"), "{err}");
        // Allowed, the same name gets as far as connecting (nothing listens on port 9).
        let err = deliver(&client(true), &hook("http://localhost:9/x"), &event(), true)
            .await
            .unwrap_err();
        assert!(!err.contains("loopback"), "{err}");
    }

    #[test]
    fn payload_wraps_the_event_with_its_type_and_time() {
        let event = Event {
            id: EventId::new(1_700_000_000_123, 4),
            channel: "chat.a".into(),
            kind: "message".into(),
            data: serde_json::json!({"x": 1}),
            time: 1_700_000_000_123,
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&event).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "message",
                "timestamp": "2023-11-14T22:13:20.123Z",
                "data": {"id": "1700000000123-4", "channel": "chat.a", "type": "message",
                         "data": {"x": 1}, "time": 1_700_000_000_123u64},
            })
        );
    }
}
