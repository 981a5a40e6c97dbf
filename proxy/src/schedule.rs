//! The node's **schedule**: when each live handoff is next due, and which handoffs changed
//! since the scheduler ([`crate::scheduler`]) last asked them. Plain data behind one mutex,
//! with time passed in, so its rules are unit-tested on values.
//!
//! It replaces a task per handoff (issue 11: a parked task, its timer, a `Notify` and a
//! `CancellationToken` were over a kilobyte per sleeping handoff): a sleeping handoff costs a
//! pointer in the list of its due millisecond (a B-tree of lists: handoffs created together
//! expire together, so a list holds many) — its expiry, or when its wake policy wants to be
//! asked again — and a [`Slot`] inside the handoff.
//!
//! * [`Schedule::changed`]: something changed what the handoff should do (an event owing a
//!   wake, a check-in, a state change, a send finished): it is asked again at once. A handoff
//!   is in the changed list at most once (its slot's flag).
//! * [`Schedule::set_timer`]: ask it again at an instant (milliseconds, rounded up: never
//!   before). A handoff has at most one timer; setting one replaces the previous.
//! * [`Schedule::take`]: what is to be asked now — the changed ones, then the due ones — and
//!   when the next timer is due.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Most handoffs [`Schedule::take`] hands out at once: a mass expiry is worked through in
/// rounds, so the scheduler loop yields between them.
pub const BATCH: usize = 4096;

/// A handoff's place in the schedule, held by the handoff. Its fields change only under the
/// schedule's lock (atomics only to be `Sync`).
#[derive(Debug)]
pub struct Slot {
    /// The due millisecond (since the schedule's origin, plus one) of its timer; 0: none.
    due: AtomicU64,
    /// In the changed list.
    changed: AtomicBool,
}

/// What the schedule holds: anything with a [`Slot`].
pub trait Scheduled {
    fn slot(&self) -> &Slot;
}

struct Queue<T> {
    /// Due millisecond → what is due then (in no order).
    timers: BTreeMap<u64, Vec<Arc<T>>>,
    changed: Vec<Arc<T>>,
}

/// See the module docs.
pub struct Schedule<T> {
    origin: Instant,
    queue: Mutex<Queue<T>>,
    /// Wakes the scheduler loop: a handoff changed, or a timer is due sooner than it sleeps.
    pub wake: Notify,
}

impl<T> std::fmt::Debug for Schedule<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.queue.lock().unwrap();
        f.debug_struct("Schedule")
            .field("timers", &q.timers.values().map(Vec::len).sum::<usize>())
            .field("changed", &q.changed.len())
            .finish()
    }
}

impl<T: Scheduled> Schedule<T> {
    /// An empty schedule; times before `origin` count as due at once.
    pub fn new(origin: Instant) -> Arc<Self> {
        Arc::new(Schedule {
            origin,
            queue: Mutex::new(Queue {
                timers: BTreeMap::new(),
                changed: Vec::new(),
            }),
            wake: Notify::new(),
        })
    }

    /// A new handoff's slot (no timer, not changed).
    pub fn slot(&self) -> Slot {
        Slot {
            due: AtomicU64::new(0),
            changed: AtomicBool::new(false),
        }
    }

    /// `at` as a due millisecond, rounded up (a timer never fires before its instant); ≥ 1.
    fn due_ms(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let ms = d.as_millis() as u64 + u64::from(!d.subsec_nanos().is_multiple_of(1_000_000));
        ms + 1
    }

    /// `now` as a millisecond on the same scale, rounded down.
    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64 + 1
    }

    fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms - 1)
    }

    /// `item` changed: it is asked again at once. Returns false when it already was to be.
    pub fn changed(&self, item: Arc<T>) -> bool {
        let mut q = self.queue.lock().unwrap();
        if item.slot().changed.swap(true, Ordering::Relaxed) {
            return false;
        }
        q.changed.push(item);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// `item` is asked again at `at` (replacing its previous timer), or never (`None`: only
    /// a change brings it back).
    pub fn set_timer(&self, item: &Arc<T>, at: Option<Instant>) {
        let slot = item.slot();
        let mut q = self.queue.lock().unwrap();
        let old = slot.due.swap(0, Ordering::Relaxed);
        if old != 0
            && let Some(due) = q.timers.get_mut(&old)
        {
            if let Some(i) = due.iter().position(|x| Arc::ptr_eq(x, item)) {
                due.swap_remove(i);
            }
            if due.is_empty() {
                q.timers.remove(&old);
            }
        }
        let Some(at) = at else { return };
        let ms = self.due_ms(at);
        slot.due.store(ms, Ordering::Relaxed);
        let earliest = q.timers.keys().next().is_none_or(|first| ms < *first);
        q.timers.entry(ms).or_default().push(item.clone());
        drop(q);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Forgets `item`'s timer (it ended, or left this node).
    pub fn remove(&self, item: &Arc<T>) {
        self.set_timer(item, None);
    }

    /// Up to [`BATCH`] items to ask now: the changed ones first (their flags cleared: a change
    /// from now on lists them again), then those whose timer is due at `now` (their timer
    /// cleared). Also when the earliest remaining timer is due (`None`: no timer).
    pub fn take(&self, now: Instant) -> (Vec<Arc<T>>, Option<Instant>) {
        let mut q = self.queue.lock().unwrap();
        let n = q.changed.len().min(BATCH);
        let mut out: Vec<Arc<T>> = q.changed.drain(..n).collect();
        for item in &out {
            item.slot().changed.store(false, Ordering::Relaxed);
        }
        let now_ms = self.now_ms(now);
        while out.len() < BATCH {
            let Some(mut entry) = q.timers.first_entry() else {
                break;
            };
            if *entry.key() > now_ms {
                break;
            }
            let due = entry.get_mut();
            let n = due.len().min(BATCH - out.len());
            for item in due.drain(due.len() - n..) {
                item.slot().due.store(0, Ordering::Relaxed);
                out.push(item);
            }
            if due.is_empty() {
                entry.remove();
            }
        }
        let next = if q.changed.is_empty() {
            q.timers.keys().next().map(|ms| self.instant(*ms))
        } else {
            // More changed ones than a batch: the next round is due at once.
            Some(now)
        };
        (out, next)
    }

    /// When `item`'s timer is due, if it has one.
    pub fn due(&self, item: &T) -> Option<Instant> {
        let _q = self.queue.lock().unwrap();
        match item.slot().due.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.instant(ms)),
        }
    }

    /// Timers held (for tests and metrics).
    pub fn timers(&self) -> usize {
        self.queue
            .lock()
            .unwrap()
            .timers
            .values()
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(Slot, &'static str);

    impl Scheduled for Item {
        fn slot(&self) -> &Slot {
            &self.0
        }
    }

    fn item(s: &Schedule<Item>, name: &'static str) -> Arc<Item> {
        Arc::new(Item(s.slot(), name))
    }

    fn names(v: &[Arc<Item>]) -> Vec<&'static str> {
        v.iter().map(|i| i.1).collect()
    }

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_timer_fires_at_its_instant_and_not_before() {
        let t0 = Instant::now();
        let s = Schedule::new(t0);
        let a = item(&s, "a");
        // Sub-millisecond instants round up: never asked early.
        let at = t0 + ms(250) + Duration::from_micros(300);
        s.set_timer(&a, Some(at));
        assert_eq!(s.due(&a), Some(t0 + ms(251)));
        let (due, next) = s.take(t0 + ms(250));
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + ms(251)));
        assert!(s.take(at - Duration::from_micros(1)).0.is_empty());
        let (due, next) = s.take(t0 + ms(251));
        assert_eq!(names(&due), ["a"]);
        assert_eq!(next, None);
        assert_eq!(s.due(&a), None);
        // Fired once: not again.
        assert!(s.take(t0 + ms(10_000)).0.is_empty());
    }

    #[test]
    fn setting_a_timer_replaces_the_previous_one() {
        let t0 = Instant::now();
        let s = Schedule::new(t0);
        let (a, b) = (item(&s, "a"), item(&s, "b"));
        s.set_timer(&a, Some(t0 + ms(100)));
        s.set_timer(&b, Some(t0 + ms(100)));
        s.set_timer(&a, Some(t0 + ms(500)));
        assert_eq!(s.timers(), 2);
        assert_eq!(names(&s.take(t0 + ms(100)).0), ["b"]);
        s.remove(&a);
        assert_eq!(s.timers(), 0);
        assert!(s.take(t0 + ms(1000)).0.is_empty());
    }

    #[test]
    fn due_timers_come_out_earliest_first_and_the_past_is_due_at_once() {
        let t0 = Instant::now() + ms(1000);
        let s = Schedule::new(t0);
        let (a, b, c) = (item(&s, "a"), item(&s, "b"), item(&s, "c"));
        s.set_timer(&c, Some(t0 + ms(30)));
        s.set_timer(&a, Some(t0 + ms(10)));
        // Before the origin: due at once.
        s.set_timer(&b, Some(t0 - ms(500)));
        let (due, next) = s.take(t0 + ms(20));
        assert_eq!(names(&due), ["b", "a"]);
        assert_eq!(next, Some(t0 + ms(30)));
    }

    #[test]
    fn a_change_is_listed_once_until_taken() {
        let t0 = Instant::now();
        let s = Schedule::new(t0);
        let a = item(&s, "a");
        s.set_timer(&a, Some(t0 + ms(1000)));
        assert!(s.changed(a.clone()));
        assert!(!s.changed(a.clone()));
        // Changed ones come out at once; the timer stays until the scheduler sets another.
        let (due, next) = s.take(t0);
        assert_eq!(names(&due), ["a"]);
        assert_eq!(next, Some(t0 + ms(1000)));
        // Taken: a new change lists it again.
        assert!(s.changed(a.clone()));
        assert_eq!(names(&s.take(t0).0), ["a"]);
    }

    #[test]
    fn a_mass_expiry_comes_out_in_batches() {
        let t0 = Instant::now();
        let s = Schedule::new(t0);
        let items: Vec<_> = (0..BATCH + 10).map(|_| item(&s, "x")).collect();
        for i in &items {
            s.set_timer(i, Some(t0 + ms(5)));
        }
        let (first, next) = s.take(t0 + ms(5));
        assert_eq!(first.len(), BATCH);
        assert_eq!(next, Some(t0 + ms(5)));
        assert_eq!(s.take(t0 + ms(5)).0.len(), 10);
    }
}
