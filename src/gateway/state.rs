//! What every gateway handler shares: the credentials it checks against, the push record, the
//! devices and their queues, the armed faults, the minted OAuth tokens, the Web Push
//! subscriptions — and the two steps every provider takes for a valid push: consult the faults
//! (`Shared::apply_faults`), then record and forward it (`Shared::record`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use ssepush_origin::service::ops::{MetricDef, MetricKind};
use tokio_util::sync::CancellationToken;

use super::control::faults::{FaultSpec, Faults};
use super::control::records::{
    BodyEncoding, Delivery, Devices, Offered, Provider, PushLog, PushRecord, truncate_body,
};
use super::credentials::Credentials;
use super::registry::{AccessTokens, Subscriptions};

/// The state behind every handler.
pub struct Shared {
    pub creds: Credentials,
    pub(super) sa_public: rsa::RsaPublicKey,
    /// `scheme://host:port`: the audience of VAPID tokens and the prefix of endpoints.
    pub base_url: String,
    pub(super) log: Mutex<PushLog>,
    pub(super) devices: Mutex<Devices>,
    pub(super) faults: Mutex<Faults>,
    pub(super) access_tokens: Mutex<AccessTokens>,
    pub(super) subscriptions: Mutex<Subscriptions>,
    pub(super) max_devices: usize,
    pub(super) metrics: Metrics,
    pub(super) shutdown: CancellationToken,
}

pub type AppState = Arc<Shared>;

/// One push as seen by a provider handler, before it is answered.
pub(crate) struct Push {
    pub provider: Provider,
    pub token: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub body_encoding: BodyEncoding,
    pub collapse_key: Option<String>,
    /// How long the service should keep trying (None: the service's maximum; 0: now or never).
    pub ttl_ms: Option<u64>,
}

/// What the armed faults decided for a valid push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Deliver,
    Drop,
    Fail(FaultSpec),
}

/// Every family the gateway exports, with its `# HELP` text, registered at zero on start-up.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "ssepush_gateway_pushes_total",
        kind: MetricKind::Counter,
        help: "Pushes received, by provider and the status answered (labels provider: apns, fcm, webpush; status).",
    },
    MetricDef {
        name: "ssepush_gateway_pushes_displaced_total",
        kind: MetricKind::Counter,
        help: "Push records dropped from the full record ring (record_capacity), by provider.",
    },
    MetricDef {
        name: "ssepush_gateway_pushes_expired_total",
        kind: MetricKind::Counter,
        help: "Stored pushes that expired before a simulated device fetched them.",
    },
    MetricDef {
        name: "ssepush_gateway_oauth_tokens_total",
        kind: MetricKind::Counter,
        help: "FCM OAuth token requests (label outcome: issued, rejected).",
    },
];

/// The gateway's own metrics: a recorder of its own rather than the process-wide one, so its
/// `/metrics` counts this gateway's pushes only, even when other gateways, origins and proxies
/// share the process (the demo, the tests).
pub(super) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let recorder = ssepush_origin::service::ops::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            ssepush_origin::service::ops::register_metrics(METRICS)
        });
        Metrics { recorder, handle }
    }

    /// Runs `f`, whose `metrics::counter!`s (and gauges) go to this gateway's recorder.
    pub(super) fn record(&self, f: impl FnOnce()) {
        metrics::with_local_recorder(&self.recorder, f);
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub(super) fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

impl Shared {
    pub(super) fn new(
        creds: Credentials,
        base_url: String,
        record_capacity: usize,
        max_devices: usize,
        device_queue: usize,
    ) -> Shared {
        Shared {
            sa_public: creds.sa_key.to_public_key(),
            creds,
            base_url,
            log: Mutex::new(PushLog::new(record_capacity)),
            devices: Mutex::new(Devices::new(max_devices, device_queue)),
            faults: Mutex::new(Faults::default()),
            access_tokens: Mutex::new(AccessTokens::default()),
            subscriptions: Mutex::new(Default::default()),
            max_devices,
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Records a push answered with `status` and, if `deliver`, queues it for the device (if
    /// the gateway knows that device). Returns the record's `seq`.
    pub(crate) fn record(
        &self,
        push: Push,
        status: u16,
        reason: Option<String>,
        deliver: bool,
    ) -> u64 {
        self.metrics.record(|| {
            metrics::counter!(
                "ssepush_gateway_pushes_total",
                "provider" => push.provider.as_str(),
                "status" => status.to_string()
            )
            .increment(1);
        });
        let queue = if deliver {
            self.devices.lock().unwrap().get(&push.token)
        } else {
            None
        };
        // TTL 0 reaches only a device listening right now.
        let queue = queue.filter(|q| push.ttl_ms != Some(0) || q.is_listening());
        let time_ms = now_ms();
        let (recorded_body, body_truncated) = truncate_body(&push.body);
        let seq = self.log.lock().unwrap().push(PushRecord {
            seq: 0,
            time_ms,
            provider: push.provider,
            token: push.token.clone(),
            headers: push.headers.clone(),
            body: recorded_body,
            body_encoding: push.body_encoding,
            status,
            reason,
            forwarded: queue.is_some(),
            body_truncated,
        });
        if let Some(q) = queue {
            let delivery = Delivery {
                seq,
                time_ms,
                provider: push.provider,
                token: push.token,
                headers: push.headers,
                body: push.body,
                body_encoding: push.body_encoding,
                collapse_key: push.collapse_key,
            };
            let lost = match q.offer(delivery, push.ttl_ms) {
                Offered::Queued { displaced } => displaced,
                Offered::Discarded => 1,
            };
            if lost > 0 {
                self.metrics.record(|| {
                    metrics::counter!(
                        "ssepush_gateway_pushes_displaced_total",
                        "provider" => push.provider.as_str()
                    )
                    .increment(lost as u64);
                });
            }
        }
        seq
    }

    /// Consults the armed faults for a valid push; waits out a fault's latency (or until the
    /// gateway shuts down).
    pub(crate) async fn apply_faults(&self, provider: Provider, token: &str) -> Verdict {
        let Some(fault) = self.faults.lock().unwrap().take(provider, token) else {
            return Verdict::Deliver;
        };
        if let Some(ms) = fault.latency_ms {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
        if fault.status.is_some() {
            Verdict::Fail(fault)
        } else if fault.drop {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Unix milliseconds now: the product's one clock helper.
pub(crate) use ssepush_origin::clock::now_ms;

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

/// A random (v4) UUID, as APNs makes for `apns-id`.
pub(crate) fn new_uuid() -> String {
    let mut b = [0u8; 16];
    rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut b);
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// One set of keys for all unit tests: RSA key generation is the slow part.
    pub(crate) fn test_credentials() -> &'static Credentials {
        static CREDS: OnceLock<Credentials> = OnceLock::new();
        CREDS.get_or_init(|| Credentials::generate("http://127.0.0.1:8070").unwrap())
    }

    #[test]
    fn uuid_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uuid(), u);
    }

    #[test]
    fn metrics_are_the_gateways_own() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.record(|| metrics::counter!("ssepush_gateway_pushes_total").increment(2));
        assert!(
            a.render().contains("ssepush_gateway_pushes_total 2"),
            "{}",
            a.render()
        );
        // The other one has the family from start-up, at zero, and none of a's pushes.
        assert!(
            b.render().contains("ssepush_gateway_pushes_total 0"),
            "{}",
            b.render()
        );
        assert!(!b.render().contains("ssepush_gateway_pushes_total 2"));
    }
}
