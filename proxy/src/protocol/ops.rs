//! The proxy's readiness answer, `GET /readyz`.

use serde::{Deserialize, Serialize};

/// `200 {"status": "ready", "handoffs": N, "watchers": M}` while the proxy takes handoffs;
/// `503 {"status": "draining"}` after shutdown began, `503 {"status": "store unavailable",
/// "error": "…"}` when the handoff store does not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// `ready`, `draining` or `store unavailable`.
    pub status: String,
    /// Handoffs held by the store (ready only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoffs: Option<usize>,
    /// Upstream watchers (distinct streams) open on this node, those lingering after their last
    /// handoff (`upstream.idle_linger_secs`) included (ready only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchers: Option<usize>,
    /// Why the store is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
