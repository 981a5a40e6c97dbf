//! What the gateway remembers: the push record (a bounded ring of every push it answered,
//! accepted or not, for `GET /_gateway/pushes`), and the per-device delivery queues the
//! simulated phones read (`GET /_gateway/devices/{token}/stream`).
//!
//! Device queues behave like the real services toward an offline phone: bounded, oldest dropped
//! first, a newer push with the same collapse key (APNs `apns-collapse-id`, FCM
//! `collapse_key`, Web Push `Topic`) replaces an undelivered one, and a push whose time to live
//! (`apns-expiration`, `android.ttl`, `TTL`) runs out before the phone reads it is discarded —
//! with TTL 0 meaning "now or never": only a phone listening at that moment gets it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Which simulated service a push went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Apns,
    Fcm,
    Webpush,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
            Provider::Webpush => "webpush",
        }
    }
}

/// One push as the gateway saw and answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    /// Increasing from 1; `since=` takes the last one seen.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: u64,
    pub provider: Provider,
    /// APNs device token, FCM registration token, or Web Push subscription id.
    pub token: String,
    /// The provider headers that matter (never `authorization`), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// As received: JSON text for APNs and FCM, base64url of the ciphertext for Web Push.
    pub body: String,
    pub body_encoding: BodyEncoding,
    /// The status the gateway answered.
    pub status: u16,
    /// The error reason answered, if any (APNs `reason`, FCM `errorCode`/`status`, Web Push
    /// message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it was queued for the device (false for errors, `drop` faults, TTL 0 with no
    /// device listening, and tokens no device registered).
    pub forwarded: bool,
    /// The body was cut to [`MAX_RECORDED_BODY`] (only oversized, refused pushes are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
}

/// The most body text one record keeps: a full 4096-byte push in base64url fits; bigger bodies
/// are refused by every provider, and keeping them whole would let the ring grow to gigabytes.
pub const MAX_RECORDED_BODY: usize = 6 * 1024;

/// `body` cut to [`MAX_RECORDED_BODY`] bytes at a character boundary, and whether it was cut.
pub fn truncate_body(body: &str) -> (String, bool) {
    if body.len() <= MAX_RECORDED_BODY {
        return (body.to_owned(), false);
    }
    let mut end = MAX_RECORDED_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    (body[..end].to_owned(), true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    Text,
    Base64url,
}

/// `GET /_gateway/pushes` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushQuery {
    pub token: Option<String>,
    pub provider: Option<Provider>,
    /// Only records with `seq` greater than this.
    pub since: Option<u64>,
    /// At most this many (the oldest matching first); default and cap [`MAX_QUERY`].
    pub limit: Option<usize>,
}

pub const MAX_QUERY: usize = 10_000;

/// The bounded ring of push records.
#[derive(Debug)]
pub struct PushLog {
    ring: VecDeque<PushRecord>,
    capacity: usize,
    next_seq: u64,
}

impl PushLog {
    pub fn new(capacity: usize) -> PushLog {
        PushLog {
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Appends, giving the record its `seq`; the oldest record goes when full.
    pub fn push(&mut self, mut record: PushRecord) -> u64 {
        record.seq = self.next_seq;
        self.next_seq += 1;
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        let seq = record.seq;
        self.ring.push_back(record);
        seq
    }

    pub fn query(&self, q: &PushQuery) -> Vec<PushRecord> {
        let limit = q.limit.unwrap_or(MAX_QUERY).min(MAX_QUERY);
        // Records are in seq order: skip straight past `since`.
        let start = match q.since {
            Some(since) => self.ring.partition_point(|r| r.seq <= since),
            None => 0,
        };
        self.ring
            .range(start..)
            .filter(|r| q.provider.is_none_or(|p| p == r.provider))
            .filter(|r| q.token.as_deref().is_none_or(|t| t == r.token))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn clear(&mut self) {
        self.ring.clear();
    }
}

/// What a simulated phone receives on its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The push record's `seq`.
    pub seq: u64,
    pub time_ms: u64,
    pub provider: Provider,
    pub token: String,
    pub headers: BTreeMap<String, String>,
    /// JSON text (APNs payload, FCM `message`), or base64url ciphertext (Web Push).
    pub body: String,
    pub body_encoding: BodyEncoding,
    /// The collapse key it was sent with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
}

/// A queued delivery and the time (unix ms) after which it is no longer delivered.
#[derive(Debug)]
struct Queued {
    delivery: Delivery,
    deadline: Option<u64>,
}

/// One device's undelivered pushes.
#[derive(Debug)]
pub struct DeviceQueue {
    items: std::sync::Mutex<VecDeque<Queued>>,
    capacity: usize,
    /// Open device streams (TTL-0 pushes reach only a device that is listening).
    listeners: AtomicUsize,
    pub notify: Notify,
}

/// What became of an offered delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued; this many undelivered ones were displaced (collapse key or overflow).
    Queued { displaced: usize },
    /// TTL 0 and no device listening: discarded, as the services do.
    Discarded,
}

/// Counts a device stream as listening while alive.
#[derive(Debug)]
pub struct Listening(Arc<DeviceQueue>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DeviceQueue {
    fn new(capacity: usize) -> DeviceQueue {
        DeviceQueue {
            items: std::sync::Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            listeners: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    /// Marks a device stream open until the guard is dropped.
    pub fn listen(self: &Arc<Self>) -> Listening {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listening(self.clone())
    }

    pub fn is_listening(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Queues a delivery that may be delivered for `ttl_ms` after its `time_ms` (None: no
    /// limit; 0: only to a device listening now).
    pub fn offer(&self, d: Delivery, ttl_ms: Option<u64>) -> Offered {
        let deadline = match ttl_ms {
            Some(0) if !self.is_listening() => return Offered::Discarded,
            // Handed to the listening device right away: no deadline to miss.
            Some(0) | None => None,
            Some(ttl) => Some(d.time_ms.saturating_add(ttl)),
        };
        let mut items = self.items.lock().unwrap();
        let mut displaced = 0;
        if let Some(key) = &d.collapse_key {
            let before = items.len();
            items.retain(|x| x.delivery.collapse_key.as_ref() != Some(key));
            displaced += before - items.len();
        }
        if items.len() == self.capacity {
            items.pop_front();
            displaced += 1;
        }
        items.push_back(Queued {
            delivery: d,
            deadline,
        });
        drop(items);
        self.notify.notify_one();
        Offered::Queued { displaced }
    }

    /// The next delivery still alive at `now_ms`, and how many expired ones were skipped.
    pub fn pop(&self, now_ms: u64) -> (Option<Delivery>, usize) {
        let mut items = self.items.lock().unwrap();
        let mut expired = 0;
        while let Some(q) = items.pop_front() {
            if q.deadline.is_some_and(|d| d < now_ms) {
                expired += 1;
                continue;
            }
            return (Some(q.delivery), expired);
        }
        (None, expired)
    }

    pub fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The devices the gateway knows (registered, subscribed to Web Push, or listening), bounded.
#[derive(Debug)]
pub struct Devices {
    queues: HashMap<String, Arc<DeviceQueue>>,
    /// Tokens whose app was "uninstalled" (`DELETE /_gateway/devices/{token}`), with when (unix
    /// ms): APNs answers 410 Unregistered with that timestamp, FCM 404 UNREGISTERED.
    unregistered: HashMap<String, u64>,
    max_devices: usize,
    queue_capacity: usize,
}

impl Devices {
    pub fn new(max_devices: usize, queue_capacity: usize) -> Devices {
        Devices {
            queues: HashMap::new(),
            unregistered: HashMap::new(),
            max_devices,
            queue_capacity,
        }
    }

    /// The queue of `token`, created if there is room.
    pub fn get_or_create(&mut self, token: &str) -> Option<Arc<DeviceQueue>> {
        if let Some(q) = self.queues.get(token) {
            return Some(q.clone());
        }
        if self.queues.len() >= self.max_devices {
            return None;
        }
        let q = Arc::new(DeviceQueue::new(self.queue_capacity));
        self.queues.insert(token.to_owned(), q.clone());
        Some(q)
    }

    /// The queue of a known device; pushes to unknown tokens are recorded but go nowhere.
    pub fn get(&self, token: &str) -> Option<Arc<DeviceQueue>> {
        self.queues.get(token).cloned()
    }

    pub fn remove(&mut self, token: &str) {
        self.queues.remove(token);
    }

    /// Forgets the device and makes its token dead from `at_ms` on. Returns false when the
    /// gateway holds as many dead tokens as devices already.
    pub fn unregister(&mut self, token: &str, at_ms: u64) -> bool {
        self.queues.remove(token);
        if self.unregistered.len() >= self.max_devices && !self.unregistered.contains_key(token) {
            return false;
        }
        self.unregistered.insert(token.to_owned(), at_ms);
        true
    }

    /// When the token was unregistered, if it was.
    pub fn unregistered_at(&self, token: &str) -> Option<u64> {
        self.unregistered.get(token).copied()
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(provider: Provider, token: &str) -> PushRecord {
        PushRecord {
            seq: 0,
            time_ms: 0,
            provider,
            token: token.into(),
            headers: BTreeMap::new(),
            body: String::new(),
            body_encoding: BodyEncoding::Text,
            status: 200,
            reason: None,
            forwarded: true,
            body_truncated: false,
        }
    }

    fn delivery(seq: u64, key: Option<&str>) -> Delivery {
        Delivery {
            seq,
            time_ms: 0,
            provider: Provider::Apns,
            token: "t".into(),
            headers: BTreeMap::new(),
            body: String::new(),
            body_encoding: BodyEncoding::Text,
            collapse_key: key.map(Into::into),
        }
    }

    #[test]
    fn ring_is_bounded_and_queryable() {
        let mut log = PushLog::new(3);
        for i in 0..5 {
            let p = if i % 2 == 0 {
                Provider::Apns
            } else {
                Provider::Fcm
            };
            log.push(rec(p, &format!("t{}", i % 2)));
        }
        let all = log.query(&PushQuery::default());
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let q = PushQuery {
            provider: Some(Provider::Apns),
            ..Default::default()
        };
        assert_eq!(
            log.query(&q).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3, 5]
        );
        let q = PushQuery {
            token: Some("t1".into()),
            since: Some(3),
            ..Default::default()
        };
        assert_eq!(log.query(&q).iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
        let q = PushQuery {
            limit: Some(1),
            since: Some(3),
            ..Default::default()
        };
        assert_eq!(log.query(&q).iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
        log.clear();
        assert!(log.query(&PushQuery::default()).is_empty());
        assert_eq!(log.push(rec(Provider::Apns, "x")), 6);
    }

    fn queued(displaced: usize) -> Offered {
        Offered::Queued { displaced }
    }

    #[test]
    fn device_queue_collapses_and_bounds() {
        let q = DeviceQueue::new(2);
        assert_eq!(q.offer(delivery(1, Some("h1")), None), queued(0));
        assert_eq!(q.offer(delivery(2, Some("h1")), None), queued(1));
        assert_eq!(q.offer(delivery(3, None), None), queued(0));
        assert_eq!(q.offer(delivery(4, None), None), queued(1));
        assert_eq!(q.pop(0).0.unwrap().seq, 3);
        assert_eq!(q.pop(0).0.unwrap().seq, 4);
        assert!(q.pop(0).0.is_none());
    }

    #[test]
    fn recorded_bodies_are_capped() {
        assert_eq!(truncate_body("abc"), ("abc".into(), false));
        let big = "é".repeat(MAX_RECORDED_BODY);
        let (cut, truncated) = truncate_body(&big);
        assert!(truncated && cut.len() <= MAX_RECORDED_BODY && cut.len() > MAX_RECORDED_BODY - 2);
    }

    #[test]
    fn device_queue_honours_ttl() {
        let q = Arc::new(DeviceQueue::new(8));
        // TTL 0 with nobody listening: gone at once.
        assert_eq!(q.offer(delivery(1, None), Some(0)), Offered::Discarded);
        assert_eq!(q.offer(delivery(2, None), Some(1_000)), queued(0));
        assert_eq!(q.offer(delivery(3, None), Some(60_000)), queued(0));
        // Read 30 s later: the 1 s one has expired, the 60 s one is still good.
        let (d, expired) = q.pop(30_000);
        assert_eq!((d.unwrap().seq, expired), (3, 1));
        let guard = q.listen();
        assert_eq!(q.offer(delivery(4, None), Some(0)), queued(0));
        assert_eq!(q.pop(99_999).0.unwrap().seq, 4);
        drop(guard);
        assert!(!q.is_listening());
    }

    #[test]
    fn devices_are_bounded() {
        let mut d = Devices::new(1, 4);
        assert!(d.get_or_create("a").is_some());
        assert!(d.get_or_create("a").is_some());
        assert!(d.get_or_create("b").is_none());
        assert!(d.get("b").is_none());
        assert!(d.unregister("a", 5));
        assert!(d.get("a").is_none());
        assert_eq!(d.unregistered_at("a"), Some(5));
        assert!(!d.unregister("b", 6), "dead tokens are bounded too");
    }
}
