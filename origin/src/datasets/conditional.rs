//! From a write's `If-Match` / `If-None-Match` (RFC 9110 §13.1.1–2, parsed by
//! [`crate::conditional`]) to the one [`Precondition`] a store checks atomically with the write.
//!
//! An entry's entity tag is its version, `"<v>"` ([`etag`]). Three requests map onto a store
//! precondition as they are, and the store's answer is final: no field (the merge policy
//! decides), `If-Match: *` alone ([`Precondition::IfExists`]) and `If-None-Match: *` alone
//! ([`Precondition::IfAbsent`]). Anything else — a list of tags, weak tags, both fields — is a
//! predicate on the entry's current version that no single store precondition expresses. Such a
//! write is **pinned**: it is attempted under exactly the state the predicate accepts
//! (`IfMatch(v)` or `IfAbsent`); when the store refuses because the entry is in another state, it
//! reports that state, the predicate is evaluated on it, and either the write is pinned to it or
//! the answer is 412 with it. A pinned write applies only while the entry is in a state the
//! predicate accepted, so the outcome is exact; a second refusal means another writer changed the
//! entry in between, so the attempts are bounded by [`MAX_ATTEMPTS`].

use super::write::{Entry, Precondition, etag};
use crate::conditional::{Preconditions, TagList};

/// Most store attempts for one pinned write (each retry means a concurrent change).
pub const MAX_ATTEMPTS: usize = 8;

/// Entry versions start at 1 (a dataset's first change is version 1), so a write pinned to
/// version 0 is always refused, and the refusal reports the entry's current state.
const PROBE: Precondition = Precondition::IfMatch(0);

/// How a write is attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One attempt under this store precondition; a refusal is final.
    Direct(Precondition),
    /// Attempts pinned to states these preconditions accept.
    Pinned(Preconditions),
}

/// The plan for a write with these request preconditions.
pub fn plan(pre: Preconditions) -> Plan {
    match (&pre.if_match, &pre.if_none_match) {
        (None, None) => Plan::Direct(Precondition::None),
        (Some(TagList::Any), None) => Plan::Direct(Precondition::IfExists),
        (None, Some(TagList::Any)) => Plan::Direct(Precondition::IfAbsent),
        _ => Plan::Pinned(pre),
    }
}

impl Plan {
    /// The first attempt's store precondition. A pinned write guesses the state: absent if the
    /// preconditions accept that, else the newest version `If-Match` names that they accept,
    /// else a probe that the store refuses with the current state.
    pub fn first(&self) -> Precondition {
        match self {
            Plan::Direct(p) => *p,
            Plan::Pinned(pre) if pre.hold(None) => Precondition::IfAbsent,
            Plan::Pinned(pre) => pre
                .if_match
                .iter()
                .flat_map(TagList::tags)
                .filter_map(|t| {
                    let v: u64 = t.opaque_str()?.parse().ok()?;
                    // Strong comparison is byte for byte: `"007"` is not version 7's tag.
                    (t.strong_eq(&etag(v)) && pre.hold(Some(&etag(v)))).then_some(v)
                })
                .max()
                .map_or(PROBE, Precondition::IfMatch),
        }
    }

    /// The store refused the last attempt with `PreconditionFailed` and reported the entry as
    /// `current` (`None`: no such key). The next attempt's store precondition, or `None` when
    /// the request's preconditions fail on `current`: 412 with it.
    pub fn retry(&self, current: Option<&Entry>) -> Option<Precondition> {
        let Plan::Pinned(pre) = self else {
            return None;
        };
        let tag = current.map(|e| etag(e.version));
        pre.hold(tag.as_ref()).then_some(match current {
            Some(e) => Precondition::IfMatch(e.version),
            None => Precondition::IfAbsent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{MergePolicy, Op, Refusal, evaluate};
    use serde_json::json;

    fn pre(im: Option<&str>, inm: Option<&str>) -> Preconditions {
        Preconditions::parse(im.map(str::as_bytes), inm.map(str::as_bytes)).unwrap()
    }

    fn entry(v: u64) -> Entry {
        Entry {
            value: json!(v),
            version: v,
        }
    }

    /// Runs `plan` against an entry that other writers move through `states` (one state per
    /// attempt, the last one repeated), the way the server's loop does: the write's outcome, as
    /// `Ok(version it applied on)` or `Err(refusal)`, or `None` when the attempts ran out.
    fn run(plan: &Plan, states: &[Option<u64>]) -> Option<Result<Option<u64>, Refusal>> {
        let mut attempt = plan.first();
        for i in 0..MAX_ATTEMPTS {
            let state = states[i.min(states.len() - 1)].map(entry);
            let op = Op::Put(json!("new"));
            match evaluate(state.as_ref(), &op, attempt, MergePolicy::Reject) {
                Ok(()) => return Some(Ok(state.map(|e| e.version))),
                Err(Refusal::PreconditionFailed { current }) => {
                    match plan.retry(current.as_ref()) {
                        Some(next) => attempt = next,
                        None => return Some(Err(Refusal::PreconditionFailed { current })),
                    }
                }
                Err(r) => return Some(Err(r)),
            }
        }
        None
    }

    fn failed(v: Option<u64>) -> Option<Result<Option<u64>, Refusal>> {
        Some(Err(Refusal::PreconditionFailed {
            current: v.map(entry),
        }))
    }

    #[test]
    fn star_alone_and_no_field_go_straight_to_the_store() {
        assert_eq!(plan(pre(None, None)), Plan::Direct(Precondition::None));
        assert_eq!(
            plan(pre(Some("*"), None)),
            Plan::Direct(Precondition::IfExists)
        );
        assert_eq!(
            plan(pre(None, Some("*"))),
            Plan::Direct(Precondition::IfAbsent)
        );
        assert_eq!(plan(pre(None, Some("*"))).retry(Some(&entry(1))), None);
    }

    #[test]
    fn if_match_lists_apply_on_any_listed_version() {
        let p = plan(pre(Some("\"3\", \"5\""), None));
        assert_eq!(p.first(), Precondition::IfMatch(5));
        assert_eq!(run(&p, &[Some(5)]), Some(Ok(Some(5))));
        assert_eq!(run(&p, &[Some(3)]), Some(Ok(Some(3))));
        assert_eq!(run(&p, &[Some(4)]), failed(Some(4)));
        assert_eq!(run(&p, &[None]), failed(None));
    }

    #[test]
    fn weak_and_foreign_tags_never_match_but_report_the_entry() {
        for im in ["W/\"5\"", "\"05\"", "\"abc\"", "W/\"5\", \"x\""] {
            let p = plan(pre(Some(im), None));
            assert_eq!(p.first(), PROBE, "{im}");
            assert_eq!(run(&p, &[Some(5)]), failed(Some(5)), "{im}");
            assert_eq!(run(&p, &[None]), failed(None), "{im}");
        }
    }

    #[test]
    fn if_none_match_lists_refuse_listed_versions_weakly() {
        let p = plan(pre(None, Some("W/\"5\", \"6\"")));
        assert_eq!(p.first(), Precondition::IfAbsent);
        assert_eq!(run(&p, &[None]), Some(Ok(None)));
        assert_eq!(run(&p, &[Some(5)]), failed(Some(5)));
        assert_eq!(run(&p, &[Some(6)]), failed(Some(6)));
        assert_eq!(run(&p, &[Some(7)]), Some(Ok(Some(7))));
    }

    #[test]
    fn both_fields_are_evaluated_together() {
        // Exists, and is not version 5.
        let p = plan(pre(Some("*"), Some("\"5\"")));
        assert_eq!(p.first(), PROBE);
        assert_eq!(run(&p, &[Some(4)]), Some(Ok(Some(4))));
        assert_eq!(run(&p, &[Some(5)]), failed(Some(5)));
        assert_eq!(run(&p, &[None]), failed(None));
        // Exists and does not exist: never.
        let p = plan(pre(Some("*"), Some("*")));
        assert_eq!(run(&p, &[Some(4)]), failed(Some(4)));
        assert_eq!(run(&p, &[None]), failed(None));
        // Listed by If-Match but excluded by If-None-Match.
        let p = plan(pre(Some("\"4\", \"5\""), Some("\"5\"")));
        assert_eq!(p.first(), Precondition::IfMatch(4));
        assert_eq!(run(&p, &[Some(5)]), failed(Some(5)));
    }

    #[test]
    fn a_pinned_write_follows_concurrent_changes_and_stays_exact() {
        // The entry moves 3 → 5 between attempts: the write lands on 5, which the list names.
        let p = plan(pre(Some("\"3\", \"5\""), None));
        assert_eq!(run(&p, &[Some(4), Some(5)]), failed(Some(4)));
        let p = plan(pre(Some("\"3\", \"5\", \"9\""), None));
        assert_eq!(run(&p, &[Some(3), Some(3)]), Some(Ok(Some(3))));
        // Guessed 9, found 3 (accepted), then it moved to 5 (accepted), then stayed.
        assert_eq!(run(&p, &[Some(3), Some(5)]), Some(Ok(Some(5))));
        // …then moved to 6 (not listed): 412 with 6.
        assert_eq!(run(&p, &[Some(3), Some(6)]), failed(Some(6)));
        // An entry that never stops changing exhausts the attempts.
        let states: Vec<Option<u64>> = (10..30).map(Some).collect();
        let p = plan(pre(None, Some("\"1\"")));
        assert_eq!(run(&p, &states), None);
    }
}
