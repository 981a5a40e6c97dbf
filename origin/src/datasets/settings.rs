//! `[datasets]` settings: merge policies per dataset, and the bounds every store applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::name::DatasetName;
use super::write::MergePolicy;

/// Per-dataset bounds every store applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetLimits {
    /// Change records kept per dataset (at least 1).
    pub changelog_len: u64,
    /// Most keys per dataset.
    pub max_keys: u64,
    /// Most bytes of values (compact JSON) per dataset.
    pub max_bytes: u64,
}

/// Default byte budget of one dataset's values: 64 MiB.
pub const DEFAULT_DATASET_BYTES: u64 = 64 << 20;

impl Default for DatasetLimits {
    fn default() -> Self {
        DatasetLimits {
            changelog_len: 10_000,
            max_keys: 100_000,
            max_bytes: DEFAULT_DATASET_BYTES,
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
    /// Most bytes of values (as compact JSON) one dataset holds; a PUT that would take it
    /// beyond gets 507 (one value larger than this, 413). Default 67108864 (64 MiB).
    pub max_dataset_bytes: u64,
}

impl Default for DatasetSettings {
    fn default() -> Self {
        let limits = DatasetLimits::default();
        DatasetSettings {
            default_policy: MergePolicy::Reject,
            policies: BTreeMap::new(),
            changelog_len: limits.changelog_len,
            max_keys: limits.max_keys,
            max_dataset_bytes: limits.max_bytes,
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
            max_bytes: self.max_dataset_bytes,
        }
    }

    /// Checks what serde cannot; the message names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.changelog_len == 0 {
            return Err("datasets.changelog_len must be at least 1".into());
        }
        if self.max_dataset_bytes < 1024 {
            return Err("datasets.max_dataset_bytes must be at least 1024".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
