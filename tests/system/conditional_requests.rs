//! Conditional requests (RFC 9110 §13) against the real origin, on memory and on Redis:
//! `If-None-Match` compares weakly and takes `*` and lists on `/latest` and on dataset
//! snapshots and deltas alike; `If-Match` takes lists, compares strongly (a `W/` tag never
//! matches) and answers 412 with the current value for a well-formed tag that does not match;
//! only a malformed field is a 400.

use crate::support::TestOrigin;
use serde_json::{Value, json};
use ssepush_origin::settings::Settings;

/// Status, ETag and JSON body (Null when empty).
#[derive(Debug)]
struct Reply {
    status: u16,
    etag: Option<String>,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Reply {
    let req = headers.iter().fold(req, |r, (k, v)| r.header(*k, *v));
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Reply { status, etag, body }
}

async fn get(origin: &TestOrigin, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(
        crate::support::http().get(format!("{}{path}", origin.url)),
        headers,
    )
    .await
}

async fn put(origin: &TestOrigin, path: &str, value: Value, headers: &[(&str, &str)]) -> Reply {
    let req = crate::support::http()
        .put(format!("{}{path}", origin.url))
        .json(&value);
    send(req, headers).await
}

async fn delete(origin: &TestOrigin, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(
        crate::support::http().delete(format!("{}{path}", origin.url)),
        headers,
    )
    .await
}

fn assert_status(r: &Reply, want: u16, what: &str) {
    assert_eq!(r.status, want, "{what}: {r:?}");
}

fn assert_error(r: &Reply, want: u16, code: &str, what: &str) {
    assert_status(r, want, what);
    assert_eq!(r.body["error"]["code"], code, "{what}: {r:?}");
}

macro_rules! on_both_stores {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                $scenario(crate::support::memory_settings()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                $scenario(crate::support::redis_settings(&crate::support::namespace(
                    stringify!($name),
                )))
                .await;
            }
        }
    };
}

/// `/latest`: weak `If-None-Match` with lists and `*` (an empty channel included), strong
/// `If-Match`, 400 only for malformed fields.
async fn latest(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let first = origin
        .client
        .publish_one("news.x", None, json!(1))
        .await
        .unwrap();
    let newest = origin
        .client
        .publish_one("news.x", None, json!(2))
        .await
        .unwrap();
    let path = "/v1/channels/news.x/latest";
    let tag = format!("\"{newest}\"");
    let stale = format!("\"{first}\"");
    let weak = format!("W/{tag}");
    let r = get(&origin, path, &[]).await;
    assert_status(&r, 200, "plain");
    assert_eq!(r.etag.as_deref(), Some(tag.as_str()));

    // If-None-Match: weak comparison, lists, several lines, `*`.
    for inm in [
        tag.clone(),
        weak.clone(),
        format!("{stale}, {weak}"),
        "*".to_owned(),
    ] {
        let r = get(&origin, path, &[("if-none-match", &inm)]).await;
        assert_status(&r, 304, &inm);
        assert_eq!(r.etag.as_deref(), Some(tag.as_str()), "{inm}");
    }
    let r = get(
        &origin,
        path,
        &[("if-none-match", &stale), ("if-none-match", &tag)],
    )
    .await;
    assert_status(&r, 304, "two field lines");
    let r = get(&origin, path, &[("if-none-match", &stale)]).await;
    assert_status(&r, 200, "stale If-None-Match");
    assert_eq!(r.body["events"][0]["id"], newest.to_string());
    // The empty channel has a representation too (the empty list, tag "0-0").
    let r = get(
        &origin,
        "/v1/channels/nobody.here/latest",
        &[("if-none-match", "*")],
    )
    .await;
    assert_status(&r, 304, "* on an empty channel");
    assert_eq!(r.etag.as_deref(), Some("\"0-0\""));

    // If-Match: strong comparison; a mismatch is a 412 carrying the current tag.
    for im in [tag.clone(), format!("{stale}, {tag}"), "*".to_owned()] {
        let r = get(&origin, path, &[("if-match", &im)]).await;
        assert_status(&r, 200, &im);
    }
    for im in [stale.clone(), weak.clone(), "\"other\"".to_owned()] {
        let r = get(&origin, path, &[("if-match", &im)]).await;
        assert_error(&r, 412, "precondition_failed", &im);
        assert_eq!(r.etag.as_deref(), Some(tag.as_str()), "{im}");
        assert_eq!(r.body["error"]["etag"], tag.as_str(), "{im}");
    }

    // Malformed fields, and only they, are 400s.
    let unquoted = newest.to_string();
    for (field, value) in [
        ("if-none-match", unquoted.as_str()),
        ("if-none-match", "*, \"1-0\""),
        ("if-match", unquoted.as_str()),
        ("if-match", "w/\"1-0\""),
    ] {
        let r = get(&origin, path, &[(field, value)]).await;
        assert_error(
            &r,
            400,
            "invalid_precondition",
            &format!("{field}: {value}"),
        );
    }
    origin.stop().await;
}
on_both_stores!(latest_follows_rfc_9110, latest);

/// Dataset reads: the same `If-None-Match` as `/latest`, on snapshots and deltas.
async fn dataset_reads(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    for n in 0..3 {
        let r = put(&origin, &format!("/v1/datasets/cfg/k{n}"), json!(n), &[]).await;
        assert_status(&r, 201, "seed");
    }
    let path = "/v1/datasets/cfg";
    let r = get(&origin, path, &[]).await;
    assert_status(&r, 200, "snapshot");
    assert_eq!(r.body["version"], 3);
    let tag = "\"3\"";
    assert_eq!(r.etag.as_deref(), Some(tag));

    for inm in [tag, "W/\"3\"", "\"1\", W/\"3\"", "*"] {
        let r = get(&origin, path, &[("if-none-match", inm)]).await;
        assert_status(&r, 304, inm);
        assert_eq!(r.etag.as_deref(), Some(tag), "{inm}");
        // A delta at the same version is unchanged too.
        let r = get(
            &origin,
            "/v1/datasets/cfg?since=1",
            &[("if-none-match", inm)],
        )
        .await;
        assert_status(&r, 304, &format!("delta {inm}"));
    }
    let r = get(&origin, path, &[("if-none-match", "\"2\"")]).await;
    assert_status(&r, 200, "stale");
    assert_eq!(r.body["version"], 3);

    let r = get(&origin, path, &[("if-match", "\"2\", \"3\"")]).await;
    assert_status(&r, 200, "If-Match list");
    for im in ["\"2\"", "W/\"3\""] {
        let r = get(&origin, path, &[("if-match", im)]).await;
        assert_error(&r, 412, "precondition_failed", im);
        assert_eq!(r.etag.as_deref(), Some(tag), "{im}");
    }
    for inm in ["3", "\"3\" \"2\"", "*, \"3\""] {
        let r = get(&origin, path, &[("if-none-match", inm)]).await;
        assert_error(&r, 400, "invalid_precondition", inm);
    }
    origin.stop().await;
}
on_both_stores!(dataset_reads_follow_rfc_9110, dataset_reads);

/// Dataset writes: If-Match lists with strong comparison, If-None-Match lists with weak
/// comparison, both together, 412 with the current value, 400 only for malformed fields.
async fn dataset_writes(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let key = "/v1/datasets/prefs/theme";
    let r = put(&origin, key, json!("dark"), &[]).await;
    assert_status(&r, 201, "create");
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    let current = |v: u64, value: &str| json!({"value": value, "version": v});

    // A list naming the current version applies, whichever place it has in the list.
    let r = put(
        &origin,
        key,
        json!("light"),
        &[("if-match", "\"7\", \"1\"")],
    )
    .await;
    assert_status(&r, 200, "If-Match list");
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.etag.as_deref(), Some("\"2\""));

    // Well-formed tags that do not match: 412 with the current entry, nothing written.
    for im in ["\"1\"", "W/\"2\"", "\"abc\"", "\"02\"", "W/\"2\", \"1\""] {
        let r = put(&origin, key, json!("blue"), &[("if-match", im)]).await;
        assert_error(&r, 412, "precondition_failed", im);
        assert_eq!(r.body["error"]["current"], current(2, "light"), "{im}");
    }
    // Malformed ones: 400, nothing written.
    for im in ["2", "\"2\", 3", "*, \"2\"", "W/2"] {
        let r = put(&origin, key, json!("blue"), &[("if-match", im)]).await;
        assert_error(&r, 400, "invalid_precondition", im);
    }
    for inm in ["2", "\"2\"\"3\""] {
        let r = put(&origin, key, json!("blue"), &[("if-none-match", inm)]).await;
        assert_error(&r, 400, "invalid_precondition", inm);
    }
    let r = get(&origin, "/v1/datasets/prefs", &[]).await;
    assert_eq!(r.body["entries"]["theme"], current(2, "light"));

    // If-None-Match with tags on a write: weak comparison; a listed version is a 412.
    for inm in ["\"2\"", "W/\"2\"", "\"1\", W/\"2\""] {
        let r = put(&origin, key, json!("blue"), &[("if-none-match", inm)]).await;
        assert_error(&r, 412, "precondition_failed", inm);
        assert_eq!(r.body["error"]["current"], current(2, "light"), "{inm}");
    }
    let r = put(&origin, key, json!("blue"), &[("if-none-match", "\"1\"")]).await;
    assert_status(&r, 200, "If-None-Match of an older version");
    assert_eq!(r.body["version"], 3);

    // Both fields: exists, and is not version 2 (it is 3).
    let both = [("if-match", "*"), ("if-none-match", "\"2\"")];
    let r = put(&origin, key, json!("green"), &both).await;
    assert_status(&r, 200, "If-Match * and If-None-Match");
    assert_eq!(r.body["version"], 4);
    let both = [("if-match", "\"4\""), ("if-none-match", "*")];
    let r = put(&origin, key, json!("red"), &both).await;
    assert_error(&r, 412, "precondition_failed", "exists and absent");
    assert_eq!(r.body["error"]["current"], current(4, "green"));

    // A key that does not exist: If-Match lists fail with `current: null`; If-None-Match
    // lists hold (nothing is there to match).
    let fresh = "/v1/datasets/prefs/font";
    let r = put(
        &origin,
        fresh,
        json!("serif"),
        &[("if-match", "\"1\", \"4\"")],
    )
    .await;
    assert_error(&r, 412, "precondition_failed", "If-Match on a missing key");
    assert_eq!(r.body["error"]["current"], Value::Null);
    let r = put(
        &origin,
        fresh,
        json!("serif"),
        &[("if-none-match", "\"4\"")],
    )
    .await;
    assert_status(&r, 201, "If-None-Match list on a missing key");

    // Deletes: If-None-Match: * on an existing entry is a failed condition, not a bad request.
    let r = delete(&origin, key, &[("if-none-match", "*")]).await;
    assert_error(&r, 412, "precondition_failed", "delete If-None-Match *");
    assert_eq!(r.body["error"]["current"], current(4, "green"));
    let r = delete(&origin, key, &[("if-match", "W/\"4\"")]).await;
    assert_error(&r, 412, "precondition_failed", "delete weak If-Match");
    let r = delete(&origin, key, &[("if-match", "\"3\", \"4\"")]).await;
    assert_status(&r, 200, "delete If-Match list");
    assert_eq!(r.body["deleted"], true);
    origin.stop().await;
}
on_both_stores!(dataset_writes_follow_rfc_9110, dataset_writes);
