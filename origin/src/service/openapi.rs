//! The OpenAPI pieces every server's document shares (utoipa): the error schema, the bearer
//! security scheme, the ops operations, and the list of methods a document's routes have (what
//! CORS preflights allow).
//!
//! A server builds its document from its handlers' `#[utoipa::path]` annotations; it adds
//! [`Components`] as a modifier (`#[openapi(modifiers(&Components))]`) so `Error` and the
//! `bearer` scheme exist, and marks each guarded operation with
//! `security(("bearer" = []))` — never with an `Authorization` header parameter (OpenAPI 3.1
//! §4.8.12.1: such a parameter is ignored by tools; the scheme is what they understand).

use axum::http::Method;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, PathItem};
use utoipa::{Modify, PartialSchema, ToSchema};

/// The name of the bearer security scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// Every error response's body: `{"error": {"code", "message", …}}`.
#[derive(Debug, ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error object: a stable `code` to branch on and a `message` for people. Some errors add
/// fields (a filter error's `line` and `column`, a failed precondition's `current`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, snake case, e.g. `invalid_filter`, `unauthorized`.
    pub code: String,
    /// What went wrong and what to fix.
    pub message: String,
}

/// `{"status": …}`, the body of `/healthz` and `/readyz` (with `error` when a store does not
/// answer).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Status {
    /// `ok` (liveness), `ready`, `draining` or `store unavailable`.
    pub status: String,
    /// Why a store does not answer.
    pub error: Option<String>,
}

/// Adds the shared components to a document: the `Error` schema and the `bearer` security
/// scheme (RFC 6750: a static token or a JWT).
#[derive(Debug, Clone, Copy)]
pub struct Components;

impl Modify for Components {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("token or JWT")
                    .description(Some(
                        "`Authorization: Bearer <token>`: a static token or an HS256/ES256 JWT, \
                         as the server's [auth] settings say. Required on a network address; \
                         a server on a loopback address without [auth] is open.",
                    ))
                    .build(),
            ),
        );
        let mut schemas = Vec::new();
        <ErrorBody as ToSchema>::schemas(&mut schemas);
        <Status as ToSchema>::schemas(&mut schemas);
        schemas.push((ErrorBody::name().into(), ErrorBody::schema()));
        schemas.push((Status::name().into(), Status::schema()));
        components.schemas.extend(schemas);
    }
}

/// The methods of a path item, in a fixed order.
pub fn path_methods(item: &PathItem) -> Vec<Method> {
    [
        (&item.get, Method::GET),
        (&item.put, Method::PUT),
        (&item.post, Method::POST),
        (&item.delete, Method::DELETE),
        (&item.options, Method::OPTIONS),
        (&item.head, Method::HEAD),
        (&item.patch, Method::PATCH),
        (&item.trace, Method::TRACE),
    ]
    .into_iter()
    .filter(|(op, _)| op.is_some())
    .map(|(_, m)| m)
    .collect()
}

/// Every method any route of `doc` has: what [`super::cors::layer`] allows.
pub fn methods(doc: &openapi::OpenApi) -> Vec<Method> {
    doc.paths.paths.values().flat_map(path_methods).collect()
}
