//! The checker and the report of a simulated fleet run, as plain code over plain values.
//!
//! Everything here is a pure function of what the publisher recorded and what each phone
//! observed, so every verdict (loss, duplicate, disorder, missed wake) is unit-tested on
//! hand-made values, and the fleet only gathers observations.
//!
//! Times are [`Duration`]s since the run started, so records are comparable across tasks and
//! easy to write down in tests.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use ssepush_origin::event::EventId;

/// What the stream a phone received looks like next to what was published for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamCheck {
    /// Events published on the phone's channels.
    pub expected: u64,
    /// Events delivered to the phone (by the origin or the proxy), duplicates included.
    pub received: u64,
    /// Published events the phone never got.
    pub lost: u64,
    /// Deliveries of an id the phone had already received.
    pub duplicated: u64,
    /// Deliveries of a new id lower than one already received.
    pub out_of_order: u64,
    /// Deliveries of an id nobody published for this phone (another channel's event).
    pub unexpected: u64,
}

impl StreamCheck {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.unexpected == 0
    }

    fn add(&mut self, o: &StreamCheck) {
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
    }
}

/// Compares the ids delivered to a phone, in delivery order, with the ids published for it
/// (in publish order, which is id order).
pub fn check_stream(expected: &[EventId], received: &[EventId]) -> StreamCheck {
    let wanted: HashSet<EventId> = expected.iter().copied().collect();
    let mut seen: HashSet<EventId> = HashSet::with_capacity(received.len());
    let mut max: Option<EventId> = None;
    let mut c = StreamCheck {
        expected: expected.len() as u64,
        received: received.len() as u64,
        ..StreamCheck::default()
    };
    for id in received {
        if !seen.insert(*id) {
            c.duplicated += 1;
            continue;
        }
        if !wanted.contains(id) {
            c.unexpected += 1;
        }
        if max.is_some_and(|m| *id < m) {
            c.out_of_order += 1;
        }
        max = max.max(Some(*id));
    }
    c.lost = wanted.iter().filter(|id| !seen.contains(id)).count() as u64;
    c
}

/// How one sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// A push for this handoff reached the device at this time.
    Push(Duration),
    /// The sleep ran out without a push, at this time.
    Timeout(Duration),
}

/// One sleep of one phone: from the handoff's 201 until it woke.
#[derive(Debug, Clone, PartialEq)]
pub struct Sleep {
    /// When the proxy answered 201.
    pub handed_off: Duration,
    /// The `lastEventId` handed off.
    pub cursor: Option<EventId>,
    pub woke: Woke,
}

/// An event published for a phone, as the checker needs it: id, publish time, and whether
/// the phone's wake filter passes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Owed {
    pub id: EventId,
    pub published: Duration,
    pub wakes: bool,
}

/// What a sleep tells: a wake latency, a wake that should have come and did not, or neither.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SleepVerdict {
    /// Woken by a push; the latency runs from the first owed event's publish (or the handoff,
    /// if that event was published before it) to the push at the device.
    Woken { latency: Option<Duration> },
    /// Timed out although an event owing a wake was published at least `grace` before the
    /// timeout.
    MissedWake,
    /// Timed out with nothing owed (or owed too late to be fairly expected).
    Quiet,
}

/// Judges one sleep against the events published for the phone (`events` in id order).
/// `grace` covers coalescing and delivery: an event published later than `grace` before the
/// sleep ended is not held against the proxy.
pub fn judge_sleep(sleep: &Sleep, events: &[Owed], grace: Duration) -> SleepVerdict {
    let first_owed = events
        .iter()
        .find(|e| e.wakes && sleep.cursor.is_none_or(|c| e.id > c));
    match sleep.woke {
        Woke::Push(at) => SleepVerdict::Woken {
            latency: first_owed.map(|e| at.saturating_sub(e.published.max(sleep.handed_off))),
        },
        Woke::Timeout(at) => match first_owed {
            Some(e) if e.published.max(sleep.handed_off) + grace <= at => SleepVerdict::MissedWake,
            _ => SleepVerdict::Quiet,
        },
    }
}

/// Everything one phone observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhoneRecord {
    pub index: usize,
    pub platform: String,
    /// The phone's channels (the checker's expected set is everything published on them).
    pub channels: Vec<String>,
    /// Ids in delivery order, from the origin and the proxy, duplicates included.
    pub received: Vec<EventId>,
    /// Deliveries that passed the client-stage filter (what the app would display).
    pub displayed: u64,
    pub cycles_done: u32,
    pub sleeps: Vec<Sleep>,
    /// POST /v1/handoffs → 201.
    pub handoff_latencies: Vec<Duration>,
    /// Pushes that reached the device, for any handoff.
    pub pushes: u64,
    /// Pushes for an earlier handoff, or arriving while awake (already resumed by timeout).
    pub stale_pushes: u64,
    /// Pushes whose payload was not a valid `ssepush` wake (or could not be decrypted).
    pub bad_payloads: u64,
    /// Events caught up from the proxy's buffer.
    pub from_proxy: u64,
    /// The proxy reported a gap in its buffer (the phone resumed from the origin instead).
    pub proxy_gaps: u64,
    /// The origin sent `ssepush.reset`: events were gone.
    pub resets: u64,
    pub flaps: u64,
    /// Errors that stopped or disturbed the phone (HTTP failures, refused handoffs).
    pub errors: Vec<String>,
}

/// Percentiles of a latency sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentiles.
pub fn percentiles(sample: &[Duration]) -> Percentiles {
    if sample.is_empty() {
        return Percentiles::default();
    }
    let mut v: Vec<Duration> = sample.to_vec();
    v.sort();
    let rank = |p: f64| {
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[i.clamp(1, v.len()) - 1].as_secs_f64() * 1000.0
    };
    Percentiles {
        count: v.len() as u64,
        p50_ms: rank(50.0),
        p95_ms: rank(95.0),
        p99_ms: rank(99.0),
        max_ms: v[v.len() - 1].as_secs_f64() * 1000.0,
    }
}

/// One phone's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhoneSummary {
    pub index: usize,
    pub platform: String,
    #[serde(flatten)]
    pub stream: StreamCheck,
    pub cycles: u32,
    pub wakes: u64,
    pub pushes: u64,
    pub missed_wakes: u64,
    pub errors: Vec<String>,
}

impl PhoneSummary {
    pub fn ok(&self, cycles: u32) -> bool {
        self.stream.ok()
            && self.missed_wakes == 0
            && self.errors.is_empty()
            && self.cycles == cycles
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub devices: usize,
    pub cycles: u32,
    /// Phones that finished every cycle.
    pub completed: usize,
    pub published: u64,
    #[serde(flatten)]
    pub stream: StreamCheck,
    pub displayed: u64,
    pub from_proxy: u64,
    pub proxy_gaps: u64,
    pub resets: u64,
    pub flaps: u64,
    pub sleeps: u64,
    /// Sleeps ended by a push for the current handoff.
    pub wakes: u64,
    pub pushes: u64,
    pub stale_pushes: u64,
    pub bad_payloads: u64,
    /// Sleeps that timed out although a wake was owed.
    pub missed_wakes: u64,
    pub pushes_per_phone: Percentiles,
    pub handoff_latency: Percentiles,
    pub wake_latency: Percentiles,
    pub errors: u64,
    pub elapsed_secs: f64,
    /// The phones that failed a check (at most 20, worst first).
    pub failing_phones: Vec<PhoneSummary>,
    pub passed: bool,
}

/// Judges every phone and sums up. `published_for(phone)` gives the events published on the
/// phone's channels, in id order.
pub fn build_report(
    phones: &[PhoneRecord],
    cycles: u32,
    published: u64,
    grace: Duration,
    elapsed: Duration,
    published_for: impl Fn(&PhoneRecord) -> Vec<Owed>,
) -> Report {
    let mut stream = StreamCheck::default();
    let mut handoff = Vec::new();
    let mut wake = Vec::new();
    let mut pushes_per_phone = Vec::new();
    let mut failing = Vec::new();
    let (mut wakes, mut missed, mut sleeps, mut completed, mut errors) = (0, 0, 0, 0, 0);
    let mut r = Report {
        devices: phones.len(),
        cycles,
        completed: 0,
        published,
        stream: StreamCheck::default(),
        displayed: 0,
        from_proxy: 0,
        proxy_gaps: 0,
        resets: 0,
        flaps: 0,
        sleeps: 0,
        wakes: 0,
        pushes: 0,
        stale_pushes: 0,
        bad_payloads: 0,
        missed_wakes: 0,
        pushes_per_phone: Percentiles::default(),
        handoff_latency: Percentiles::default(),
        wake_latency: Percentiles::default(),
        errors: 0,
        elapsed_secs: elapsed.as_secs_f64(),
        failing_phones: Vec::new(),
        passed: false,
    };
    for p in phones {
        let owed = published_for(p);
        let ids: Vec<EventId> = owed.iter().map(|o| o.id).collect();
        let check = check_stream(&ids, &p.received);
        stream.add(&check);
        let (mut p_wakes, mut p_missed) = (0, 0);
        for s in &p.sleeps {
            sleeps += 1;
            match judge_sleep(s, &owed, grace) {
                SleepVerdict::Woken { latency } => {
                    p_wakes += 1;
                    wake.extend(latency);
                }
                SleepVerdict::MissedWake => p_missed += 1,
                SleepVerdict::Quiet => {}
            }
        }
        wakes += p_wakes;
        missed += p_missed;
        handoff.extend(p.handoff_latencies.iter().copied());
        pushes_per_phone.push(Duration::from_millis(p.pushes));
        if p.cycles_done == cycles {
            completed += 1;
        }
        errors += p.errors.len() as u64;
        r.displayed += p.displayed;
        r.from_proxy += p.from_proxy;
        r.proxy_gaps += p.proxy_gaps;
        r.resets += p.resets;
        r.flaps += p.flaps;
        r.pushes += p.pushes;
        r.stale_pushes += p.stale_pushes;
        r.bad_payloads += p.bad_payloads;
        let summary = PhoneSummary {
            index: p.index,
            platform: p.platform.clone(),
            stream: check,
            cycles: p.cycles_done,
            wakes: p_wakes,
            pushes: p.pushes,
            missed_wakes: p_missed,
            errors: p.errors.iter().take(3).cloned().collect(),
        };
        if !summary.ok(cycles) {
            failing.push(summary);
        }
    }
    failing.sort_by_key(|s| {
        std::cmp::Reverse(
            s.stream.lost + s.stream.duplicated + s.stream.out_of_order + s.missed_wakes,
        )
    });
    failing.truncate(20);
    r.completed = completed;
    r.stream = stream;
    r.sleeps = sleeps;
    r.wakes = wakes;
    r.missed_wakes = missed;
    r.errors = errors;
    // Pushes per phone as a distribution (the unit is a count, carried in the ms field).
    r.pushes_per_phone = percentiles(&pushes_per_phone);
    r.handoff_latency = percentiles(&handoff);
    r.wake_latency = percentiles(&wake);
    r.passed = stream.ok()
        && missed == 0
        && errors == 0
        && r.bad_payloads == 0
        && completed == phones.len();
    r.failing_phones = failing;
    r
}

impl Report {
    /// The human-readable report.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<34} {v}");
        };
        let lat = |p: &Percentiles| {
            if p.count == 0 {
                "n/a".to_owned()
            } else {
                format!(
                    "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
                    p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count
                )
            }
        };
        let _ = writeln!(
            s,
            "ssepush device report: {} phones × {} cycles in {:.1} s",
            self.devices, self.cycles, self.elapsed_secs
        );
        row(
            &mut s,
            "phones through every cycle",
            format!("{} / {}", self.completed, self.devices),
        );
        row(&mut s, "events published", self.published.to_string());
        row(
            &mut s,
            "events expected (sum over phones)",
            self.stream.expected.to_string(),
        );
        row(&mut s, "events received", self.stream.received.to_string());
        row(
            &mut s,
            "  of which caught up from the proxy",
            self.from_proxy.to_string(),
        );
        row(
            &mut s,
            "  shown after the local filter",
            self.displayed.to_string(),
        );
        row(&mut s, "lost", self.stream.lost.to_string());
        row(&mut s, "duplicated", self.stream.duplicated.to_string());
        row(&mut s, "out of order", self.stream.out_of_order.to_string());
        row(
            &mut s,
            "unexpected (other channels)",
            self.stream.unexpected.to_string(),
        );
        row(
            &mut s,
            "proxy buffer gaps / origin resets",
            format!("{} / {}", self.proxy_gaps, self.resets),
        );
        row(&mut s, "network flaps", self.flaps.to_string());
        row(&mut s, "sleeps", self.sleeps.to_string());
        row(&mut s, "woken by push", self.wakes.to_string());
        row(
            &mut s,
            "wakes that never came",
            self.missed_wakes.to_string(),
        );
        row(
            &mut s,
            "pushes received (stale, bad)",
            format!(
                "{} ({}, {})",
                self.pushes, self.stale_pushes, self.bad_payloads
            ),
        );
        row(
            &mut s,
            "pushes per phone",
            format!(
                "p50 {:.0}  p99 {:.0}  max {:.0}",
                self.pushes_per_phone.p50_ms,
                self.pushes_per_phone.p99_ms,
                self.pushes_per_phone.max_ms
            ),
        );
        row(
            &mut s,
            "handoff latency (POST → 201)",
            lat(&self.handoff_latency),
        );
        row(
            &mut s,
            "wake latency (publish → push)",
            lat(&self.wake_latency),
        );
        row(&mut s, "errors", self.errors.to_string());
        if !self.failing_phones.is_empty() {
            let _ = writeln!(s, "  failing phones (worst first):");
            for p in &self.failing_phones {
                let _ = writeln!(
                    s,
                    "    #{:<5} {:<8} expected {} received {} lost {} dup {} disorder {} missed wakes {} cycles {}{}",
                    p.index,
                    p.platform,
                    p.stream.expected,
                    p.stream.received,
                    p.stream.lost,
                    p.stream.duplicated,
                    p.stream.out_of_order,
                    p.missed_wakes,
                    p.cycles,
                    p.errors
                        .first()
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        let _ = writeln!(s, "{}", if self.passed { "PASS" } else { "FAIL" });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> EventId {
        EventId::new(1000, n)
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_perfect_stream_passes() {
        let ids: Vec<_> = (1..=5).map(id).collect();
        let c = check_stream(&ids, &ids);
        assert_eq!(
            c,
            StreamCheck {
                expected: 5,
                received: 5,
                ..StreamCheck::default()
            }
        );
        assert!(c.ok());
    }

    #[test]
    fn loss_duplicates_disorder_and_strangers_are_counted() {
        let expected: Vec<_> = (1..=6).map(id).collect();
        // 2 lost; 3 twice; 5 before 4; 99 from elsewhere.
        let received = vec![id(1), id(3), id(3), id(5), id(4), id(6), id(99)];
        let c = check_stream(&expected, &received);
        assert_eq!(c.expected, 6);
        assert_eq!(c.received, 7);
        assert_eq!(c.lost, 1);
        assert_eq!(c.duplicated, 1);
        assert_eq!(c.out_of_order, 1);
        assert_eq!(c.unexpected, 1);
        assert!(!c.ok());
    }

    #[test]
    fn nothing_received_is_all_lost() {
        let c = check_stream(&[id(1), id(2)], &[]);
        assert_eq!(c.lost, 2);
        assert!(!c.ok());
    }

    fn owed(n: u64, at: u64, wakes: bool) -> Owed {
        Owed {
            id: id(n),
            published: ms(at),
            wakes,
        }
    }

    #[test]
    fn wake_latency_runs_from_the_first_owed_publish() {
        let sleep = Sleep {
            handed_off: ms(100),
            cursor: Some(id(1)),
            woke: Woke::Push(ms(450)),
        };
        let events = [owed(1, 50, true), owed(2, 300, false), owed(3, 400, true)];
        assert_eq!(
            judge_sleep(&sleep, &events, ms(1000)),
            SleepVerdict::Woken {
                latency: Some(ms(50))
            }
        );
        // Owed before the handoff: measured from the handoff.
        let early = [owed(2, 20, true)];
        assert_eq!(
            judge_sleep(&sleep, &early, ms(1000)),
            SleepVerdict::Woken {
                latency: Some(ms(350))
            }
        );
    }

    #[test]
    fn a_timeout_with_an_owed_event_is_a_missed_wake() {
        let sleep = Sleep {
            handed_off: ms(0),
            cursor: Some(id(1)),
            woke: Woke::Timeout(ms(3000)),
        };
        assert_eq!(
            judge_sleep(&sleep, &[owed(2, 500, true)], ms(1000)),
            SleepVerdict::MissedWake
        );
        // Published too close to the end of the sleep: not held against the proxy.
        assert_eq!(
            judge_sleep(&sleep, &[owed(2, 2500, true)], ms(1000)),
            SleepVerdict::Quiet
        );
        // The wake filter does not pass it: no wake was owed.
        assert_eq!(
            judge_sleep(&sleep, &[owed(2, 500, false)], ms(1000)),
            SleepVerdict::Quiet
        );
        // Already received before the handoff.
        assert_eq!(
            judge_sleep(&sleep, &[owed(1, 500, true)], ms(1000)),
            SleepVerdict::Quiet
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sample: Vec<_> = (1..=100).map(ms).collect();
        let p = percentiles(&sample);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p95_ms, 95.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(percentiles(&[]).count, 0);
        assert_eq!(percentiles(&[ms(7)]).p99_ms, 7.0);
    }

    fn phone(received: Vec<EventId>, sleeps: Vec<Sleep>) -> PhoneRecord {
        PhoneRecord {
            index: 0,
            platform: "apns".into(),
            channels: vec!["sim.0".into()],
            received,
            cycles_done: 1,
            sleeps,
            pushes: 1,
            ..PhoneRecord::default()
        }
    }

    #[test]
    fn the_report_passes_a_clean_run_and_fails_on_loss_or_missed_wakes() {
        let published = vec![owed(1, 10, true), owed(2, 200, true)];
        let woken = Sleep {
            handed_off: ms(100),
            cursor: Some(id(1)),
            woke: Woke::Push(ms(230)),
        };
        let good = phone(vec![id(1), id(2)], vec![woken.clone()]);
        let r = build_report(
            std::slice::from_ref(&good),
            1,
            2,
            ms(1000),
            ms(5000),
            |_| published.clone(),
        );
        assert!(r.passed, "{}", r.table());
        assert_eq!(r.wakes, 1);
        assert_eq!(r.wake_latency.count, 1);
        assert_eq!(r.wake_latency.p50_ms, 30.0);
        assert!(r.table().contains("PASS"));

        let lossy = phone(vec![id(1)], vec![woken]);
        let r = build_report(&[good.clone(), lossy], 1, 2, ms(1000), ms(5000), |_| {
            published.clone()
        });
        assert!(!r.passed);
        assert_eq!(r.stream.lost, 1);
        assert_eq!(r.failing_phones.len(), 1);
        assert!(r.table().contains("FAIL"));

        let slept_through = Sleep {
            handed_off: ms(100),
            cursor: Some(id(1)),
            woke: Woke::Timeout(ms(3100)),
        };
        let unwoken = phone(vec![id(1), id(2)], vec![slept_through]);
        let r = build_report(&[unwoken], 1, 2, ms(1000), ms(5000), |_| published.clone());
        assert!(!r.passed);
        assert_eq!(r.missed_wakes, 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["missed_wakes"], 1);
        assert_eq!(json["passed"], false);

        let mut unfinished = good;
        unfinished.cycles_done = 0;
        assert!(
            !build_report(&[unfinished], 1, 2, ms(1000), ms(5000), |_| published
                .clone())
            .passed
        );
    }
}
