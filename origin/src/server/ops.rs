//! The origin's readiness probe: both stores answer and the server is not draining. Liveness
//! and metrics are the service layer's ([`crate::service::ops`]).

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::state::AppState;
use crate::service::openapi::Status;
use crate::service::ops::Readiness;

/// Readiness: the stores answer and the server is not draining
///
/// 200 when the event log and the dataset store answer a ping; 503 while draining or when a
/// store does not answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    operation_id = "get_readyz",
    responses(
        (status = 200, description = "ready", body = Status),
        (status = 503, description = "draining, or a store does not answer", body = Status),
    ),
)]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let ping = async {
        st.log.ping().await.map_err(|e| e.to_string())?;
        st.datasets
            .ping()
            .await
            .map_err(|e| crate::store::LogError::Unavailable(e.to_string()).to_string())
    };
    match ping.await {
        Ok(()) if !st.shutdown.is_cancelled() => Readiness::Ready,
        Ok(()) => Readiness::Draining,
        Err(e) => Readiness::StoreUnavailable(e),
    }
    .into_response()
}
