//! The origin's routes and its OpenAPI 3.1 document, from one list ([`routes`]).
//!
//! Every handler carries its own `#[utoipa::path]` (method, path, parameters, request and
//! response schemas from the handler's types, `operationId`, security), and utoipa-axum's
//! [`OpenApiRouter`] mounts each handler and records its operation in one step, so a route
//! cannot be served without being documented, nor documented without being served
//! (`tests/openapi.rs` probes every documented operation on a real server). The shared
//! components (the `Error` schema, the `bearer` security scheme) come from the service layer
//! ([`crate::service::openapi`]).

use std::sync::OnceLock;

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::OpenApiVersion;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;
use super::{console, datasets, latest, ops, poll, publish, sse, webhooks, ws};
use crate::service::openapi::Components;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ssepush origin",
        description = "The origin streaming API: publish, SSE, WebSocket, long-poll, latest, data sync, webhooks."
    ),
    modifiers(&Components),
    tags(
        (name = "publish", description = "Writing events"),
        (name = "subscribe", description = "Reading events: SSE, WebSocket, long-poll, latest"),
        (name = "datasets", description = "Data sync: snapshots, deltas, conditional writes"),
        (name = "webhooks", description = "Outgoing deliveries, Standard Webhooks signatures"),
        (name = "console", description = "The browser console"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
struct OriginApi;

/// Every route of the origin with its documentation: the router and `/v1/openapi.json` are
/// both built from this one list.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(OriginApi::openapi())
        .routes(routes!(publish::publish))
        .routes(routes!(sse::sse))
        .routes(routes!(ws::ws))
        .routes(routes!(poll::poll))
        .routes(routes!(latest::latest))
        .routes(routes!(datasets::get_dataset))
        .routes(routes!(datasets::put_entry, datasets::delete_entry))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::show, webhooks::update, webhooks::remove))
        .routes(routes!(console::console))
        .routes(routes!(crate::service::ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(crate::service::ops::metrics))
        .routes(routes!(openapi_json))
}

/// The document, built once from [`routes`].
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, mut doc) = routes().split_for_parts();
        doc.openapi = OpenApiVersion::Version31;
        doc
    })
}

/// The document as served: [`document`] with the validators' input rules written in
/// ([`super::openapi_rules`]).
pub fn document_json() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut value = serde_json::to_value(document()).expect("an OpenAPI document serialises");
        super::openapi_rules::apply(&mut value);
        value
    })
}

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "ops",
    operation_id = "get_v1_openapijson",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)),
)]
pub async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(document_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_an_id_a_summary_and_responses() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}"));
                ids.push(id.to_owned());
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{id}"
                );
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{id}"
                );
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids are unique");
    }
}
