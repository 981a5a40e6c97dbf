//! Data synchronisation: versioned key → JSON maps that clients mirror by snapshot and delta.
//!
//! # Model
//!
//! A **dataset** is a map from key to JSON value with a version counter (`u64`, 0 before the
//! first change) that every change bumps by exactly one. Each entry remembers the dataset version
//! of its last change, which is also its `ETag`. A dataset that was never written is simply empty
//! at version 0: clients may read and follow it before anything exists.
//!
//! * **Snapshot** (`GET /v1/datasets/{name}`): `{"name", "version", "entries": {key: {"value",
//!   "version"}}}`, entries as an object keyed by key (sorted), so a client replaces its copy
//!   wholesale and remembers `version`.
//! * **Delta** (`?since=V`): `{"name", "version", "since", "changes": [{"key", "value"?,
//!   "version", "deleted"?}]}`: one change per key changed after `V` (its latest state), in
//!   version order; a deleted key is a tombstone `{"key", "version", "deleted": true}`.
//!   Applying the changes to the snapshot at `V` yields exactly the snapshot at `version`.
//!
//! # The changelog and 410
//!
//! Each dataset keeps its last `changelog_len` change records (version, key, put/delete).
//! Because every change bumps the version by one and appends one record, the changelog always
//! holds the contiguous versions `floor + 1 ..= version` with `floor = version − len`; a delta
//! since `V` is answerable exactly when `floor ≤ V ≤ version` ([`delta_window`]). An older `V` is
//! **410 Gone**: the client must fetch a full snapshot. A `V` *newer* than the dataset is also
//! 410: that cursor comes from another history (e.g. an in-memory origin that restarted), and
//! answering "no changes" would leave the client silently wrong forever.
//!
//! # Writes and merge policy
//!
//! A write reaches the store with one [`Precondition`] (the entry is at version `v`, exists, or
//! does not exist) and runs under its dataset's [`MergePolicy`]; [`conditional`] turns the
//! request's `If-Match` / `If-None-Match` lists into such preconditions. [`evaluate`] is the whole
//! decision on plain values. Stores apply it atomically with the version bump, the entry write
//! and the changelog append: the memory store calls it under its lock; the Redis store runs the
//! equivalent [`Guard`] inside one Lua script and, when the guard fails, classifies the refusal
//! with [`evaluate`] on the current entry the script returned (`Guard::holds` agrees with
//! `evaluate` on every input; a unit test checks it exhaustively).
//!
//! # Events
//!
//! Every applied change is also an event on channel `datasets.<name>` ([`change_event`]), type
//! `dataset.put` or `dataset.delete`, data `{"key", "value"?, "version"}`. The server publishes
//! it *after* the change is committed: a change is durable before its event exists, so a client
//! that sees the event and then fetches a delta always finds the change.

pub mod conditional;
pub mod memory;
#[cfg(feature = "server")]
pub mod redis;

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::Channel;
use crate::conditional::EntityTag;
use crate::event::NewEvent;
use crate::store::LogError;

/// Longest dataset name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Every dataset's changes are published on `datasets.<name>`.
pub const CHANNEL_PREFIX: &str = "datasets.";
/// Event type of a put.
pub const PUT_TYPE: &str = "dataset.put";
/// Event type of a delete.
pub const DELETE_TYPE: &str = "dataset.delete";

/// Why a dataset name or key was refused; the message is meant for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("dataset name must be 1 to {MAX_NAME_LEN} bytes")]
    NameLength,
    #[error(
        "dataset name {0:?} is invalid: use letters, digits, '_' and '-', in tokens separated by \
         single dots (it becomes the channel 'datasets.<name>')"
    )]
    NameChars(String),
    #[error("key must be 1 to {MAX_KEY_LEN} bytes")]
    KeyLength,
    #[error(
        "key {0:?} is invalid: use letters, digits and '_', '-', '.', ':', '@', '~' (not '.' or '..')"
    )]
    KeyChars(String),
}

/// A validated dataset name: dot-separated tokens of `[A-Za-z0-9_-]`, so `datasets.<name>` is a
/// valid channel and the name can sit inside a Redis hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName(String);

impl DatasetName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::NameLength);
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !s.split('.').all(token_ok) {
            return Err(NameError::NameChars(s.chars().take(64).collect()));
        }
        Ok(DatasetName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel this dataset's changes are published on.
    pub fn channel(&self) -> Channel {
        // The name's alphabet is a subset of a channel token's and its tokens are non-empty,
        // and MAX_NAME_LEN + the prefix stays within MAX_CHANNEL_LEN: this always parses.
        Channel::parse(&format!("{CHANNEL_PREFIX}{}", self.0))
            .unwrap_or_else(|e| unreachable!("dataset name {:?} made a bad channel: {e}", self.0))
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated key: URL-safe characters only, so it never needs escaping in a path and cannot
/// be a dot segment that clients or proxies would normalise away.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_KEY_LEN {
            return Err(NameError::KeyLength);
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@~".contains(&b));
        if !ok || s == "." || s == ".." {
            return Err(NameError::KeyChars(s.chars().take(64).collect()));
        }
        Ok(Key(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Value,
    pub version: u64,
}

/// A write's condition on the entry's current state, as the store checks it atomically with
/// the write. [`conditional::plan`] derives it from the request's `If-Match` / `If-None-Match`.
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
}

/// One changelog record. The value is not kept: a delta reads the entry's current value, which
/// is the one this record wrote whenever this record is the key's latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub version: u64,
    pub key: String,
    pub deleted: bool,
}

/// One key's change in a delta: its latest state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    /// The new value; `None` for a tombstone. (A JSON `null` value is `Some(Null)`.)
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub value: Option<Value>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// A `value` field that is present is a value, even `null`; only an absent one is `None`.
fn present_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A full snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub version: u64,
    pub entries: BTreeMap<String, Entry>,
}

/// The changes after `since`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub name: String,
    pub version: u64,
    pub since: u64,
    pub changes: Vec<Change>,
}

impl Snapshot {
    /// Applies a delta, as a client does.
    pub fn apply(&mut self, delta: &Delta) {
        for c in &delta.changes {
            if c.deleted {
                self.entries.remove(&c.key);
            } else {
                self.entries.insert(
                    c.key.clone(),
                    Entry {
                        value: c.value.clone().unwrap_or(Value::Null),
                        version: c.version,
                    },
                );
            }
        }
        self.version = self.version.max(delta.version);
    }
}

/// A `since` the changelog cannot answer (410): fetch a full snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    pub since: u64,
    /// The oldest `since` the changelog answers.
    pub oldest: u64,
    /// The dataset's current version.
    pub version: u64,
}

/// How many of the newest changelog records answer a delta since `since`, on a dataset at
/// `version` whose changelog holds `len` records (versions `version − len + 1 ..= version`).
pub fn delta_window(version: u64, len: u64, since: u64) -> Result<u64, Gone> {
    let oldest = version.saturating_sub(len);
    if since < oldest || since > version {
        return Err(Gone {
            since,
            oldest,
            version,
        });
    }
    Ok(version - since)
}

/// The delta's changes from the changelog records after `since` (ascending, contiguous) and the
/// current entries: one change per key, its latest, in version order. `Err` says the store's
/// data is inconsistent (a record's key does not hold the state the record says).
pub fn compute_changes<'a>(
    since: u64,
    records: &[ChangeRecord],
    current: impl Fn(&str) -> Option<&'a Entry>,
) -> Result<Vec<Change>, String> {
    for (i, r) in records.iter().enumerate() {
        if r.version != since + 1 + i as u64 {
            return Err(format!(
                "changelog is not contiguous: record {i} after {since} has version {}",
                r.version
            ));
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in records.iter().rev() {
        if !seen.insert(r.key.as_str()) {
            continue;
        }
        let entry = current(&r.key);
        let change = match (r.deleted, entry) {
            (true, None) => Change {
                key: r.key.clone(),
                value: None,
                version: r.version,
                deleted: true,
            },
            (false, Some(e)) if e.version == r.version => Change {
                key: r.key.clone(),
                value: Some(e.value.clone()),
                version: r.version,
                deleted: false,
            },
            _ => {
                return Err(format!(
                    "key {:?}: changelog version {} disagrees with the stored entry",
                    r.key, r.version
                ));
            }
        };
        out.push(change);
    }
    out.reverse();
    Ok(out)
}

/// The event announcing an applied change on `datasets.<name>`.
pub fn change_event(name: &DatasetName, applied: &Applied) -> NewEvent {
    let mut data = serde_json::Map::new();
    data.insert("key".into(), Value::String(applied.key.as_str().to_owned()));
    if let Some(v) = &applied.value {
        data.insert("value".into(), v.clone());
    }
    data.insert("version".into(), Value::from(applied.version));
    NewEvent {
        channel: name.channel(),
        kind: if applied.value.is_some() {
            PUT_TYPE
        } else {
            DELETE_TYPE
        }
        .to_owned(),
        data: Value::Object(data),
    }
}

/// Per-dataset bounds every store applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetLimits {
    /// Change records kept per dataset (at least 1).
    pub changelog_len: u64,
    /// Most keys per dataset.
    pub max_keys: u64,
}

impl Default for DatasetLimits {
    fn default() -> Self {
        DatasetLimits {
            changelog_len: 10_000,
            max_keys: 100_000,
        }
    }
}

/// `[datasets]` settings: merge policies and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetSettings {
    /// Merge policy of datasets without an override: `"reject"` (a write over an existing key
    /// needs `If-Match`, else 428) or `"last-writer-wins"`. Default `"reject"`.
    pub default_policy: MergePolicy,
    /// Per-dataset policy overrides, dataset name → policy. Default: none.
    pub policies: BTreeMap<String, MergePolicy>,
    /// Changes kept per dataset for `?since=` deltas; an older `since` gets 410. Default 10000.
    pub changelog_len: u64,
    /// Most keys one dataset holds; a PUT that would create one more gets 409. Default 100000.
    pub max_keys: u64,
}

impl Default for DatasetSettings {
    fn default() -> Self {
        let limits = DatasetLimits::default();
        DatasetSettings {
            default_policy: MergePolicy::Reject,
            policies: BTreeMap::new(),
            changelog_len: limits.changelog_len,
            max_keys: limits.max_keys,
        }
    }
}

impl DatasetSettings {
    pub fn policy_for(&self, name: &DatasetName) -> MergePolicy {
        self.policies
            .get(name.as_str())
            .copied()
            .unwrap_or(self.default_policy)
    }

    pub fn limits(&self) -> DatasetLimits {
        DatasetLimits {
            changelog_len: self.changelog_len,
            max_keys: self.max_keys,
        }
    }

    /// Checks what serde cannot; the message names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.changelog_len == 0 {
            return Err("datasets.changelog_len must be at least 1".into());
        }
        if self.max_keys == 0 {
            return Err("datasets.max_keys must be at least 1".into());
        }
        for name in self.policies.keys() {
            DatasetName::parse(name).map_err(|e| format!("datasets.policies: {e}"))?;
        }
        Ok(())
    }
}

/// Where datasets live. Every write is atomic: precondition check, version bump, entry write and
/// changelog append happen together or not at all.
#[async_trait]
pub trait DatasetStore: Send + Sync + 'static {
    /// The whole dataset (empty at version 0 if it was never written).
    async fn snapshot(&self, name: &DatasetName) -> Result<Snapshot, LogError>;

    /// The changes after `since`, or [`Gone`] when the changelog cannot answer it.
    async fn delta(&self, name: &DatasetName, since: u64) -> Result<Result<Delta, Gone>, LogError>;

    /// Applies one write if its precondition and the merge policy allow it.
    async fn write(&self, name: &DatasetName, write: Write) -> Result<WriteOutcome, LogError>;

    /// Readiness probe.
    async fn ping(&self) -> Result<(), LogError>;
}

/// Opens the dataset store a store URL names, like [`crate::store::open`]: `memory` or
/// `redis://…` (sharing the event log's namespace).
#[cfg(feature = "server")]
pub async fn open(
    url: &str,
    namespace: &str,
    limits: DatasetLimits,
) -> Result<std::sync::Arc<dyn DatasetStore>, LogError> {
    if url == "memory" || url.starts_with("memory://") {
        Ok(std::sync::Arc::new(memory::MemoryDatasets::new(limits)))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(std::sync::Arc::new(
            redis::RedisDatasets::connect(url, namespace, limits).await?,
        ))
    } else {
        Err(LogError::BadUrl(url.to_owned()))
    }
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
    fn names_and_keys_are_validated() {
        for ok in ["prefs", "users.eu", "a-b_c", "X1"] {
            let n = DatasetName::parse(ok).unwrap();
            assert_eq!(n.channel().as_str(), format!("datasets.{ok}"));
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a*",
            "a>",
            "{x}",
            "a:b",
            long.as_str(),
        ] {
            assert!(DatasetName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DatasetName::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
        for ok in ["k", "user:42", "a.b", "x@y~z", "_-"] {
            assert!(Key::parse(ok).is_ok(), "{ok:?}");
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2F", long.as_str()] {
            assert!(Key::parse(bad).is_err(), "{bad:?}");
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

    #[test]
    fn the_410_decision() {
        // version 10, changelog holds 7..=10: since 6..=10 are answerable.
        assert_eq!(delta_window(10, 4, 6), Ok(4));
        assert_eq!(delta_window(10, 4, 10), Ok(0));
        assert_eq!(
            delta_window(10, 4, 5),
            Err(Gone {
                since: 5,
                oldest: 6,
                version: 10
            })
        );
        // A cursor from another history (ahead of the dataset) is gone too.
        assert!(delta_window(10, 4, 11).is_err());
        // A fresh dataset answers since=0 with nothing.
        assert_eq!(delta_window(0, 0, 0), Ok(0));
        // A full changelog since the start answers since=0.
        assert_eq!(delta_window(3, 3, 0), Ok(3));
        assert!(delta_window(4, 3, 0).is_err());
    }

    fn rec(version: u64, key: &str, deleted: bool) -> ChangeRecord {
        ChangeRecord {
            version,
            key: key.into(),
            deleted,
        }
    }

    #[test]
    fn deltas_keep_the_latest_change_per_key_with_tombstones() {
        // History: v1 put a, v2 put b, v3 put a, v4 delete b, v5 put c.
        let records = [
            rec(1, "a", false),
            rec(2, "b", false),
            rec(3, "a", false),
            rec(4, "b", true),
            rec(5, "c", false),
        ];
        let entries: BTreeMap<String, Entry> =
            [("a".to_string(), entry(3)), ("c".to_string(), entry(5))].into();
        let changes = compute_changes(0, &records, |k| entries.get(k)).unwrap();
        let keys: Vec<_> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.version, c.deleted))
            .collect();
        assert_eq!(keys, [("a", 3, false), ("b", 4, true), ("c", 5, false)]);
        assert_eq!(changes[0].value, Some(json!({"v": 3})));
        assert_eq!(changes[1].value, None);
        // Since 3: only b's delete and c.
        let changes = compute_changes(3, &records[3..], |k| entries.get(k)).unwrap();
        assert_eq!(changes.len(), 2);
        // Applying a delta to the old snapshot gives the new one.
        let mut old = Snapshot {
            name: "d".into(),
            version: 3,
            entries: [("a".to_string(), entry(3)), ("b".to_string(), entry(2))].into(),
        };
        old.apply(&Delta {
            name: "d".into(),
            version: 5,
            since: 3,
            changes,
        });
        assert_eq!(old.entries, entries);
        assert_eq!(old.version, 5);
        // Tombstones serialise without a value, puts without `deleted`.
        let json = serde_json::to_value(compute_changes(0, &records, |k| entries.get(k)).unwrap())
            .unwrap();
        assert_eq!(json[1], json!({"key": "b", "version": 4, "deleted": true}));
        assert_eq!(
            json[0],
            json!({"key": "a", "value": {"v": 3}, "version": 3})
        );
    }

    #[test]
    fn a_null_value_is_not_a_tombstone() {
        let put: Change =
            serde_json::from_value(json!({"key": "k", "value": null, "version": 2})).unwrap();
        assert_eq!(put.value, Some(Value::Null));
        assert!(!put.deleted);
        let tomb: Change =
            serde_json::from_value(json!({"key": "k", "version": 3, "deleted": true})).unwrap();
        assert_eq!(tomb.value, None);
        let mut snap = Snapshot {
            name: "d".into(),
            version: 1,
            entries: BTreeMap::new(),
        };
        let mut delta = Delta {
            name: "d".into(),
            version: 2,
            since: 1,
            changes: vec![put],
        };
        snap.apply(&delta);
        assert_eq!(
            snap.entries["k"],
            Entry {
                value: Value::Null,
                version: 2
            }
        );
        delta.changes = vec![tomb];
        delta.version = 3;
        snap.apply(&delta);
        assert!(snap.entries.is_empty());
    }

    #[test]
    fn inconsistent_changelogs_are_errors_not_wrong_deltas() {
        let entries: BTreeMap<String, Entry> = [("a".to_string(), entry(2))].into();
        // A gap in the versions.
        assert!(
            compute_changes(0, &[rec(1, "a", false), rec(3, "a", false)], |k| entries
                .get(k))
            .is_err()
        );
        // The record says a was put at 1, but a is at 2 and no later record says so.
        assert!(compute_changes(0, &[rec(1, "a", false)], |k| entries.get(k)).is_err());
        // A tombstone for a key that exists.
        assert!(compute_changes(1, &[rec(2, "a", true)], |k| entries.get(k)).is_err());
    }

    #[test]
    fn change_events_carry_key_value_and_version() {
        let name = DatasetName::parse("prefs").unwrap();
        let put = Applied {
            key: Key::parse("theme").unwrap(),
            version: 3,
            value: Some(json!("dark")),
            created: true,
        };
        let e = change_event(&name, &put);
        assert_eq!(e.channel.as_str(), "datasets.prefs");
        assert_eq!(e.kind, PUT_TYPE);
        assert_eq!(
            e.data,
            json!({"key": "theme", "value": "dark", "version": 3})
        );
        let del = Applied {
            value: None,
            created: false,
            ..put
        };
        let e = change_event(&name, &del);
        assert_eq!(e.kind, DELETE_TYPE);
        assert_eq!(e.data, json!({"key": "theme", "version": 3}));
    }

    #[test]
    fn settings_resolve_policies_and_validate() {
        let mut s = DatasetSettings::default();
        s.validate().unwrap();
        s.policies
            .insert("prefs".into(), MergePolicy::LastWriterWins);
        let name = |n: &str| DatasetName::parse(n).unwrap();
        assert_eq!(s.policy_for(&name("prefs")), MergePolicy::LastWriterWins);
        assert_eq!(s.policy_for(&name("other")), MergePolicy::Reject);
        let parsed: DatasetSettings = serde_json::from_value(
            json!({"default_policy": "last-writer-wins", "policies": {"x": "reject"}}),
        )
        .unwrap();
        assert_eq!(parsed.default_policy, MergePolicy::LastWriterWins);
        s.policies.insert("bad name".into(), MergePolicy::Reject);
        assert!(s.validate().unwrap_err().contains("datasets.policies"));
        let zero = DatasetSettings {
            changelog_len: 0,
            ..DatasetSettings::default()
        };
        assert!(zero.validate().is_err());
    }
}
