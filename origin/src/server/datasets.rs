//! Data sync over HTTP: `GET /v1/datasets/{name}[?since=V]`, `PUT` and `DELETE
//! /v1/datasets/{name}/{key}`. A thin shell: the model, the precondition rules and the delta
//! logic are in [`crate::datasets`]; this module maps headers and bodies onto them and outcomes
//! onto statuses.
//!
//! | outcome                                   | status |
//! |-------------------------------------------|--------|
//! | snapshot / delta                          | 200, `ETag` = dataset version; `If-None-Match` naming it (weakly, or `*`) → 304, `If-Match` not naming it → 412 |
//! | put created / replaced, delete applied    | 201 / 200, body `{"key","version","value"}` (delete: `"deleted": true`), `ETag` = entry version |
//! | bad name, key, JSON, `since`; a malformed `If-Match` / `If-None-Match` | 400 |
//! | delete of a missing key                   | 404 |
//! | `since` outside the changelog             | 410 `changelog_expired`: fetch the full snapshot |
//! | write whose `If-Match` / `If-None-Match` fails | 412 `precondition_failed`, `current` = `{"value","version"}` or null |
//! | `reject` policy, overwrite without If-Match | 428 `precondition_required`, `current` as above |
//! | put beyond `datasets.max_keys`            | 409 `dataset_full` |
//! | entry changed by other nodes on every attempt | 409 `write_conflict`: retry |
//!
//! Preconditions follow RFC 9110 §13 ([`crate::conditional`]): `If-Match` takes a list of entry
//! versions as strong tags (`"3", "5"`; a weak tag never matches) or `*`, `If-None-Match` a
//! list compared weakly or `*`, and both may be given. How a write's preconditions reach the
//! store atomically is [`crate::datasets::conditional`].
//!
//! Writes need publisher credentials ([`super::auth::PublisherAuth::check`]), because each one is
//! also published as an event on `datasets.<name>`.
//!
//! # Change, then event
//!
//! A write is committed in the dataset store first and published through
//! [`AppState::publish`] second, so a change is durable before its event exists: a client that
//! sees the event and fetches `?since=` always finds the change. If publishing fails after the
//! commit, the write still succeeds (it happened; failing it would make a retry hit 412), the
//! failure is logged and counted (`ssepush_origin_dataset_events_failed_total`), and followers
//! catch up with their next delta. Commit and publish run in a task of their own, so a client
//! hanging up mid-write cannot leave a committed change without its event. On one origin node
//! the commit and the publish of one dataset run under a per-dataset lock, so that node
//! publishes a dataset's events in version order; across nodes, events of different keys may
//! interleave, and each event carries its version.

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::conditional::{check_read, preconditions, set_etag};
use super::state::AppState;
use crate::datasets::conditional::{MAX_ATTEMPTS, Plan, plan};
use crate::datasets::{
    Applied, DatasetName, Delta, Entry, Gone, Key, NameError, Op, Refusal, Snapshot, Write,
    WriteOutcome, change_event, etag,
};
use crate::service::error::ApiError;
use crate::service::openapi::ErrorBody;

/// Per-dataset write locks on this node, by hash of the name: bounded, and two datasets
/// sharing a stripe only wait for each other briefly.
static WRITE_LOCKS: LazyLock<Vec<tokio::sync::Mutex<()>>> =
    LazyLock::new(|| (0..64).map(|_| tokio::sync::Mutex::new(())).collect());

fn write_lock(name: &DatasetName) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    &WRITE_LOCKS[(h.finish() % WRITE_LOCKS.len() as u64) as usize]
}

/// A dataset read: the full snapshot, or the delta since `since`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DatasetAnswer {
    Snapshot(Snapshot),
    Delta(Delta),
}

/// An applied write: the entry's key and new version, with its value (`PUT`) or
/// `"deleted": true` (`DELETE`, a tombstone).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EntryAnswer {
    pub key: String,
    /// The dataset version of this change, now the entry's `ETag`.
    pub version: u64,
    /// The new value (any JSON, `null` included); absent for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// True for a delete; absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::NameLength | NameError::NameChars(_) => "invalid_dataset",
            NameError::KeyLength | NameError::KeyChars(_) => "invalid_key",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request("invalid_path", e.body_text())
}

/// Full snapshot of a dataset, or the delta since version `since`
#[utoipa::path(
    get,
    path = "/v1/datasets/{name}",
    tag = "datasets",
    operation_id = "get_v1_datasets_name",
    params(
        ("name" = String, Path, description = "dataset name: dot-separated tokens of letters, digits, `_`, `-`"),
        ("since" = Option<u64>, Query, description = "a version from an earlier snapshot or delta"),
        ("If-None-Match" = Option<String>, Header, description = "dataset version ETags (weak comparison), or *"),
        ("If-Match" = Option<String>, Header, description = "dataset version ETags (strong comparison), or *"),
    ),
    responses(
        (status = 200, description = "the snapshot, or the delta since `since`", body = DatasetAnswer),
        (status = 304, description = "unchanged"),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 401, description = "missing or invalid reader credentials", body = ErrorBody),
        (status = 403, description = "the credential may not read this dataset", body = ErrorBody),
        (status = 410, description = "since is older than the changelog: fetch a snapshot", body = ErrorBody),
        (status = 412, description = "If-Match names no current version", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn get_dataset(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    let name = DatasetName::parse(&name)?;
    // A dataset is read as its change channel is: the same grant covers both.
    st.auth
        .reader(&headers, query.as_deref())?
        .check_read_channel(name.channel().as_str())?;
    let since = parse_since(query.as_deref())?;
    let pre = preconditions(&headers)?;
    // Both answers carry the dataset's version as their tag: a delta since V at version W is
    // unchanged exactly as long as the snapshot at W is.
    let (tag, body) = match since {
        None => {
            let snapshot = st.datasets.snapshot(&name).await?;
            (
                etag(snapshot.version),
                axum::Json(DatasetAnswer::Snapshot(snapshot)).into_response(),
            )
        }
        Some(since) => match st.datasets.delta(&name, since).await? {
            Ok(delta) => (
                etag(delta.version),
                axum::Json(DatasetAnswer::Delta(delta)).into_response(),
            ),
            Err(gone) => return Err(gone_error(&name, gone)),
        },
    };
    let mut resp = check_read(&pre, &tag).unwrap_or(body);
    set_etag(&mut resp, &tag);
    Ok(resp)
}

/// Write an entry; If-Match / If-None-Match preconditions
///
/// The body is the entry's new JSON value. The change is also published on `datasets.<name>`.
#[utoipa::path(
    put,
    path = "/v1/datasets/{name}/{key}",
    tag = "datasets",
    operation_id = "put_v1_datasets_name_key",
    params(
        ("name" = String, Path, description = "dataset name: dot-separated tokens of letters, digits, `_`, `-`"),
        ("key" = String, Path, description = "entry key: letters, digits and `_-.:@~`"),
        ("If-Match" = Option<String>, Header, description = "entry versions you based this on, as strong ETags (\"3\", \"5\"), or *"),
        ("If-None-Match" = Option<String>, Header, description = "* to create only, or entry versions to refuse (weak comparison)"),
    ),
    request_body(content = serde_json::Value, description = "the entry's new value, any JSON"),
    responses(
        (status = 200, description = "updated", body = EntryAnswer),
        (status = 201, description = "created", body = EntryAnswer),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 403, description = "the credential may not write this dataset", body = ErrorBody),
        (status = 408, description = "the body did not arrive within body_read_timeout_secs", body = ErrorBody),
        (status = 409, description = "dataset full, or the entry kept changing under concurrent writers", body = ErrorBody),
        (status = 413, description = "the value is larger than the body limit or the dataset's byte budget", body = ErrorBody),
        (status = 412, description = "precondition failed; `current` has the entry as it is", body = ErrorBody),
        (status = 428, description = "this dataset needs If-Match", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
        (status = 507, description = "the write would take the dataset beyond its byte budget", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn put_entry(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let access = st.auth.publisher(&headers, None)?;
    let (name, key) = parse_path(path)?;
    // A write publishes its change on `datasets.<name>`: it needs that publish grant.
    access.check_publish([name.channel().as_str()])?;
    let plan = plan(preconditions(&headers)?);
    let limit = st.settings.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a dataset value is at most {limit} bytes of JSON"),
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body must be the entry's JSON value: {e}"),
        )
    })?;
    let budget = st.settings.datasets.max_dataset_bytes;
    let size = serde_json::to_vec(&value).map_or(0, |b| b.len() as u64);
    if size > budget {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!(
                "a value of {size} bytes (compact JSON) is larger than the dataset's whole budget \
                 of {budget} bytes (datasets.max_dataset_bytes)"
            ),
        ));
    }
    write(&st, name, key, Op::Put(value), plan).await
}

/// Delete an entry
#[utoipa::path(
    delete,
    path = "/v1/datasets/{name}/{key}",
    tag = "datasets",
    operation_id = "delete_v1_datasets_name_key",
    params(
        ("name" = String, Path, description = "dataset name: dot-separated tokens of letters, digits, `_`, `-`"),
        ("key" = String, Path, description = "entry key: letters, digits and `_-.:@~`"),
        ("If-Match" = Option<String>, Header, description = "entry versions as strong ETags, or *"),
        ("If-None-Match" = Option<String>, Header, description = "entry versions to refuse (weak comparison), or *"),
    ),
    responses(
        (status = 200, description = "deleted: a tombstone", body = EntryAnswer),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 404, description = "no such entry", body = ErrorBody),
        (status = 409, description = "the entry kept changing under concurrent writers", body = ErrorBody),
        (status = 412, description = "precondition failed; `current` has the entry as it is", body = ErrorBody),
        (status = 428, description = "this dataset needs If-Match", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn delete_entry(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = st.auth.publisher(&headers, None)?;
    let (name, key) = parse_path(path)?;
    // A write publishes its change on `datasets.<name>`: it needs that publish grant.
    access.check_publish([name.channel().as_str()])?;
    let plan = plan(preconditions(&headers)?);
    write(&st, name, key, Op::Delete, plan).await
}

async fn write(
    st: &AppState,
    name: DatasetName,
    key: Key,
    op: Op,
    plan: Plan,
) -> Result<Response, ApiError> {
    // A task of its own, so it runs to completion even when the client hangs up: hyper drops
    // a handler whose connection closed, and a change committed in the store must still get
    // its event.
    tokio::spawn(commit(st.clone(), name, key, op, plan))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "dataset write task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the write failed unexpectedly; fetch the entry to see whether it applied",
            ))
        })
}

/// The write (attempted as `plan` says) and its event, under this node's lock for the dataset.
async fn commit(
    st: AppState,
    name: DatasetName,
    key: Key,
    op: Op,
    plan: Plan,
) -> Result<Response, ApiError> {
    let policy = st.settings.datasets.policy_for(&name);
    let _order = write_lock(&name).lock().await;
    let mut precondition = plan.first();
    let mut outcome = None;
    for _ in 0..MAX_ATTEMPTS {
        let write = Write {
            key: key.clone(),
            op: op.clone(),
            precondition,
            policy,
        };
        match st.datasets.write(&name, write).await? {
            WriteOutcome::Refused(Refusal::PreconditionFailed { current }) => {
                match plan.retry(current.as_ref()) {
                    Some(next) => precondition = next,
                    None => {
                        outcome = Some(WriteOutcome::Refused(Refusal::PreconditionFailed {
                            current,
                        }));
                        break;
                    }
                }
            }
            done => {
                outcome = Some(done);
                break;
            }
        }
    }
    let Some(outcome) = outcome else {
        metrics::counter!("ssepush_origin_dataset_writes_total", "outcome" => "conflict")
            .increment(1);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "write_conflict",
            format!(
                "the entry changed on every one of {MAX_ATTEMPTS} attempts to apply this write \
                 (other writers are busy on it); fetch it and retry"
            ),
        ));
    };
    let applied = match outcome {
        WriteOutcome::Applied(a) => a,
        WriteOutcome::Refused(r) => {
            metrics::counter!("ssepush_origin_dataset_writes_total", "outcome" => refusal_label(&r))
                .increment(1);
            return Err(refusal_error(&name, r));
        }
        WriteOutcome::OverBudget => {
            metrics::counter!("ssepush_origin_dataset_writes_total", "outcome" => "over_budget")
                .increment(1);
            let budget = st.settings.datasets.max_dataset_bytes;
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "dataset_over_budget",
                format!(
                    "dataset {:?} would hold more than its budget of {budget} bytes of values \
                     (datasets.max_dataset_bytes); nothing was written: delete or shrink entries \
                     first",
                    name.as_str()
                ),
            ));
        }
        WriteOutcome::Full => {
            metrics::counter!("ssepush_origin_dataset_writes_total", "outcome" => "full")
                .increment(1);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "dataset_full",
                format!(
                    "dataset {:?} holds its maximum of {} keys; delete some first",
                    name.as_str(),
                    st.settings.datasets.max_keys
                ),
            ));
        }
    };
    metrics::counter!("ssepush_origin_dataset_writes_total", "outcome" => "applied").increment(1);
    // Committed; now announce it (see the module docs for why a failure here is not the
    // client's failure).
    if let Err(e) = st.ingest(vec![change_event(&name, &applied)]).await {
        metrics::counter!("ssepush_origin_dataset_events_failed_total").increment(1);
        tracing::error!(
            dataset = %name,
            version = applied.version,
            error = %e.message,
            "dataset change committed but its event was not published"
        );
    }
    Ok(applied_response(&applied))
}

fn applied_response(a: &Applied) -> Response {
    let status = if a.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = EntryAnswer {
        key: a.key.as_str().to_owned(),
        version: a.version,
        value: a.value.clone(),
        deleted: a.value.is_none(),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    set_etag(&mut resp, &etag(a.version));
    resp
}

fn parse_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(DatasetName, Key), ApiError> {
    let Path((name, key)) = path.map_err(path_error)?;
    Ok((DatasetName::parse(&name)?, Key::parse(&key)?))
}

/// `since` from the query string; other parameters are ignored.
pub fn parse_since(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let mut since = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "since" {
            let v = v.trim();
            let ok = !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
            since = Some(v.parse::<u64>().ok().filter(|_| ok).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_since",
                    "since must be a dataset version (a non-negative integer) from an earlier \
                     snapshot or delta",
                )
            })?);
        }
    }
    Ok(since)
}

fn current_json(e: Option<&Entry>) -> Value {
    e.map_or(
        Value::Null,
        |e| json!({"value": e.value, "version": e.version}),
    )
}

fn refusal_label(r: &Refusal) -> &'static str {
    match r {
        Refusal::NotFound => "not_found",
        Refusal::PreconditionFailed { .. } => "precondition_failed",
        Refusal::PreconditionRequired { .. } => "precondition_required",
    }
}

fn refusal_error(name: &DatasetName, r: Refusal) -> ApiError {
    match r {
        Refusal::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("dataset {:?} has no such key", name.as_str()),
        ),
        Refusal::PreconditionFailed { current } => ApiError {
            details: Some(json!({"current": current_json(current.as_ref())})),
            ..ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                match &current {
                    Some(c) => format!(
                        "the entry is at version {}; `current` holds it: merge, then retry with \
                         If-Match: \"{}\"",
                        c.version, c.version
                    ),
                    None => "the entry does not exist (`current` is null)".to_owned(),
                },
            )
        },
        Refusal::PreconditionRequired { current } => ApiError {
            details: Some(json!({"current": current_json(Some(&current))})),
            ..ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                format!(
                    "dataset {:?} uses the 'reject' merge policy: changing an existing entry \
                     needs If-Match with its version (now \"{}\", see `current`)",
                    name.as_str(),
                    current.version
                ),
            )
        },
    }
}

fn gone_error(name: &DatasetName, g: Gone) -> ApiError {
    ApiError {
        details: Some(json!({"since": g.since, "oldest": g.oldest, "version": g.version})),
        ..ApiError::new(
            StatusCode::GONE,
            "changelog_expired",
            format!(
                "dataset {:?} cannot give the changes since version {}: it answers `since` \
                 from {} to {}; fetch the full snapshot (GET without since) and continue from its \
                 version",
                name.as_str(),
                g.since,
                g.oldest,
                g.version
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_or_is_a_400() {
        assert_eq!(parse_since(None).unwrap(), None);
        assert_eq!(parse_since(Some("x=1")).unwrap(), None);
        assert_eq!(parse_since(Some("since=42")).unwrap(), Some(42));
        for bad in [
            "since=",
            "since=-1",
            "since=1.5",
            "since=abc",
            "since=99999999999999999999999",
        ] {
            assert_eq!(
                parse_since(Some(bad)).unwrap_err().code,
                "invalid_since",
                "{bad}"
            );
        }
    }

    #[test]
    fn refusals_carry_the_current_entry() {
        let name = DatasetName::parse("d").unwrap();
        let e = refusal_error(
            &name,
            Refusal::PreconditionFailed {
                current: Some(Entry {
                    value: json!({"a": 1}),
                    version: 7,
                }),
            },
        );
        assert_eq!(e.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(
            e.details,
            Some(json!({"current": {"value": {"a": 1}, "version": 7}}))
        );
        let e = refusal_error(&name, Refusal::PreconditionFailed { current: None });
        assert_eq!(e.details, Some(json!({"current": null})));
        assert_eq!(
            refusal_error(&name, Refusal::NotFound).status,
            StatusCode::NOT_FOUND
        );
    }
}
