//! Snapshots and deltas: the changelog's records, the 410 rule ([`delta_window`]) and the
//! changes a delta carries ([`compute_changes`]).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::write::Entry;

/// One changelog record. The value is not kept: a delta reads the entry's current value, which
/// is the one this record wrote whenever this record is the key's latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub version: u64,
    pub key: String,
    pub deleted: bool,
}

/// One key's change in a delta: its latest state.
#[cfg_attr(feature = "service", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "service", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub version: u64,
    pub entries: BTreeMap<String, Entry>,
}

/// The changes after `since`.
#[cfg_attr(feature = "service", derive(utoipa::ToSchema))]
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

    fn rec(version: u64, key: &str, deleted: bool) -> ChangeRecord {
        ChangeRecord {
            version,
            key: key.into(),
            deleted,
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
}
