#![cfg(feature = "server")]
//! The event-log contract: the same tests, run on the memory log, on the Redis log, and on the
//! Redis log over a Redis Cluster.
//!
//! Each test is written once against `dyn EventLog` and instantiated for every backend at the
//! bottom (`memory::…`, `redis::…`, `cluster::…`). The Redis runs need Redis ≥ 6.2 at
//! `redis://127.0.0.1:6379` (or `SSEPUSH_TEST_REDIS`) and fail, rather than skip, without it;
//! each works in its own namespace and deletes its keys when done. The cluster runs start a
//! real three-master Redis Cluster each (`tests/support/redis_cluster.rs`: `redis-server` and
//! `redis-cli` on the path) and open the log with `redis+cluster://…`.

mod common;
// A real three-master Redis Cluster per test (the root package's harness).
#[allow(dead_code)]
#[path = "../../tests/support/redis_cluster.rs"]
mod redis_cluster;

use std::sync::Arc;
use std::time::Duration;

use common::{Namespace, ids, keep, new, pats};
use ssepush_origin::event::ResetCause;
use ssepush_origin::store::memory::MemoryLog;
use ssepush_origin::store::{EventLog, Limits, LogError, Reset, Resume, Retention, resume_point};
use ssepush_origin::{EventId, NewEvent, Pattern};

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Redis,
    /// A three-master Redis Cluster started for the test (`redis+cluster://…`).
    Cluster,
}

/// One backend under test, and what it takes to play "the history was lost".
struct Store {
    kind: Kind,
    ns: Namespace,
    retention: Retention,
    cluster: Option<redis_cluster::RedisCluster>,
}

impl Store {
    async fn open(kind: Kind, retention: Retention) -> (Store, Arc<dyn EventLog>) {
        let cluster = match kind {
            Kind::Cluster => Some(redis_cluster::RedisCluster::start().await),
            _ => None,
        };
        let store = Store {
            kind,
            ns: Namespace::new(),
            retention,
            cluster,
        };
        let log = store.connect().await;
        (store, log)
    }

    async fn connect(&self) -> Arc<dyn EventLog> {
        match (self.kind, &self.cluster) {
            (Kind::Memory, _) => Arc::new(MemoryLog::new(self.retention.clone())),
            (Kind::Cluster, Some(cluster)) => Arc::new(
                self.ns
                    .open_at(&cluster.url(), self.retention.clone())
                    .await,
            ),
            _ => Arc::new(self.ns.open(self.retention.clone()).await),
        }
    }

    /// The log after its history is lost. Memory: the process restarted, a new log. Redis: the
    /// server lost its data under the running log (the same instance carries on).
    async fn lose_history(&self, log: Arc<dyn EventLog>) -> Arc<dyn EventLog> {
        match self.kind {
            Kind::Memory => self.connect().await,
            Kind::Redis => {
                self.ns.wipe();
                log
            }
            Kind::Cluster => {
                if let Some(cluster) = &self.cluster {
                    cluster.wipe(&format!("ssepush:{{{}}}:*", self.ns.0));
                }
                log
            }
        }
    }
}

async fn ids_are_ordered_across_channels_and_reads_merge_them(kind: Kind) {
    let (_s, log) = Store::open(kind, Retention::default()).await;
    let stored = log
        .append(vec![
            new("a.x", 1),
            new("b.y", 2),
            new("a.z", 3),
            new("c", 4),
        ])
        .await
        .unwrap();
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        stored
            .iter()
            .all(|e| e.time == e.id.ms && e.kind == "message")
    );
    let last = log.last_id().await.unwrap();
    assert_eq!(last, stored[3].id);
    let r = log
        .read(&pats(&["a.*", "b.>"]), EventId::ZERO, last, 100)
        .await
        .unwrap();
    let data: Vec<_> = r.events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        data,
        vec![
            serde_json::json!(1),
            serde_json::json!(2),
            serde_json::json!(3)
        ]
    );
    assert_eq!(r.events[1].channel, "b.y");
    assert_eq!(r.next, last, "a read that reached upto says so");
    // Exclusive cursor, inclusive upper bound, limit.
    let r = log
        .read(&pats(&[">"]), stored[0].id, stored[2].id, 100)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), vec![stored[1].id, stored[2].id]);
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, last, 3)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), ids(&stored[..3]));
    assert_eq!(
        r.next, stored[2].id,
        "a read stopped by its limit says where"
    );
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, last, 0)
        .await
        .unwrap();
    assert!(r.events.is_empty());
    // The stored events come back whole.
    let r = log
        .read(&pats(&["c"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(*r.events[0], *stored[3]);
}

async fn patterns_select_channels(kind: Kind) {
    let (_s, log) = Store::open(kind, Retention::default()).await;
    let stored = log
        .append(vec![
            new("sensors.eu.temp", 1),
            new("sensors.us.temp", 2),
            new("sensors.eu.temp.max", 3),
            new("sensors", 4),
            new("chat.room1", 5),
        ])
        .await
        .unwrap();
    let last = log.last_id().await.unwrap();
    let read = |p: &'static [&'static str]| {
        let log = log.clone();
        async move {
            let r = log.read(&pats(p), EventId::ZERO, last, 100).await.unwrap();
            r.events
                .iter()
                .map(|e| e.data.as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(read(&["sensors.*.temp"]).await, vec![1, 2]);
    assert_eq!(read(&["sensors.>"]).await, vec![1, 2, 3]);
    assert_eq!(read(&["sensors.eu.>"]).await, vec![1, 3]);
    assert_eq!(read(&["*"]).await, vec![4]);
    assert_eq!(read(&[">"]).await, vec![1, 2, 3, 4, 5]);
    // Literal sets are looked up directly; unknown channels are simply empty; a channel named
    // twice comes once.
    assert_eq!(
        read(&["chat.room1", "sensors", "nope", "sensors"]).await,
        vec![4, 5]
    );
    assert_eq!(read(&["nope.*"]).await, Vec::<i64>::new());
    // A cursor at the newest event, and the largest possible cursor, read nothing.
    let r = log.read(&pats(&[">"]), last, last, 100).await.unwrap();
    assert!(r.events.is_empty());
    assert_eq!(log.gap(&pats(&[">"]), last).await.unwrap(), None);
    let max = EventId::new(u64::MAX, u64::MAX);
    assert!(
        log.read(&pats(&[">"]), max, max, 100)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    // `upto` below every id reads nothing either.
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, EventId::new(1, 0), 100)
        .await
        .unwrap();
    assert!(r.events.is_empty());
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
}

async fn types_and_data_round_trip(kind: Kind) {
    let (_s, log) = Store::open(kind, Retention::default()).await;
    let data = serde_json::json!({
        "text": "héllo \"wörld\"\n✓",
        "nested": {"list": [1, 2.5, null, true], "empty": {}},
        "big": 12345678901234567i64,
    });
    let stored = log
        .append(vec![
            NewEvent::new("chat.a", Some("chat.message"), data.clone()).unwrap(),
            NewEvent::new("chat.a", None, serde_json::Value::Null).unwrap(),
            NewEvent::new("chat.a", None, serde_json::json!("")).unwrap(),
        ])
        .await
        .unwrap();
    let latest = log.latest("chat.a", 10).await.unwrap();
    assert_eq!(latest, stored);
    assert_eq!(latest[0].kind, "chat.message");
    assert_eq!(latest[0].data, data);
    let tail = log
        .tail(EventId::ZERO, 10, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tail, stored);
    let r = log
        .read(&pats(&["chat.*"]), EventId::ZERO, stored[2].id, 10)
        .await
        .unwrap();
    assert_eq!(r.events, stored);
}

async fn count_retention_gaps_for_stale_cursors_only(kind: Kind) {
    let (_s, log) = Store::open(kind, keep(3, None)).await;
    let stored = log
        .append((0..5).map(|i| new("a", i)).collect())
        .await
        .unwrap();
    let last = log.last_id().await.unwrap();
    let r = log
        .read(&pats(&["a"]), stored[0].id, last, 10)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), ids(&stored[2..]));
    let lost = Some(Reset {
        oldest: Some(stored[2].id),
    });
    for p in [pats(&["a"]), pats(&["*"]), pats(&[">", "a"])] {
        assert_eq!(log.gap(&p, stored[0].id).await.unwrap(), lost);
        assert_eq!(log.gap(&p, EventId::ZERO).await.unwrap(), lost);
        // A cursor at the last dropped event lost nothing.
        assert_eq!(log.gap(&p, stored[1].id).await.unwrap(), None);
    }
    assert_eq!(log.gap(&pats(&["b.*"]), EventId::ZERO).await.unwrap(), None);
    // With an unaffected channel alongside, the gap still shows, and the read has both.
    log.append(vec![new("b", 9)]).await.unwrap();
    let last = log.last_id().await.unwrap();
    assert_eq!(log.gap(&pats(&[">"]), EventId::ZERO).await.unwrap(), lost);
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(r.events.len(), 4);
    // Dropping continues one by one, and is per channel.
    log.append(vec![new("a", 5)]).await.unwrap();
    assert_eq!(log.gap(&pats(&["a"]), stored[2].id).await.unwrap(), None);
    assert_eq!(
        log.gap(&pats(&["a"]), stored[1].id).await.unwrap(),
        Some(Reset {
            oldest: Some(stored[3].id)
        })
    );
    assert_eq!(log.gap(&pats(&["b"]), EventId::ZERO).await.unwrap(), None);
}

async fn a_zero_count_keeps_nothing_but_remembers_what_it_dropped(kind: Kind) {
    let (_s, log) = Store::open(kind, keep(0, None)).await;
    let stored = log.append(vec![new("a", 1), new("a", 2)]).await.unwrap();
    assert!(log.latest("a", 10).await.unwrap().is_empty());
    let r = log
        .read(&pats(&["a.>", "a"]), EventId::ZERO, stored[1].id, 10)
        .await
        .unwrap();
    assert!(r.events.is_empty(), "nothing is history: {:?}", r.events);
    assert_eq!(
        log.gap(&pats(&["a"]), stored[0].id).await.unwrap(),
        Some(Reset { oldest: None })
    );
    assert_eq!(log.gap(&pats(&["a"]), stored[1].id).await.unwrap(), None);
    // The live feed still carries them.
    let feed = log
        .tail(EventId::ZERO, 10, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(feed, stored);
}

async fn age_retention_trims_old_events(kind: Kind) {
    let retention = Retention {
        default: Limits {
            max_events: 100,
            max_age: Some(Duration::from_millis(300)),
            max_bytes: u64::MAX,
        },
        overrides: vec![(
            Pattern::parse("keep.>").unwrap(),
            Limits {
                max_events: 100,
                max_age: None,
                max_bytes: u64::MAX,
            },
        )],
        max_total_bytes: u64::MAX,
    };
    let (_s, log) = Store::open(kind, retention).await;
    let old = log
        .append(vec![new("a", 1), new("keep.x", 2), new("b", 3)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // An append trims its own channel by age on the way in.
    let fresh = log.append(vec![new("b", 4)]).await.unwrap();
    assert_eq!(ids(&log.latest("b", 10).await.unwrap()), ids(&fresh));
    log.trim_expired().await.unwrap();
    assert!(log.latest("a", 10).await.unwrap().is_empty());
    assert_eq!(log.latest("keep.x", 10).await.unwrap().len(), 1);
    let last = log.last_id().await.unwrap();
    assert_eq!(
        log.gap(&pats(&["a"]), EventId::ZERO).await.unwrap(),
        Some(Reset { oldest: None })
    );
    assert_eq!(
        log.gap(&pats(&["a", "b"]), EventId::ZERO).await.unwrap(),
        Some(Reset {
            oldest: Some(fresh[0].id)
        })
    );
    let r = log
        .read(&pats(&["a", "b"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), ids(&fresh));
    // A wildcard sees the same history: what aged out is not in it.
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), vec![old[1].id, fresh[0].id]);
    // Cursors at or past what was dropped lost nothing.
    assert_eq!(log.gap(&pats(&["a", "b"]), old[2].id).await.unwrap(), None);
    assert_eq!(
        log.gap(&pats(&["keep.>"]), EventId::ZERO).await.unwrap(),
        None
    );
    // Trimming again is a no-op.
    log.trim_expired().await.unwrap();
    assert_eq!(log.latest("b", 10).await.unwrap().len(), 1);
}

async fn latest_returns_the_newest_events_newest_last(kind: Kind) {
    let (_s, log) = Store::open(kind, Retention::default()).await;
    assert!(log.latest("a", 5).await.unwrap().is_empty());
    let stored = log
        .append(
            (0..6)
                .map(|i| new(if i % 2 == 0 { "a" } else { "b" }, i))
                .collect(),
        )
        .await
        .unwrap();
    let a: Vec<_> = stored
        .iter()
        .filter(|e| e.channel == "a")
        .cloned()
        .collect();
    assert_eq!(log.latest("a", 2).await.unwrap(), a[1..]);
    assert_eq!(log.latest("a", 100).await.unwrap(), a);
    assert!(log.latest("a", 0).await.unwrap().is_empty());
    assert!(log.latest("nope", 3).await.unwrap().is_empty());
}

async fn every_id_names_the_epoch(kind: Kind) {
    let (s, log) = Store::open(kind, Retention::default()).await;
    let head = log.last_id().await.unwrap();
    assert!(head.is_start(), "an empty log's head is the start: {head}");
    assert_ne!(head.epoch, 0, "a log always has an epoch");
    let stored = log.append(vec![new("a", 1), new("b", 2)]).await.unwrap();
    assert!(stored.iter().all(|e| e.id.epoch == head.epoch));
    assert_eq!(log.last_id().await.unwrap(), stored[1].id);
    let read = log
        .read(&pats(&[">"]), head, stored[1].id, 10)
        .await
        .unwrap();
    let latest = log.latest("a", 1).await.unwrap();
    let tail = log.tail(head, 10, Duration::ZERO).await.unwrap().unwrap();
    for e in read.events.iter().chain(&latest).chain(&tail) {
        assert_eq!(e.id.epoch, head.epoch, "{}", e.id);
        // The text form round-trips, epoch included.
        assert_eq!(e.id.to_string().parse::<EventId>(), Ok(e.id));
    }
    assert_eq!(read.events, stored);
    // A restart that keeps the data (Redis) keeps the epoch; a memory log starts a new history.
    let head2 = s.connect().await.last_id().await.unwrap();
    match kind {
        Kind::Memory => assert_ne!(head2.epoch, head.epoch),
        Kind::Redis | Kind::Cluster => assert_eq!(head2, stored[1].id),
    }
}

async fn a_lost_history_starts_a_new_epoch(kind: Kind) {
    let (s, log) = Store::open(kind, Retention::default()).await;
    let before = log.append(vec![new("a", 1), new("a", 2)]).await.unwrap();
    let log = s.lose_history(log).await;
    let head = log.last_id().await.unwrap();
    assert!(head.is_start(), "nothing survived: {head}");
    assert_ne!(head.epoch, before[0].id.epoch, "the epoch changed");
    // Nothing of the old history can be continued or read with an old id.
    let old = before[0].id;
    assert!(
        log.tail(old, 10, Duration::ZERO).await.unwrap().is_none(),
        "the feed cannot continue an old cursor"
    );
    let after = log.append(vec![new("a", 3)]).await.unwrap();
    assert_eq!(after[0].id.epoch, head.epoch);
    let head = log.last_id().await.unwrap();
    assert!(matches!(
        log.read(&pats(&["a"]), old, head, 10).await,
        Err(LogError::EpochChanged { .. })
    ));
    assert!(matches!(
        log.read(&pats(&[">"]), old, head, 10).await,
        Err(LogError::EpochChanged { .. })
    ));
    assert!(log.tail(old, 10, Duration::ZERO).await.unwrap().is_none());
    // The resume rule sends a client with the old cursor to the new epoch's start, with a reset.
    let Resume::Reset { cause, from } = resume_point(old, head) else {
        panic!("an old cursor must get a reset");
    };
    assert_eq!(cause, ResetCause::Epoch);
    let r = log.read(&pats(&["a"]), from, head, 10).await.unwrap();
    assert_eq!(r.events, after, "only the new history is read");
    // A cursor newer than the head of its own epoch is not vouched for either.
    let ahead = head.next();
    assert!(matches!(
        resume_point(ahead, head),
        Resume::Reset {
            cause: ResetCause::Ahead,
            ..
        }
    ));
}

async fn a_wide_read_is_paged_in_id_order(kind: Kind) {
    let (_s, log) = Store::open(kind, Retention::default()).await;
    let mut all = Vec::new();
    for round in 0..12 {
        let batch: Vec<NewEvent> = (0..120)
            .map(|c| new(&format!("w.{c}"), round))
            .chain((0..40).map(|i| new("other", i)))
            .collect();
        all.extend(log.append(batch).await.unwrap());
    }
    let last = log.last_id().await.unwrap();
    for (patterns, limit) in [
        (&["w.*"][..], 500),
        (&["w.*", "other"][..], 333),
        (&[">"][..], 1000),
    ] {
        let want: Vec<EventId> = all
            .iter()
            .filter(|e| pats(patterns).matches(&e.channel))
            .map(|e| e.id)
            .collect();
        let mut got = Vec::new();
        let mut after = EventId::ZERO;
        while after < last {
            let r = log.read(&pats(patterns), after, last, limit).await.unwrap();
            assert!(r.next > after, "every read makes progress");
            assert!(r.events.len() <= limit);
            assert!(r.events.iter().all(|e| e.id > after && e.id <= r.next));
            got.extend(ids(&r.events));
            after = r.next;
        }
        assert_eq!(got, want, "{patterns:?}");
    }
}

async fn a_narrow_pattern_in_a_busy_log_is_found(kind: Kind) {
    let (_s, log) = Store::open(kind, Retention::default()).await;
    let rare1 = log.append(vec![new("rare.x", 1)]).await.unwrap();
    for chunk in 0..6 {
        log.append(
            (0..1000)
                .map(|i| new(&format!("noise.{}", i % 100), chunk))
                .collect(),
        )
        .await
        .unwrap();
    }
    let rare2 = log.append(vec![new("rare.y", 2)]).await.unwrap();
    let last = log.last_id().await.unwrap();
    let mut got = Vec::new();
    let mut after = EventId::ZERO;
    let mut reads = 0;
    while after < last {
        let r = log
            .read(&pats(&["rare.*"]), after, last, 500)
            .await
            .unwrap();
        assert!(r.next > after);
        got.extend(ids(&r.events));
        after = r.next;
        reads += 1;
        assert!(reads < 1000, "the read does not advance");
    }
    assert_eq!(got, vec![rare1[0].id, rare2[0].id]);
}

async fn a_wide_read_leaves_out_what_retention_dropped(kind: Kind) {
    let (_s, log) = Store::open(kind, keep(2, None)).await;
    let mut all = Vec::new();
    for round in 0..5 {
        all.extend(
            log.append((0..80).map(|c| new(&format!("k.{c}"), round)).collect())
                .await
                .unwrap(),
        );
    }
    let last = log.last_id().await.unwrap();
    // Each channel keeps its last two: rounds 3 and 4.
    let want: Vec<EventId> = all
        .iter()
        .filter(|e| e.data.as_i64().unwrap() >= 3)
        .map(|e| e.id)
        .collect();
    let r = log
        .read(&pats(&["k.*"]), EventId::ZERO, last, 10_000)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), want);
    assert_eq!(
        log.gap(&pats(&["k.*"]), EventId::ZERO).await.unwrap(),
        Some(Reset {
            oldest: Some(want[0])
        })
    );
    let third = all.iter().rev().find(|e| e.data == 2).unwrap().id;
    assert_eq!(log.gap(&pats(&["k.*"]), third).await.unwrap(), None);
}

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Redis).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Cluster).await;
                }
            )*
        }
    };
}

contract!(
    ids_are_ordered_across_channels_and_reads_merge_them,
    patterns_select_channels,
    types_and_data_round_trip,
    count_retention_gaps_for_stale_cursors_only,
    a_zero_count_keeps_nothing_but_remembers_what_it_dropped,
    age_retention_trims_old_events,
    latest_returns_the_newest_events_newest_last,
    every_id_names_the_epoch,
    a_lost_history_starts_a_new_epoch,
    a_wide_read_is_paged_in_id_order,
    a_narrow_pattern_in_a_busy_log_is_found,
    a_wide_read_leaves_out_what_retention_dropped,
);
