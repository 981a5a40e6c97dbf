//! The service layer (feature `service`): what every HTTP server of the product shares — the
//! origin, the push proxy and the simulated push gateway — and nothing about any one of them.
//!
//! * [`error`] — the JSON error every 4xx/5xx is: `{"error": {"code", "message", …}}`;
//! * [`auth`] — bearer credentials (static tokens, HS256/ES256 JWTs) and the loopback rule;
//! * [`ops`] — `/healthz`, the `/readyz` answers, `/metrics` from one Prometheus recorder;
//! * [`listener`] — the accept loop: connection cap, header-read timeout, graceful drain, a
//!   per-connection kick;
//! * [`parse_errors`] — the HTTP parser's own refusals (hyper's empty 400) rewritten as JSON;
//! * [`body`] — request bodies read within a deadline and a byte limit (408/413);
//! * [`cors`] — the CORS policy, its methods taken from each server's route list;
//! * [`config`] — settings from TOML plus `SSEPUSH_<SERVER>_…` environment overrides;
//! * [`openapi`] — the document pieces every server shares: the `Error` schema, the `bearer`
//!   security scheme, the methods of a document's routes;
//! * [`redact`] — values fit for logs;
//! * [`egress`] — name resolution for outgoing requests to client-chosen destinations, refusing
//!   addresses that are not globally reachable ([`crate::special_purpose`]);
//! * [`tls`] — outbound HTTPS for every client: rustls on ring, Mozilla's roots plus an extra
//!   CA file, certificate problems named in errors.
//!
//! The time helper ([`crate::clock`]) and the backoff function ([`crate::backoff`]) are plain
//! code every layer uses, so they live in the protocol layer below this one.

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod cors;
pub mod egress;
pub mod error;
pub mod listener;
pub mod openapi;
pub mod ops;
pub mod parse_errors;
pub mod redact;
pub mod tls;
