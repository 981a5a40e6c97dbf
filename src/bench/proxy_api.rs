//! The few proxy and origin calls the handoff benchmarks make: create a handoff, hand it back,
//! read a gauge from `/metrics`, and read the origin's head (the id-only block a fresh SSE
//! stream opens with), so that every handoff of a run starts from the same cursor and the
//! proxy can share one upstream connection per stream.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::sse_conn::{SseConn, Target};

/// A created handoff: its id and the device's secret.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub token: String,
}

/// The proxy's handoff API.
#[derive(Debug, Clone)]
pub struct ProxyApi {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl ProxyApi {
    pub fn new(base: &str, api_key: Option<String>) -> ProxyApi {
        ProxyApi {
            http: crate::client::http::client(),
            base: base.trim_end_matches('/').to_owned(),
            api_key,
        }
    }

    /// `POST /v1/handoffs`.
    ///
    /// Errors: the request failed, or the answer was not 201 with `id` and `token`.
    pub async fn create(&self, body: &Value) -> anyhow::Result<Created> {
        let mut req = self
            .http
            .post(format!("{}/v1/handoffs", self.base))
            .json(body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 201 {
            bail!("create: status {status}: {v}");
        }
        Ok(Created {
            id: v["id"].as_str().context("no id in the 201")?.to_owned(),
            token: v["token"]
                .as_str()
                .context("no token in the 201")?
                .to_owned(),
        })
    }

    /// `DELETE /v1/handoffs/{id}` with the device's token.
    ///
    /// Errors: the request failed or was not 2xx.
    pub async fn hand_back(&self, h: &Created) -> anyhow::Result<()> {
        let resp = self
            .http
            .delete(format!("{}/v1/handoffs/{}", self.base, h.id))
            .bearer_auth(&h.token)
            .send()
            .await?;
        let status = resp.status();
        let _ = resp.bytes().await;
        if !status.is_success() {
            bail!("hand back: status {status}");
        }
        Ok(())
    }

    /// The sum of a metric's samples in `/metrics` (Prometheus text), if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        prometheus_sum(&text, name)
    }
}

/// The sum of the samples of `name` (any labels) in a Prometheus text exposition.
pub fn prometheus_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The handoff request body: an APNs device (the token from `device`), the stream and its
/// cursor, and the wake options the benchmark sets.
pub fn handoff_body(
    stream_url: &str,
    cursor: &str,
    device: u64,
    coalesce_ms: Option<u64>,
) -> Value {
    let mut body = json!({
        "stream": {"url": stream_url, "lastEventId": cursor},
        "push": {"platform": "apns", "token": format!("{device:064x}")},
    });
    if let Some(ms) = coalesce_ms {
        body["wake"] = json!({"coalesceMs": ms});
    }
    body
}

/// The APNs token [`handoff_body`] gives `device`.
pub fn device_token(device: u64) -> String {
    format!("{device:064x}")
}

/// The origin's head: the `id:` of the id-only block a fresh SSE stream opens with.
///
/// Errors: the origin cannot be reached, or sends no `id:` line before its stream ends.
pub async fn origin_head(origin: &str) -> anyhow::Result<String> {
    let url = format!("{}/v1/sse?channel=bench.head", origin.trim_end_matches('/'));
    let mut conn = SseConn::open(&Target::parse(&url)?).await?;
    let mut buf = vec![0u8; 4096];
    let read = async {
        loop {
            let mut id = None;
            let more = conn
                .read_lines(&mut buf, |l| {
                    if let Some(v) = l.strip_prefix(b"id:") {
                        id.get_or_insert_with(|| String::from_utf8_lossy(v).trim().to_owned());
                    }
                })
                .await?;
            if let Some(id) = id {
                return Ok(id);
            }
            if !more {
                bail!("the origin's stream ended before an id: line");
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .context("no id: line from the origin within 10 s")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_summed_across_labels() {
        let text = "# TYPE x gauge\nssepush_proxy_upstream_connections 3\nssepush_proxy_upstream_connections_total 9\nh{a=\"1\"} 2\nh{a=\"2\"} 5.5\n";
        assert_eq!(
            prometheus_sum(text, "ssepush_proxy_upstream_connections"),
            Some(3.0)
        );
        assert_eq!(prometheus_sum(text, "h"), Some(7.5));
        assert_eq!(prometheus_sum(text, "missing"), None);
    }

    #[test]
    fn bodies_carry_the_cursor_and_a_token_per_device() {
        let b = handoff_body("http://o/v1/sse?channel=a", "1-0.ab", 255, Some(0));
        assert_eq!(b["stream"]["lastEventId"], "1-0.ab");
        assert_eq!(b["push"]["token"], device_token(255));
        assert_eq!(device_token(255).len(), 64);
        assert_eq!(b["wake"]["coalesceMs"], 0);
        assert!(handoff_body("u", "c", 1, None).get("wake").is_none());
    }
}
