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
pub mod delta;
pub mod events;
pub mod memory;
pub mod name;
#[cfg(feature = "server")]
pub mod redis;
pub mod settings;
pub mod write;

use async_trait::async_trait;

pub use delta::{Change, ChangeRecord, Delta, Gone, Snapshot, compute_changes, delta_window};
pub use events::{DELETE_TYPE, PUT_TYPE, change_event};
pub use name::{CHANNEL_PREFIX, DatasetName, Key, MAX_KEY_LEN, MAX_NAME_LEN, NameError};
pub use settings::{DatasetLimits, DatasetSettings};
pub use write::{
    Applied, Entry, Guard, MergePolicy, Op, Precondition, Refusal, Write, WriteOutcome, etag,
    evaluate,
};

use crate::store::LogError;

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
