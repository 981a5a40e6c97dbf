#![cfg(feature = "server")]
//! Integration tests of the Redis event log against a real Redis.
//!
//! They need Redis ≥ 6.2 at `redis://127.0.0.1:6379` (or `SSEPUSH_TEST_REDIS`) and fail, rather
//! than skip, when it is unreachable: a silently skipped store test is how a broken store ships.
//! Each test works in its own random namespace and deletes its keys when done, even on failure,
//! so tests run in parallel and against a Redis that holds other data.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ssepush_origin::store::redis::RedisLog;
use ssepush_origin::store::{EventLog, Limits, LogError, Reset, Retention};
use ssepush_origin::{EventId, NewEvent, Pattern, PatternSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

fn redis_url() -> String {
    std::env::var("SSEPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test (or earlier run) uses; its keys are deleted on drop.
struct Namespace(String);

impl Namespace {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Namespace(format!(
            "test-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    async fn open(&self, retention: Retention) -> RedisLog {
        self.open_at(&redis_url(), retention).await
    }

    async fn open_at(&self, url: &str, retention: Retention) -> RedisLog {
        RedisLog::connect(url, &self.0, retention)
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need Redis at {url} (set SSEPUSH_TEST_REDIS): {e}")
            })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Synchronous on purpose: it must also run while a failed test unwinds.
        let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        let pattern = format!("ssepush:{{{}}}:*", self.0);
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

fn new(ch: &str, n: i64) -> NewEvent {
    NewEvent::new(ch, None, serde_json::json!(n)).unwrap()
}

fn pats(p: &[&str]) -> PatternSet {
    PatternSet::parse_all(p.iter().copied()).unwrap()
}

fn keep(max_events: u64, max_age: Option<Duration>) -> Retention {
    Retention {
        default: Limits {
            max_events,
            max_age,
        },
        overrides: vec![],
    }
}

fn ids(events: &[ssepush_origin::event::SharedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn ids_are_ordered_across_channels_and_reads_merge_them() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await;
    assert_eq!(log.last_id().await.unwrap(), EventId::ZERO);
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
    assert!(r.reset.is_none());
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

#[tokio::test]
async fn patterns_select_channels_like_the_memory_log() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await;
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
    let got = |r: ssepush_origin::store::ReadResult| {
        r.events
            .iter()
            .map(|e| e.data.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let read = |p: &'static [&'static str]| {
        let log = &log;
        async move { log.read(&pats(p), EventId::ZERO, last, 100).await }
    };
    assert_eq!(got(read(&["sensors.*.temp"]).await.unwrap()), vec![1, 2]);
    assert_eq!(got(read(&["sensors.>"]).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(got(read(&["sensors.eu.>"]).await.unwrap()), vec![1, 3]);
    assert_eq!(got(read(&["*"]).await.unwrap()), vec![4]);
    assert_eq!(got(read(&[">"]).await.unwrap()), vec![1, 2, 3, 4, 5]);
    // Literal sets are looked up directly; unknown channels are simply empty.
    assert_eq!(
        got(read(&["chat.room1", "sensors", "nope"]).await.unwrap()),
        vec![4, 5]
    );
    assert_eq!(got(read(&["nope.*"]).await.unwrap()), Vec::<i64>::new());
    // A cursor at the newest event, and the largest possible cursor, read nothing.
    let r = log.read(&pats(&[">"]), last, last, 100).await.unwrap();
    assert!(r.events.is_empty() && r.reset.is_none());
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

#[tokio::test]
async fn types_and_data_round_trip() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await;
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
}

#[tokio::test]
async fn count_retention_reports_a_reset_for_stale_cursors_only() {
    let ns = Namespace::new();
    let log = ns.open(keep(3, None)).await;
    let stored = log
        .append((0..5).map(|i| new("a", i)).collect())
        .await
        .unwrap();
    let last = log.last_id().await.unwrap();
    let r = log
        .read(&pats(&["a"]), stored[0].id, last, 10)
        .await
        .unwrap();
    assert_eq!(
        r.reset,
        Some(Reset {
            oldest: Some(stored[2].id)
        })
    );
    assert_eq!(ids(&r.events), ids(&stored[2..]));
    // A cursor at the last dropped event lost nothing.
    let r = log
        .read(&pats(&["a"]), stored[1].id, last, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, None);
    assert_eq!(r.events.len(), 3);
    // The oldest retained id is reported even when the range itself is empty.
    let r = log
        .read(&pats(&["a"]), EventId::ZERO, stored[1].id, 10)
        .await
        .unwrap();
    assert_eq!(
        r.reset,
        Some(Reset {
            oldest: Some(stored[2].id)
        })
    );
    assert!(r.events.is_empty());
    // Through a wildcard, and with an unaffected channel alongside, the reset still shows.
    log.append(vec![new("b", 9)]).await.unwrap();
    let last = log.last_id().await.unwrap();
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(
        r.reset,
        Some(Reset {
            oldest: Some(stored[2].id)
        })
    );
    assert_eq!(r.events.len(), 4);
    // Dropping continues one by one, and is per channel.
    let more = log.append(vec![new("a", 5)]).await.unwrap();
    let r = log
        .read(&pats(&["a"]), stored[2].id, more[0].id, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, None);
    let r = log
        .read(&pats(&["a"]), stored[1].id, more[0].id, 10)
        .await
        .unwrap();
    assert_eq!(
        r.reset,
        Some(Reset {
            oldest: Some(stored[3].id)
        })
    );
    let r = log
        .read(&pats(&["b"]), EventId::ZERO, more[0].id, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, None);
}

#[tokio::test]
async fn a_zero_count_keeps_nothing_but_remembers_what_it_dropped() {
    let ns = Namespace::new();
    let log = ns.open(keep(0, None)).await;
    let stored = log.append(vec![new("a", 1), new("a", 2)]).await.unwrap();
    assert!(log.latest("a", 10).await.unwrap().is_empty());
    let r = log
        .read(&pats(&["a"]), stored[0].id, stored[1].id, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, Some(Reset { oldest: None }));
    let r = log
        .read(&pats(&["a"]), stored[1].id, stored[1].id, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, None);
}

#[tokio::test]
async fn age_retention_trims_old_events() {
    let retention = Retention {
        default: Limits {
            max_events: 100,
            max_age: Some(Duration::from_millis(300)),
        },
        overrides: vec![(
            Pattern::parse("keep.>").unwrap(),
            Limits {
                max_events: 100,
                max_age: None,
            },
        )],
    };
    let ns = Namespace::new();
    let log = ns.open(retention).await;
    let old = log
        .append(vec![new("a", 1), new("keep.x", 2), new("b", 3)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // An append trims its own channel by age on the way in.
    let fresh = log.append(vec![new("b", 4)]).await.unwrap();
    assert_eq!(ids(&log.latest("b", 10).await.unwrap()), ids(&fresh));
    // Others wait for the periodic trim.
    assert_eq!(log.latest("a", 10).await.unwrap().len(), 1);
    log.trim_expired().await.unwrap();
    assert!(log.latest("a", 10).await.unwrap().is_empty());
    assert_eq!(log.latest("keep.x", 10).await.unwrap().len(), 1);
    let last = log.last_id().await.unwrap();
    let r = log
        .read(&pats(&["a"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, Some(Reset { oldest: None }));
    let r = log
        .read(&pats(&["a", "b"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(
        r.reset,
        Some(Reset {
            oldest: Some(fresh[0].id)
        })
    );
    assert_eq!(ids(&r.events), ids(&fresh));
    // Cursors at or past what was dropped lost nothing.
    let r = log
        .read(&pats(&["a", "b"]), old[2].id, last, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, None);
    let r = log
        .read(&pats(&["keep.>"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert_eq!(r.reset, None);
    assert_eq!(r.events.len(), 1);
    // Trimming again is a no-op.
    log.trim_expired().await.unwrap();
    assert_eq!(log.latest("b", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn age_trimming_names_the_newest_dropped_event_among_many() {
    // More expired entries than the scripts' forward probe (16) takes the other lookup path.
    let ns = Namespace::new();
    let log = ns.open(keep(1000, Some(Duration::from_millis(300)))).await;
    for n in [3usize, 40] {
        let by_trim = format!("trim.{n}");
        let by_append = format!("append.{n}");
        let old = log
            .append(
                (0..n as i64)
                    .flat_map(|i| [new(&by_trim, i), new(&by_append, i)])
                    .collect(),
            )
            .await
            .unwrap();
        let of = |ch: &str| -> Vec<EventId> {
            old.iter()
                .filter(|e| e.channel == ch)
                .map(|e| e.id)
                .collect()
        };
        let (old_trim, old_append) = (of(&by_trim), of(&by_append));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let fresh = log.append(vec![new(&by_append, -1)]).await.unwrap();
        log.trim_expired().await.unwrap();
        let last = log.last_id().await.unwrap();
        for (channel, dropped) in [(&by_trim, &old_trim), (&by_append, &old_append)] {
            let newest = dropped[n - 1];
            let r = log
                .read(&pats(&[channel]), dropped[n - 2], last, 10)
                .await
                .unwrap();
            assert!(
                r.reset.is_some(),
                "{channel}: a cursor before the newest dropped event"
            );
            let r = log.read(&pats(&[channel]), newest, last, 10).await.unwrap();
            assert_eq!(
                r.reset, None,
                "{channel}: a cursor at the newest dropped event"
            );
        }
        assert_eq!(log.latest(&by_append, 100).await.unwrap(), fresh);
        assert!(log.latest(&by_trim, 100).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn latest_returns_the_newest_events_newest_last() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await;
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

#[tokio::test]
async fn two_origins_share_one_totally_ordered_sequence() {
    let ns = Namespace::new();
    let a = Arc::new(ns.open(Retention::default()).await);
    let b = Arc::new(ns.open(Retention::default()).await);
    let channels = ["x.1", "x.2", "y.1", "z"];
    let mut tasks = Vec::new();
    for (origin, log) in [a.clone(), b.clone()].into_iter().enumerate() {
        for worker in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut batches = Vec::new();
                for round in 0..25i64 {
                    let batch = (0..4)
                        .map(|i| {
                            new(
                                channels[(round as usize + i) % 4],
                                (origin * 10 + worker) as i64,
                            )
                        })
                        .collect();
                    batches.push(ids(&log.append(batch).await.unwrap()));
                }
                batches
            }));
        }
    }
    let mut batches = Vec::new();
    for t in tasks {
        batches.extend(t.await.unwrap());
    }
    let mut all: Vec<EventId> = batches.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        800,
        "ids must be unique"
    );
    // Each batch is contiguous: no other append lands inside it.
    for batch in &batches {
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        let start = all.binary_search(&batch[0]).unwrap();
        assert_eq!(all[start..start + batch.len()], batch[..]);
    }
    let last = a.last_id().await.unwrap();
    assert_eq!(last, *all.last().unwrap());
    assert_eq!(b.last_id().await.unwrap(), last);
    // Every read, from either origin, is the one sequence.
    for log in [&a, &b] {
        let r = log
            .read(&pats(&[">"]), EventId::ZERO, last, 10_000)
            .await
            .unwrap();
        assert_eq!(ids(&r.events), all);
        let r = log
            .read(&pats(&["x.*", "z"]), EventId::ZERO, last, 10_000)
            .await
            .unwrap();
        let want: Vec<_> = r
            .events
            .iter()
            .filter(|e| e.channel != "y.1")
            .map(|e| e.id)
            .collect();
        assert_eq!(ids(&r.events), want);
        assert_eq!(r.events.len(), 600);
        let feed = log
            .tail(EventId::ZERO, 10_000, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&feed), all);
    }
    // Paging with the last id of each page as the next cursor walks the same sequence.
    let mut paged = Vec::new();
    let mut cursor = EventId::ZERO;
    loop {
        let r = b.read(&pats(&[">"]), cursor, last, 77).await.unwrap();
        let Some(end) = r.events.last() else { break };
        cursor = end.id;
        paged.extend(ids(&r.events));
    }
    assert_eq!(paged, all);
}

#[tokio::test]
async fn a_new_instance_continues_the_sequence() {
    let ns = Namespace::new();
    let first = {
        let log = ns.open(Retention::default()).await;
        log.append(vec![new("a", 1), new("b", 2)]).await.unwrap()
    };
    let log = ns.open(Retention::default()).await;
    assert_eq!(log.last_id().await.unwrap(), first[1].id);
    let next = log.append(vec![new("a", 3)]).await.unwrap();
    assert!(next[0].id > first[1].id);
    let r = log
        .read(&pats(&[">"]), EventId::ZERO, next[0].id, 10)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), vec![first[0].id, first[1].id, next[0].id]);
}

#[tokio::test]
async fn tail_waits_for_an_append_from_another_origin() {
    let ns = Namespace::new();
    let reader = Arc::new(ns.open(Retention::default()).await);
    let writer = ns.open(Retention::default()).await;
    let empty = reader
        .tail(EventId::ZERO, 10, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(empty.map(|v| v.len()), Some(0));
    let waiter = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = reader
                .tail(EventId::ZERO, 10, Duration::from_secs(10))
                .await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The blocked tail holds its own connection: ordinary commands are not stuck behind it.
    let started = Instant::now();
    reader.ping().await.unwrap();
    assert_eq!(reader.last_id().await.unwrap(), EventId::ZERO);
    assert!(started.elapsed() < Duration::from_secs(1));
    let stored = writer.append(vec![new("a", 1), new("b", 2)]).await.unwrap();
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(got.unwrap().unwrap(), stored);
    assert!(waited < Duration::from_secs(5), "tail took {waited:?}");
    // After the newest id, it returns empty once the wait is over, even past the client's
    // default response timeout.
    let started = Instant::now();
    let got = reader
        .tail(stored[1].id, 10, Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(got.map(|v| v.len()), Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    // The limit applies, and resuming from the last id continues.
    let got = reader
        .tail(EventId::ZERO, 1, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, stored[..1]);
    let got = reader
        .tail(got[0].id, 0, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_dropped_tail_leaves_the_log_usable() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await;
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        log.tail(EventId::ZERO, 10, Duration::from_secs(30)),
    )
    .await;
    assert!(cancelled.is_err());
    let stored = log.append(vec![new("a", 1)]).await.unwrap();
    let started = Instant::now();
    let got = log
        .tail(EventId::ZERO, 10, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, stored);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tail_reports_when_the_feed_no_longer_holds_the_cursor() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await.with_feed_capacity(3);
    let stored = log
        .append((0..5).map(|i| new("a", i)).collect())
        .await
        .unwrap();
    assert!(
        log.tail(EventId::ZERO, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        log.tail(stored[0].id, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    // A cursor at the newest dropped entry lost nothing.
    let got = log
        .tail(stored[1].id, 10, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, stored[2..]);
    let got = log
        .tail(stored[4].id, 10, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_empty());
    // The channel's own retention is independent of the feed's.
    assert_eq!(log.latest("a", 10).await.unwrap(), stored);
}

#[tokio::test]
async fn connecting_to_nothing_is_an_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ns = Namespace::new();
    let r = RedisLog::connect(
        &format!("redis://127.0.0.1:{port}"),
        &ns.0,
        Retention::default(),
    )
    .await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{:?}", r.err());
    let r = RedisLog::connect("redis//nonsense", &ns.0, Retention::default()).await;
    assert!(matches!(r, Err(LogError::BadUrl(_))), "{:?}", r.err());
    let r = RedisLog::connect(&redis_url(), "a{b}", Retention::default()).await;
    assert!(r.is_err());
    // `open` routes redis URLs here.
    let r = ssepush_origin::store::open(
        &format!("redis://127.0.0.1:{port}"),
        &ns.0,
        Retention::default(),
    )
    .await;
    assert!(r.is_err());
}

/// A TCP relay to Redis that the test can cut and restore, to play "Redis went away".
struct Relay {
    port: u16,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(port: u16) -> Relay {
        let target = redis_url()
            .strip_prefix("redis://")
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .expect("the relay test needs a plain redis://host:port URL");
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client, server) = (Arc::new(client), Arc::new(server));
                let up = tokio::spawn(pump(client.clone(), server.clone()));
                let down = tokio::spawn(pump(server, client));
                let mut reg = registry.lock().unwrap();
                reg.push(up.abort_handle());
                reg.push(down.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Relay { port, tasks }
    }

    /// Closes the listener and every relayed connection.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Copies bytes one way until either side closes (no `io-util` needed).
async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}

#[tokio::test]
async fn losing_redis_is_an_error_and_the_log_recovers() {
    let ns = Namespace::new();
    let relay = Relay::start(0).await;
    let url = format!("redis://127.0.0.1:{}", relay.port);
    let log = ns.open_at(&url, Retention::default()).await;
    log.ping().await.unwrap();
    let stored = log.append(vec![new("a", 1)]).await.unwrap();

    relay.cut();
    let started = Instant::now();
    let mut failed = false;
    // The first command after the cut may still be in flight as the socket closes; within a
    // few tries every command must fail, each promptly.
    for _ in 0..5 {
        match log.ping().await {
            Err(LogError::Unavailable(_)) => {
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(failed, "ping kept succeeding with Redis unreachable");
    assert!(matches!(
        log.append(vec![new("a", 2)]).await,
        Err(LogError::Unavailable(_))
    ));
    assert!(
        log.tail(EventId::ZERO, 10, Duration::from_millis(10))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // Redis comes back on the same address: the log reconnects by itself.
    let restored = Relay::start(relay.port).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while log.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the log did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = log.append(vec![new("a", 3)]).await.unwrap();
    assert!(next[0].id > stored[0].id);
    let got = log
        .tail(EventId::ZERO, 10, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&got), vec![stored[0].id, next[0].id]);
    restored.cut();
}
