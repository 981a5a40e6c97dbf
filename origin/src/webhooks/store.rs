//! Where webhooks live: the [`WebhookStore`] trait and the types it speaks. Backends are
//! `memory` and `redis` beside this file; [`crate::stores::open`] picks one by the origin's
//! store URL.
//!
//! A record (definition + delivery state) is written whole, guarded by a revision number
//! (compare-and-set): the API and the delivery worker both update records, and neither may
//! silently undo the other's change. A writer that loses the race re-reads and re-applies its
//! change (see `worker::WebhookService::update`).
//!
//! Leases decide which origin node delivers a webhook: a holder renews its lease well before it
//! expires; a node that dies stops renewing and another takes over after the lease TTL. The
//! worker's state writes are fenced by the lease, so a node that lost its lease (a long pause)
//! cannot move the cursor any more.

use std::time::Duration;

use async_trait::async_trait;

use super::Record;
use crate::store::LogError;

/// A record with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub record: Record,
    pub rev: u64,
}

/// How a guarded write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Written; the new revision.
    Done(u64),
    /// Someone else wrote first: re-read and retry.
    Conflict,
    /// The webhook was deleted.
    Gone,
    /// The writer no longer holds the lease it asked to be checked.
    NotHolder,
}

/// How an insert went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Done,
    /// The namespace already holds the maximum number of webhooks.
    Full,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new webhook unless `max` are already stored.
    async fn insert(&self, record: &Record, max: usize) -> Result<Insert, LogError>;

    /// One webhook with its revision.
    async fn get(&self, id: &str) -> Result<Option<Versioned>, LogError>;

    /// Every webhook, in no particular order.
    async fn list(&self) -> Result<Vec<Versioned>, LogError>;

    /// Replaces a record if its revision is still `rev` and, when `holder` is given, that node
    /// still holds the webhook's lease.
    async fn put(&self, record: &Record, rev: u64, holder: Option<&str>) -> Result<Put, LogError>;

    /// Deletes a webhook and its lease; false if there was none.
    async fn delete(&self, id: &str) -> Result<bool, LogError>;

    /// Takes the lease on `id` for `node`, or renews it if `node` holds it. False while another
    /// node holds it.
    async fn lease(&self, id: &str, node: &str, ttl: Duration) -> Result<bool, LogError>;

    /// Gives the lease up (on shutdown), if `node` holds it, so a peer can take over at once.
    async fn release(&self, id: &str, node: &str) -> Result<(), LogError>;
}
