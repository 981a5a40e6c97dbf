//! What every handler shares ([`AppState`]) and the one ingest path every publishing transport
//! goes through ([`AppState::publish`], [`AppState::ingest`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::auth::OriginAuth;
use crate::datasets::DatasetStore;
use crate::event::EventId;
use crate::event::{NewEvent, SharedEvent};
use crate::hub::Hub;
use crate::service::error::ApiError;
use crate::settings::Settings;
use crate::store::{Appended, EventLog, Once};
use crate::streams::StaticStreams;
use crate::webhooks::worker::WebhookService;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub log: Arc<dyn EventLog>,
    pub hub: Arc<Hub>,
    /// Cancelled when the server begins to drain.
    pub shutdown: CancellationToken,
    /// The operator's static filter streams, compiled once (see [`crate::streams`]).
    pub streams: Arc<StaticStreams>,
    /// Who may read and write: every transport calls [`OriginAuth::reader`] or
    /// [`OriginAuth::publisher`].
    pub auth: Arc<OriginAuth>,
    /// Webhook delivery (see [`crate::webhooks`]); `None` if it could not start.
    pub webhooks: Option<Arc<WebhookService>>,
    /// Data sync: the versioned key/value datasets (see [`crate::datasets`]).
    pub datasets: Arc<dyn DatasetStore>,
}

/// Refuses client events on channels only the origin writes.
///
/// # Errors
/// 403 `reserved_channel`.
fn check_owned(events: &[NewEvent]) -> Result<(), ApiError> {
    // `streams.…` is written only by derivation and `datasets.…` only by data sync: a client
    // event there would pose as the operator's curated stream or as a dataset change.
    if let Some(e) = events.iter().find(|e| is_origin_owned(e.channel.as_str())) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "reserved_channel",
            format!(
                "channel {:?} is reserved: 'streams.<name>' channels are computed by the origin \
                     from its configured static filters and 'datasets.<name>' channels carry data \
                     sync changes; subscribe to them, publish elsewhere",
                e.channel.as_str()
            ),
        ));
    }
    Ok(())
}

/// Channels only the origin itself writes to.
pub fn is_origin_owned(channel: &str) -> bool {
    crate::streams::is_reserved(channel)
        || channel
            .strip_prefix(crate::datasets::CHANNEL_PREFIX)
            .is_some_and(|rest| !rest.is_empty())
}

impl AppState {
    /// The one ingest path: every transport that publishes (HTTP, WebSocket, data sync) stores
    /// events through here, so ingest-time work (static filter streams, metrics) happens once.
    ///
    /// # Errors
    /// 403 `reserved_channel` for a channel only the origin writes; 503 when the log fails.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, ApiError> {
        check_owned(&events)?;
        self.ingest(events).await
    }

    /// [`publish`](Self::publish) under a publisher's `Idempotency-Key`: the first request with
    /// a key stores the batch and keeps the key with its answer for
    /// `idempotency_ttl_secs`, atomically; a retry with the same key and the same
    /// `fingerprint` gets the first answer's ids and stores nothing.
    ///
    /// # Errors
    /// As [`publish`](Self::publish); 422 `idempotency_key_reused` when the key came with
    /// another request.
    pub async fn publish_once(
        &self,
        events: Vec<NewEvent>,
        key: &str,
        fingerprint: &str,
    ) -> Result<Vec<EventId>, ApiError> {
        check_owned(&events)?;
        let batch = self.streams.derive(events);
        let once = Once {
            key,
            fingerprint,
            ttl: std::time::Duration::from_secs(self.settings.idempotency_ttl_secs),
            answer: &batch.original,
        };
        match self.log.append_once(batch.events, once).await? {
            Appended::Stored(stored) => {
                metrics::counter!("ssepush_origin_events_published_total")
                    .increment(stored.len() as u64);
                Ok(stored
                    .iter()
                    .zip(&batch.original)
                    .filter_map(|(e, original)| original.then_some(e.id))
                    .collect())
            }
            Appended::Replayed {
                fingerprint: f,
                ids,
            } if f == fingerprint => {
                metrics::counter!("ssepush_origin_publish_replayed_total").increment(1);
                Ok(ids)
            }
            Appended::Replayed { .. } => Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request body; use a new key for \
                 a new request",
            )),
        }
    }

    /// [`publish`](Self::publish) without the client checks, for the origin's own events
    /// (dataset changes).
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, ApiError> {
        // Derived events go in the same batch, right after their originals: one atomic append,
        // and each stream's copy gets the id right after its source event.
        let batch = self.streams.derive(events);
        let stored = self.log.append(batch.events).await?;
        metrics::counter!("ssepush_origin_events_published_total").increment(stored.len() as u64);
        Ok(stored
            .into_iter()
            .zip(batch.original)
            .filter_map(|(e, original)| original.then_some(e))
            .collect())
    }
}
