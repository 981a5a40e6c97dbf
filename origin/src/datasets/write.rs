//! A write and its decision: the merge policy, the precondition a write carries, and
//! [`evaluate`], the whole decision on plain values, with [`Guard`], its form for stores that
//! check inside the store.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::name::Key;
use crate::conditional::EntityTag;

/// What happens to a write that gives no precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergePolicy {
    /// Writing over an existing key needs `If-Match` (428 without): no conflict is ever
    /// silently overwritten. Creating a new key needs nothing.
    #[default]
    Reject,
    /// Writes without a precondition always apply; the latest to arrive wins. Preconditions,
    /// when given, are still honoured.
    LastWriterWins,
}

/// One entry of a dataset: its value and the dataset version of its last change.
#[cfg_attr(feature = "service", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Value,
    pub version: u64,
}

/// A write's condition on the entry's current state, as the store checks it atomically with
/// the write. [`super::conditional::plan`] derives it from the request's `If-Match` / `If-None-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match` / `If-None-Match`: the merge policy decides.
    None,
    /// The entry exists at exactly version `v` (e.g. `If-Match: "<v>"`).
    IfMatch(u64),
    /// The entry exists (`If-Match: *`).
    IfExists,
    /// The entry does not exist (`If-None-Match: *`: create only).
    IfAbsent,
}

/// The entity tag of a version, `"42"`: an entry's version, or a dataset's for its snapshot.
pub fn etag(version: u64) -> EntityTag {
    EntityTag::strong(version.to_string())
}

/// What a write does to its key.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put(Value),
    Delete,
}

/// One write request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub key: Key,
    pub op: Op,
    pub precondition: Precondition,
    pub policy: MergePolicy,
}

/// Why a write was not applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A delete of a key that does not exist (404).
    NotFound,
    /// The precondition does not hold (412); `current` is the entry as it is.
    PreconditionFailed { current: Option<Entry> },
    /// `reject` policy: changing an existing key needs `If-Match` (428).
    PreconditionRequired { current: Entry },
}

/// The whole write decision on plain values: may `op` under `pre` and `policy` apply to a key
/// whose current entry is `current`?
pub fn evaluate(
    current: Option<&Entry>,
    op: &Op,
    pre: Precondition,
    policy: MergePolicy,
) -> Result<(), Refusal> {
    let failed = || Refusal::PreconditionFailed {
        current: current.cloned(),
    };
    // A delete needs something to delete, whatever else was asked.
    if matches!(op, Op::Delete) && current.is_none() {
        return Err(Refusal::NotFound);
    }
    match (pre, current) {
        (Precondition::IfMatch(v), Some(c)) if c.version == v => Ok(()),
        (Precondition::IfMatch(_), _) => Err(failed()),
        (Precondition::IfExists, Some(_)) => Ok(()),
        (Precondition::IfExists, None) => Err(failed()),
        (Precondition::IfAbsent, None) => Ok(()),
        (Precondition::IfAbsent, Some(_)) => Err(failed()),
        (Precondition::None, None) => Ok(()),
        (Precondition::None, Some(c)) => match policy {
            MergePolicy::LastWriterWins => Ok(()),
            MergePolicy::Reject => Err(Refusal::PreconditionRequired { current: c.clone() }),
        },
    }
}

/// [`evaluate`] reduced to a check on the current entry's version alone, for stores that run
/// the check inside the store (the Redis Lua script): `guard(..).holds(current.version)` is
/// `evaluate(current, ..).is_ok()` for every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Always,
    Never,
    Absent,
    Present,
    Version(u64),
}

impl Guard {
    pub fn new(op: &Op, pre: Precondition, policy: MergePolicy) -> Guard {
        let delete = matches!(op, Op::Delete);
        match pre {
            Precondition::IfMatch(v) => Guard::Version(v),
            Precondition::IfExists => Guard::Present,
            // Nothing can be deleted only if it does not exist.
            Precondition::IfAbsent if delete => Guard::Never,
            Precondition::IfAbsent => Guard::Absent,
            Precondition::None => match (policy, delete) {
                (MergePolicy::LastWriterWins, true) => Guard::Present,
                (MergePolicy::LastWriterWins, false) => Guard::Always,
                // Only a key that does not exist may be written without If-Match, and a delete
                // always needs an existing key: a delete without If-Match never applies.
                (MergePolicy::Reject, true) => Guard::Never,
                (MergePolicy::Reject, false) => Guard::Absent,
            },
        }
    }

    pub fn holds(self, current_version: Option<u64>) -> bool {
        match self {
            Guard::Always => true,
            Guard::Never => false,
            Guard::Absent => current_version.is_none(),
            Guard::Present => current_version.is_some(),
            Guard::Version(v) => current_version == Some(v),
        }
    }
}

/// A change that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub key: Key,
    /// The dataset's new version, now the entry's version (or its tombstone's).
    pub version: u64,
    /// The new value; `None` for a delete.
    pub value: Option<Value>,
    /// The key did not exist before.
    pub created: bool,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    Applied(Applied),
    Refused(Refusal),
    /// A put would create a key beyond the dataset's `max_keys`.
    Full,
    /// A put would take the dataset's values beyond its `max_bytes` (compact JSON).
    OverBudget,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: u64) -> Entry {
        Entry {
            value: json!({"v": v}),
            version: v,
        }
    }

    #[test]
    fn preconditions_decide_writes() {
        use MergePolicy::*;
        use Precondition as P;
        let put = Op::Put(json!(1));
        let del = Op::Delete;
        let cur = entry(5);
        let some = Some(&cur);
        // If-Match: exact version only; a missing key fails it (412 with current null).
        assert_eq!(evaluate(some, &put, P::IfMatch(5), Reject), Ok(()));
        assert_eq!(
            evaluate(some, &put, P::IfMatch(4), Reject),
            Err(Refusal::PreconditionFailed {
                current: Some(cur.clone())
            })
        );
        assert_eq!(
            evaluate(None, &put, P::IfMatch(4), LastWriterWins),
            Err(Refusal::PreconditionFailed { current: None })
        );
        // If-Match: * and If-None-Match: *.
        assert_eq!(evaluate(some, &put, P::IfExists, Reject), Ok(()));
        assert!(evaluate(None, &put, P::IfExists, Reject).is_err());
        assert_eq!(evaluate(None, &put, P::IfAbsent, Reject), Ok(()));
        assert_eq!(
            evaluate(some, &put, P::IfAbsent, LastWriterWins),
            Err(Refusal::PreconditionFailed {
                current: Some(cur.clone())
            })
        );
        // No precondition: creating is always fine; overwriting depends on the policy.
        assert_eq!(evaluate(None, &put, P::None, Reject), Ok(()));
        assert_eq!(
            evaluate(some, &put, P::None, Reject),
            Err(Refusal::PreconditionRequired {
                current: cur.clone()
            })
        );
        assert_eq!(evaluate(some, &put, P::None, LastWriterWins), Ok(()));
        // Deletes: a missing key is 404 whatever the precondition.
        for pre in [P::None, P::IfMatch(1), P::IfExists, P::IfAbsent] {
            assert_eq!(
                evaluate(None, &del, pre, LastWriterWins),
                Err(Refusal::NotFound)
            );
        }
        assert_eq!(evaluate(some, &del, P::IfMatch(5), Reject), Ok(()));
        assert!(matches!(
            evaluate(some, &del, P::None, Reject),
            Err(Refusal::PreconditionRequired { .. })
        ));
        assert_eq!(evaluate(some, &del, P::None, LastWriterWins), Ok(()));
    }

    #[test]
    fn the_guard_agrees_with_evaluate_everywhere() {
        let currents = [None, Some(entry(3)), Some(entry(4))];
        let pres = [
            Precondition::None,
            Precondition::IfMatch(3),
            Precondition::IfMatch(9),
            Precondition::IfExists,
            Precondition::IfAbsent,
        ];
        for cur in &currents {
            for op in [Op::Put(json!(null)), Op::Delete] {
                for pre in pres {
                    for policy in [MergePolicy::Reject, MergePolicy::LastWriterWins] {
                        assert_eq!(
                            Guard::new(&op, pre, policy).holds(cur.as_ref().map(|e| e.version)),
                            evaluate(cur.as_ref(), &op, pre, policy).is_ok(),
                            "{cur:?} {op:?} {pre:?} {policy:?}"
                        );
                    }
                }
            }
        }
    }
}
