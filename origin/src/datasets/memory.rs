//! The in-memory dataset store: the default, one process, gone on restart.
//!
//! One mutex guards every dataset; each operation under it is a map lookup or two, and it is
//! never held across an `.await`. A write runs [`evaluate`] and applies the change under the
//! same lock, which is what makes the compare-and-set atomic. A dataset is created by its first
//! applied write, so refused writes and reads of unknown names leave nothing behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    Applied, ChangeRecord, DatasetLimits, DatasetName, DatasetStore, Delta, Entry, Gone, Op,
    Snapshot, Write, WriteOutcome, compute_changes, delta_window, evaluate,
};
use crate::store::LogError;

#[derive(Default)]
struct Dataset {
    version: u64,
    entries: BTreeMap<String, Entry>,
    /// The newest `changelog_len` records, oldest first; contiguous versions ending at `version`.
    changelog: VecDeque<ChangeRecord>,
    /// Bytes of the entries' values as compact JSON (the `max_bytes` budget).
    bytes: u64,
}

/// A value's size as the budget counts it: its compact JSON, as the Redis store keeps it.
fn json_len(v: &serde_json::Value) -> u64 {
    serde_json::to_vec(v).map_or(0, |b| b.len() as u64)
}

pub struct MemoryDatasets {
    inner: Mutex<HashMap<String, Dataset>>,
    limits: DatasetLimits,
}

impl MemoryDatasets {
    pub fn new(limits: DatasetLimits) -> Self {
        MemoryDatasets {
            inner: Mutex::new(HashMap::new()),
            limits: DatasetLimits {
                changelog_len: limits.changelog_len.max(1),
                ..limits
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Dataset>> {
        // Every mutation is completed before anything that could panic runs again, so a
        // poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl DatasetStore for MemoryDatasets {
    async fn snapshot(&self, name: &DatasetName) -> Result<Snapshot, LogError> {
        let inner = self.lock();
        let (version, entries) = inner
            .get(name.as_str())
            .map_or((0, BTreeMap::new()), |d| (d.version, d.entries.clone()));
        Ok(Snapshot {
            name: name.to_string(),
            version,
            entries,
        })
    }

    async fn delta(&self, name: &DatasetName, since: u64) -> Result<Result<Delta, Gone>, LogError> {
        let inner = self.lock();
        let empty = Dataset::default();
        let ds = inner.get(name.as_str()).unwrap_or(&empty);
        let n = match delta_window(ds.version, ds.changelog.len() as u64, since) {
            Ok(n) => n as usize,
            Err(gone) => return Ok(Err(gone)),
        };
        let records: Vec<ChangeRecord> = ds
            .changelog
            .range(ds.changelog.len() - n..)
            .cloned()
            .collect();
        let changes =
            compute_changes(since, &records, |k| ds.entries.get(k)).map_err(LogError::Corrupt)?;
        Ok(Ok(Delta {
            name: name.to_string(),
            version: ds.version,
            since,
            changes,
        }))
    }

    async fn write(&self, name: &DatasetName, write: Write) -> Result<WriteOutcome, LogError> {
        let mut inner = self.lock();
        let current = inner
            .get(name.as_str())
            .and_then(|d| d.entries.get(write.key.as_str()));
        if let Err(refusal) = evaluate(current, &write.op, write.precondition, write.policy) {
            return Ok(WriteOutcome::Refused(refusal));
        }
        let created = current.is_none();
        let ds = inner.entry(name.as_str().to_owned()).or_default();
        if created && ds.entries.len() as u64 >= self.limits.max_keys {
            return Ok(WriteOutcome::Full);
        }
        let old = ds
            .entries
            .get(write.key.as_str())
            .map_or(0, |e| json_len(&e.value));
        let new = match &write.op {
            Op::Put(v) => json_len(v),
            Op::Delete => 0,
        };
        // A write that does not grow the dataset always passes, so an over-full dataset (a
        // lowered budget) can still be cleaned up.
        if new > old && ds.bytes - old + new > self.limits.max_bytes {
            return Ok(WriteOutcome::OverBudget);
        }
        ds.bytes = ds.bytes - old + new;
        ds.version += 1;
        let version = ds.version;
        let key = write.key.as_str().to_owned();
        let value = match write.op {
            Op::Put(value) => {
                ds.entries.insert(
                    key.clone(),
                    Entry {
                        value: value.clone(),
                        version,
                    },
                );
                Some(value)
            }
            Op::Delete => {
                ds.entries.remove(&key);
                None
            }
        };
        ds.changelog.push_back(ChangeRecord {
            version,
            key,
            deleted: value.is_none(),
        });
        while ds.changelog.len() as u64 > self.limits.changelog_len {
            ds.changelog.pop_front();
        }
        Ok(WriteOutcome::Applied(Applied {
            key: write.key,
            version,
            value,
            created,
        }))
    }

    async fn ping(&self) -> Result<(), LogError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{Key, MergePolicy, Precondition, Refusal};
    use serde_json::json;

    fn put(key: &str, v: serde_json::Value, pre: Precondition) -> Write {
        Write {
            key: Key::parse(key).unwrap(),
            op: Op::Put(v),
            precondition: pre,
            policy: MergePolicy::Reject,
        }
    }

    #[tokio::test]
    async fn writes_bump_versions_and_deltas_follow() {
        let store = MemoryDatasets::new(DatasetLimits {
            changelog_len: 3,
            max_keys: 2,
            max_bytes: 1 << 20,
        });
        let ds = DatasetName::parse("d").unwrap();
        let applied = |o: WriteOutcome| match o {
            WriteOutcome::Applied(a) => a,
            other => panic!("not applied: {other:?}"),
        };
        let a = applied(
            store
                .write(&ds, put("a", json!(1), Precondition::None))
                .await
                .unwrap(),
        );
        assert_eq!((a.version, a.created), (1, true));
        // Overwrite under `reject` needs If-Match.
        let o = store
            .write(&ds, put("a", json!(2), Precondition::None))
            .await
            .unwrap();
        assert!(matches!(
            o,
            WriteOutcome::Refused(Refusal::PreconditionRequired { .. })
        ));
        let a = applied(
            store
                .write(&ds, put("a", json!(2), Precondition::IfMatch(1)))
                .await
                .unwrap(),
        );
        assert_eq!((a.version, a.created), (2, false));
        applied(
            store
                .write(&ds, put("b", json!(3), Precondition::None))
                .await
                .unwrap(),
        );
        // max_keys = 2.
        let o = store
            .write(&ds, put("c", json!(4), Precondition::None))
            .await
            .unwrap();
        assert_eq!(o, WriteOutcome::Full);
        let del = Write {
            key: Key::parse("b").unwrap(),
            op: Op::Delete,
            precondition: Precondition::IfMatch(3),
            policy: MergePolicy::Reject,
        };
        assert_eq!(applied(store.write(&ds, del).await.unwrap()).version, 4);
        // Changelog holds 2..=4.
        let delta = store.delta(&ds, 1).await.unwrap().unwrap();
        assert_eq!(delta.changes.len(), 2);
        assert!(delta.changes[1].deleted);
        assert_eq!(store.delta(&ds, 0).await.unwrap().unwrap_err().oldest, 1);
        let snap = store.snapshot(&ds).await.unwrap();
        assert_eq!(snap.version, 4);
        assert_eq!(snap.entries.len(), 1);
        // Unknown datasets are empty at version 0, and refused writes create nothing.
        let other = DatasetName::parse("other").unwrap();
        let del = Write {
            key: Key::parse("x").unwrap(),
            op: Op::Delete,
            precondition: Precondition::None,
            policy: MergePolicy::LastWriterWins,
        };
        assert_eq!(
            store.write(&other, del).await.unwrap(),
            WriteOutcome::Refused(Refusal::NotFound)
        );
        assert!(store.lock().get("other").is_none());
        assert_eq!(
            store.delta(&other, 0).await.unwrap().unwrap().changes,
            vec![]
        );
    }
}
