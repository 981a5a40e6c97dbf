//! Metrics by Prometheus' own rules, on fresh processes of the real binary: `promtool check
//! metrics` (Debian's `prometheus` package; `cargo xtask test` installs it) passes on the
//! origin's, the proxy's and the gateway's `/metrics`; every family of each server's
//! catalogue is there from start-up with its `# HELP`; latencies are histograms; the origin
//! measures publish → delivery; `docs/operations.md` lists every family with its help text.

use std::time::Duration;

use futures::StreamExt;
use ssepush_origin::service::ops::{MetricDef, MetricKind};

use crate::support::binary::{Server, gateway, origin, proxy};

async fn scrape(server: &Server) -> String {
    let resp = crate::support::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// Runs `promtool check metrics` on `exposition`; its complaints, if any.
fn promtool(exposition: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): `cargo xtask test` installs it (Debian package \
                 prometheus); this test does not skip"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// Every family of `catalogue` is in `exposition` with its help text and its type.
fn exported_from_start(server: &str, exposition: &str, catalogue: &[MetricDef]) {
    for def in catalogue {
        let help = format!("# HELP {} {}", def.name, def.help);
        assert!(
            exposition.contains(&help),
            "{server}: no `{help}` in\n{exposition}"
        );
        let kind = match def.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let type_line = format!("# TYPE {} {kind}", def.name);
        assert!(
            exposition.contains(&type_line),
            "{server}: no `{type_line}` in\n{exposition}"
        );
    }
    assert!(
        !exposition.contains(" summary"),
        "{server}: a latency is a summary, not a histogram:\n{exposition}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_passes_on_every_server_and_every_family_exists_from_start_up() {
    let servers = [
        (
            "origin",
            origin().await,
            ssepush_origin::server::metrics::METRICS,
        ),
        ("proxy", proxy().await, ssepush_proxy::metrics::METRICS),
        ("gateway", gateway().await, ssepush::gateway::state::METRICS),
    ];
    for (name, server, catalogue) in &servers {
        let text = scrape(server).await;
        exported_from_start(name, &text, catalogue);
        if let Err(said) = promtool(&text) {
            panic!("promtool check metrics on the {name}'s /metrics:\n{said}\n---\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_measures_publish_to_delivery_as_a_histogram() {
    let server = origin().await;
    let resp = crate::support::get(format!("http://{}/v1/sse?channel=m.*", server.addr))
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let client = crate::support::http();
    for i in 0..3 {
        let resp = client
            .post(format!("http://{}/v1/events", server.addr))
            .json(&serde_json::json!({"channel": "m.a", "data": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    // The subscriber got them; the histogram counted each.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&server).await;
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("ssepush_origin_delivery_latency_seconds_count "))
            .map(|v| v.trim().parse::<f64>().unwrap());
        if count == Some(3.0) {
            assert!(
                text.contains("ssepush_origin_delivery_latency_seconds_bucket{le=\"0.005\"}"),
                "{text}"
            );
            promtool(&text).unwrap_or_else(|said| panic!("promtool:\n{said}"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "count {count:?} after 3 deliveries:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn docs_operations_lists_every_family_with_its_help() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    for def in ssepush_origin::server::metrics::METRICS
        .iter()
        .chain(ssepush_proxy::metrics::METRICS)
        .chain(ssepush::gateway::state::METRICS)
    {
        assert!(
            doc.contains(&format!("`{}`", def.name)) && doc.contains(def.help),
            "docs/operations.md does not list `{}` with its help text {:?}",
            def.name,
            def.help
        );
    }
}
