#![cfg(feature = "server")]
//! Integration tests of what is particular to the Redis event log, against a real Redis: several
//! origins on one namespace, the dedicated `tail` connection, the feed's cap, reading history
//! older than the feed, losing Redis and its data. What every log must do is in
//! `log_contract.rs`, run on both backends.
//!
//! They need Redis ≥ 6.2 at `redis://127.0.0.1:6379` (or `SSEPUSH_TEST_REDIS`) and fail, rather
//! than skip, when it is unreachable: a silently skipped store test is how a broken store ships.
//! Each test works in its own random namespace and deletes its keys when done, even on failure,
//! so tests run in parallel and against a Redis that holds other data.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Namespace, ids, keep, new, pats, redis_url};
use ssepush_origin::EventId;
use ssepush_origin::store::redis::RedisLog;
use ssepush_origin::store::{EventLog, LogError, Reset, Retention};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

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
        for (channel, dropped) in [(&by_trim, &old_trim), (&by_append, &old_append)] {
            let newest = dropped[n - 1];
            assert!(
                log.gap(&pats(&[channel]), dropped[n - 2])
                    .await
                    .unwrap()
                    .is_some(),
                "{channel}: a cursor before the newest dropped event"
            );
            assert_eq!(
                log.gap(&pats(&[channel]), newest).await.unwrap(),
                None,
                "{channel}: a cursor at the newest dropped event"
            );
        }
        assert_eq!(log.latest(&by_append, 100).await.unwrap(), fresh);
        assert!(log.latest(&by_trim, 100).await.unwrap().is_empty());
    }
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
    // Paging from where each read says it stopped walks the same sequence.
    let mut paged = Vec::new();
    let mut cursor = EventId::ZERO;
    while cursor < last {
        let r = b.read(&pats(&[">"]), cursor, last, 77).await.unwrap();
        cursor = r.next;
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
    assert!(reader.last_id().await.unwrap().is_start());
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
async fn a_wildcard_read_older_than_the_feed_visits_the_channels() {
    let ns = Namespace::new();
    let log = ns.open(keep(3, None)).await.with_feed_capacity(5);
    let stored = log
        .append((0..12).map(|i| new(&format!("f.{}", i % 3), i)).collect())
        .await
        .unwrap();
    let last = log.last_id().await.unwrap();
    // The feed holds the last 5; the channels hold the last 3 each (9 events).
    let want = ids(&stored[3..]);
    let mut got = Vec::new();
    let mut after = EventId::ZERO;
    while after < last {
        let r = log.read(&pats(&["f.*"]), after, last, 4).await.unwrap();
        assert!(r.next > after && r.events.len() <= 4);
        got.extend(ids(&r.events));
        after = r.next;
    }
    assert_eq!(got, want);
    // From inside the feed, the same events.
    let r = log
        .read(&pats(&["f.*"]), stored[8].id, last, 100)
        .await
        .unwrap();
    assert_eq!(ids(&r.events), ids(&stored[9..]));
    assert_eq!(
        log.gap(&pats(&["f.*"]), EventId::ZERO).await.unwrap(),
        Some(Reset {
            oldest: Some(stored[3].id)
        })
    );
}

#[tokio::test]
async fn a_wildcard_read_examines_no_more_feed_entries_than_it_may_return() {
    let ns = Namespace::new();
    let log = ns.open(Retention::default()).await;
    let noise = log
        .append(
            (0..50)
                .map(|i| new(&format!("noise.{}", i % 7), i))
                .collect(),
        )
        .await
        .unwrap();
    let rare = log.append(vec![new("rare.x", 0)]).await.unwrap();
    let last = log.last_id().await.unwrap();
    let r = log
        .read(&pats(&["rare.*"]), EventId::ZERO, last, 10)
        .await
        .unwrap();
    assert!(r.events.is_empty());
    assert_eq!(
        r.next, noise[9].id,
        "one read, one bounded stretch of the feed"
    );
    let mut after = r.next;
    let mut got = Vec::new();
    while after < last {
        let r = log.read(&pats(&["rare.*"]), after, last, 10).await.unwrap();
        got.extend(ids(&r.events));
        after = r.next;
    }
    assert_eq!(got, ids(&rare));
}

#[tokio::test]
async fn every_origin_on_a_namespace_sees_the_new_epoch_after_a_loss() {
    let ns = Namespace::new();
    let a = Arc::new(ns.open(Retention::default()).await);
    let b = ns.open(Retention::default()).await;
    let before = a.append(vec![new("a", 1)]).await.unwrap();
    assert_eq!(b.last_id().await.unwrap(), before[0].id);
    // A tail blocked across the loss notices it.
    let waiter = {
        let a = a.clone();
        let from = before[0].id;
        tokio::spawn(async move { a.tail(from, 10, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    ns.wipe();
    // The first origin to write after the loss makes the new epoch; the other one shares it.
    let after = b.append(vec![new("a", 2)]).await.unwrap();
    assert_ne!(after[0].id.epoch, before[0].id.epoch);
    assert_eq!(a.last_id().await.unwrap(), after[0].id);
    assert!(
        waiter.await.unwrap().unwrap().is_none(),
        "a tail across the loss reports that it lost its place"
    );
    let more = a.append(vec![new("a", 3)]).await.unwrap();
    assert_eq!(more[0].id.epoch, after[0].id.epoch);
    let feed = b
        .tail(after[0].id, 10, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(feed, more);
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
    let r = ssepush_origin::stores::open(
        &format!("redis://127.0.0.1:{port}"),
        &ns.0,
        Retention::default(),
        Default::default(),
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
