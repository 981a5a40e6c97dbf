//! `deploy/` stays deployable (issue 10, must-show 7), checked by the real tools an operator
//! would use — there is no Docker engine or Kubernetes cluster here:
//!
//! * the compose file by Debian's `docker-compose config`;
//! * the Kubernetes manifests by PyPI's `kubernetes-validate --strict` (installed by
//!   `cargo xtask test` into a virtualenv under the target dir's `tmp/deploy-tools`);
//! * the systemd units by `systemd-analyze verify`, with `ExecStart` pointed at the real
//!   binary this build made;
//! * the Grafana dashboard against the metric names the servers' code registers.
//!
//! Each tool is also shown a broken copy, which it must refuse: a tool that accepts anything
//! would prove nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestOrigin, memory_settings};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(ssepush::device::stack::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tool on the PATH, or at `fallback`; fails the test (with how to get it) when absent.
fn tool(name: &str, fallback: Option<PathBuf>, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }) {
        return path;
    }
    match fallback {
        Some(p) if p.is_file() => p,
        _ => panic!("`{name}` is not installed ({package}); `cargo xtask test` installs it"),
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_compose_file_is_valid_for_docker_compose() {
    let compose = tool("docker-compose", None, "Debian package docker-compose");
    let file = repo().join("deploy/compose.yaml");
    let (ok, out) = run(Command::new(&compose)
        .arg("-f")
        .arg(&file)
        .args(["config", "-q"]));
    assert!(
        ok,
        "docker-compose config refused deploy/compose.yaml:\n{out}"
    );

    // What it resolves: Redis, one origin, three proxies, the gateway.
    let (ok, services) = run(Command::new(&compose)
        .arg("-f")
        .arg(&file)
        .args(["config", "--services"]));
    assert!(ok, "{services}");
    let services: BTreeSet<&str> = services.lines().map(str::trim).collect();
    for s in [
        "redis", "origin", "gateway", "proxy-1", "proxy-2", "proxy-3",
    ] {
        assert!(services.contains(s), "no {s} in {services:?}");
    }

    let dir = scratch("compose-broken");
    let broken =
        read("deploy/compose.yaml").replace("    image: redis:7-alpine", "    image: [redis]");
    std::fs::write(dir.join("compose.yaml"), broken).unwrap();
    let (ok, out) = run(Command::new(&compose)
        .arg("-f")
        .arg(dir.join("compose.yaml"))
        .args(["config", "-q"]));
    assert!(!ok, "docker-compose accepted a broken file:\n{out}");
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_are_valid_for_kubernetes_validate() {
    let validate = tool(
        "kubernetes-validate",
        Some(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-tools/bin/kubernetes-validate"),
        ),
        "PyPI package kubernetes-validate",
    );
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let (ok, out) = run(Command::new(&validate).arg("--strict").args(&files));
    assert!(ok, "kubernetes-validate refused deploy/k8s:\n{out}");
    let kinds = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<String>();
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "kind: ConfigMap",
        "kind: Secret",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/k8s");
    }

    let dir = scratch("k8s-broken");
    let broken = read("deploy/k8s/proxy.yaml").replace("replicas: 3", "replicas: three");
    std::fs::write(dir.join("proxy.yaml"), broken).unwrap();
    let (ok, out) = run(Command::new(&validate)
        .arg("--strict")
        .arg(dir.join("proxy.yaml")));
    assert!(
        !ok,
        "kubernetes-validate accepted a broken manifest:\n{out}"
    );
}

/// `terminationGracePeriodSeconds` leaves the drain (`shutdown_grace_secs`) its whole window.
#[test]
fn kubernetes_grace_periods_cover_the_drain() {
    let config = read("deploy/k8s/configmap.yaml");
    for (server, file) in [
        ("ORIGIN", "deploy/k8s/origin.yaml"),
        ("PROXY", "deploy/k8s/proxy.yaml"),
    ] {
        let key = format!("SSEPUSH_{server}_SHUTDOWN_GRACE_SECS: \"");
        let grace: u64 = config
            .split(&key)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} not in the ConfigMap"));
        let manifest = read(file);
        let termination: u64 = manifest
            .split("terminationGracePeriodSeconds: ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no terminationGracePeriodSeconds in {file}"));
        assert!(
            termination > grace,
            "{file}: {termination} s to terminate, {grace} s of drain"
        );
        assert!(manifest.contains("path: /readyz") && manifest.contains("path: /healthz"));
    }
}

/// The probes' paths answer on the real server.
#[tokio::test]
async fn the_probe_paths_answer() {
    let origin = TestOrigin::start(memory_settings()).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = crate::support::get(format!("{}{path}", origin.url))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    origin.stop().await;
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze", None, "Debian package systemd");
    let dir = scratch("systemd");
    let binary = env!("CARGO_BIN_EXE_ssepush");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/ssepush "),
            "{}",
            path.display()
        );
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "DynamicUser=yes",
        ] {
            assert!(
                text.contains(hardening),
                "{}: no {hardening}",
                path.display()
            );
        }
        // verify checks that ExecStart's binary exists: point it at this build's.
        let unit = dir.join(path.file_name().unwrap());
        std::fs::write(&unit, text.replace("/usr/local/bin/ssepush", binary)).unwrap();
        units.push(unit);
    }
    assert_eq!(units.len(), 2, "{units:?}");
    let (ok, out) = run(Command::new(&analyze).arg("verify").args(&units));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );

    // An unknown directive is reported.
    let broken = dir.join("broken.service");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&units[0])
            .unwrap()
            .replace("ProtectHome=yes", "ProtectHom=yes"),
    )
    .unwrap();
    let (_, out) = run(Command::new(&analyze).arg("verify").arg(&broken));
    assert!(
        out.contains("ProtectHom"),
        "systemd-analyze missed a bad key:\n{out}"
    );
}

/// Every metric name a `counter!`, `gauge!` or `histogram!` call registers in `dir`'s code.
fn metric_names(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            metric_names(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // The macros, and the metric catalogues' `name: "…"` entries.
            for macro_call in ["counter!(", "gauge!(", "histogram!(", "name: "] {
                for part in text.split(macro_call).skip(1) {
                    let Some(rest) = part.trim_start().strip_prefix('"') else {
                        continue;
                    };
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    // A catalogue entry is a metric when its kind follows.
                    let is_metric = macro_call != "name: "
                        || rest
                            .chars()
                            .take(160)
                            .collect::<String>()
                            .contains("MetricKind");
                    if name.starts_with("ssepush_") && is_metric {
                        out.insert(name);
                    }
                }
            }
        }
    }
}

#[test]
fn the_grafana_dashboard_shows_the_servers_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/ssepush.json")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("ssepush_"))
                // A histogram's series: `_bucket`, `_sum`, `_count`.
                .map(|w| {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| w.strip_suffix(s))
                        .unwrap_or(w)
                        .to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut registered = BTreeSet::new();
    for dir in ["origin/src", "proxy/src"] {
        metric_names(&repo().join(dir), &mut registered);
    }
    assert!(registered.len() > 20, "{registered:?}");
    let unknown: Vec<&String> = used.iter().filter(|m| !registered.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard plots metrics no code exports: {unknown:?}"
    );
    let missing: Vec<&String> = registered.iter().filter(|m| !used.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "metrics missing from the dashboard: {missing:?}"
    );
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_non_root() {
    let dockerfile = read("deploy/Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "not multi-stage");
    assert!(dockerfile.contains("USER nonroot"), "runs as root");
    assert!(
        dockerfile.contains("--locked"),
        "builds without the lock file"
    );
}
