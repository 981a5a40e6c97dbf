//! `cargo xtask test [ARGS…]` — the README's test command. On a machine where something the
//! tests need is missing, it installs or starts it first, then runs every test of the workspace
//! (`cargo test --workspace --no-fail-fast ARGS…`), so one failure never hides the others:
//!
//! * **Redis** on the address the tests use (`SSEPUSH_TEST_REDIS`, default
//!   `redis://127.0.0.1:6379`): when nothing answers there and it is local, `redis-server` is
//!   installed from Debian's packages if absent and started without persistence; `redis-server`
//!   and `redis-cli` (Debian's `redis-server`, `redis-tools`) are installed when missing in any
//!   case, for the tests that start their own three-master Redis Cluster;
//! * **the deploy checkers** (`tests/system/deploy.rs`): `docker-compose` and `systemd-analyze`
//!   from Debian's packages, `kubernetes-validate` from PyPI into a virtualenv under the target
//!   dir, when missing;
//! * **Chromium** for the browser tests (`CHROMIUM`, default `/usr/bin/chromium`): installed
//!   from Debian's packages when absent;
//! * **the web client** (`clients/web`): Node.js and npm from Debian's packages when absent,
//!   then `npm ci` (the npm registry's packages at the versions `package-lock.json` pins),
//!   `npm test` (its unit tests, `node --test`) and `npm run build` (the bundle the browser
//!   test serves). A failing Node test does not stop the Rust tests; both decide the exit;
//! * **promtool** (`tests/system/metrics.rs` lints every server's `/metrics` with it): Debian's
//!   `prometheus` package when absent;
//! * **openapi-spec-validator** (`tests/system/openapi.rs` validates both OpenAPI documents
//!   with it): PyPI's package in a virtualenv under the target directory
//!   (`target/xtask-venv`), handed to the tests as `SSEPUSH_OPENAPI_SPEC_VALIDATOR`.
//!
//! Plain std, so building it costs nothing next to the tests.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => match test(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask test: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test [ARGS…]   set up Redis and Chromium if missing, then \
                 cargo test --workspace --no-fail-fast ARGS…"
            );
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> Result<ExitCode, String> {
    let mut apt = Apt::default();
    ensure_redis(&mut apt)?;
    ensure_chromium(&mut apt)?;
    ensure_promtool(&mut apt)?;
    let validator = openapi_spec_validator()?;
    ensure_deploy_tools(&mut apt)?;
    let web_ok = web_client(&mut apt)?;
    // The cargo that runs us (`cargo xtask`), so toolchain overrides carry through.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("SSEPUSH_OPENAPI_SPEC_VALIDATOR", validator)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !web_ok {
        eprintln!("xtask: the web client's Node tests failed (see above)");
    }
    Ok(if status.success() && web_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Installs the web client's packages, runs its Node tests and builds it. Returns whether the
/// Node tests passed; an install or build failure is an error (the browser test needs both).
fn web_client(apt: &mut Apt) -> Result<bool, String> {
    if !on_path("npm") || !on_path("node") {
        apt.install("nodejs")?;
        if !on_path("npm") {
            apt.install("npm")?;
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?
        .join("clients")
        .join("web");
    let npm = |args: &[&str]| {
        let mut cmd = Command::new("npm");
        cmd.args(args).current_dir(&dir);
        cmd
    };
    eprintln!(
        "xtask: web client in {}: npm ci, npm test, npm run build",
        dir.display()
    );
    run(&mut npm(&["ci", "--no-audit", "--no-fund"]))?;
    let tests = npm(&["test"])
        .status()
        .map_err(|e| format!("cannot run npm test: {e}"))?;
    run(&mut npm(&["run", "build"]))?;
    Ok(tests.success())
}

/// Starts a local Redis when nothing answers where the tests look for it.
fn ensure_redis(apt: &mut Apt) -> Result<(), String> {
    // The Redis Cluster tests (`tests/support/redis_cluster.rs`) start their own nodes, so the
    // tools are needed even when a Redis already answers.
    if !on_path("redis-server") {
        apt.install("redis-server")?;
    }
    if !on_path("redis-cli") {
        apt.install("redis-tools")?;
    }
    let url =
        std::env::var("SSEPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (host, port) = redis_host_port(&url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve Redis host {host:?}: {e}"))?
        .collect();
    if answers(&addrs) {
        return Ok(());
    }
    if !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(format!(
            "nothing answers at {url}, and it is not local, so it cannot be started here"
        ));
    }
    eprintln!("xtask: starting redis-server on port {port} (no persistence)");
    let port_arg = port.to_string();
    run(Command::new("redis-server").args([
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "-::1",
        "--port",
        &port_arg,
        "--save",
        "",
        "--appendonly",
        "no",
    ]))?;
    // Daemonized: wait until it accepts connections.
    for _ in 0..100 {
        if answers(&addrs) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "redis-server started but nothing answers on port {port} after 10 s"
    ))
}

/// `redis://[user:pass@]host[:port][/db]` → (host, port).
fn redis_host_port(url: &str) -> Result<(String, u16), String> {
    let bad = || format!("SSEPUSH_TEST_REDIS {url:?} is not a redis://host:port URL");
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, p.parse().map_err(|_| bad())?),
        _ => (hostport, 6379),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn answers(addrs: &[SocketAddr]) -> bool {
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok())
}

/// Installs Debian's `prometheus` (for its `promtool`) unless `promtool` is on the PATH.
fn ensure_promtool(apt: &mut Apt) -> Result<(), String> {
    if on_path("promtool") {
        return Ok(());
    }
    apt.install("prometheus")
}

/// PyPI's `openapi-spec-validator` in a virtualenv under the target directory (made once;
/// `python3` and its `venv` module from Debian's packages when missing). Returns its command.
fn openapi_spec_validator() -> Result<std::path::PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("xtask-venv");
    let validator = venv.join("bin").join("openapi-spec-validator");
    if validator.is_file() {
        return Ok(validator);
    }
    if !on_path("python3") {
        Apt::default().install("python3-venv")?;
    }
    eprintln!(
        "xtask: installing openapi-spec-validator from PyPI into {}",
        venv.display()
    );
    if run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).is_err() {
        // Debian's python3 lacks ensurepip until python3-venv is installed.
        Apt::default().install("python3-venv")?;
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "-q",
        "openapi-spec-validator",
    ]))?;
    Ok(validator)
}

/// The tools `tests/system/deploy.rs` checks `deploy/` with: Debian's `docker-compose` and
/// `systemd-analyze` (package `systemd`), and PyPI's `kubernetes-validate` in a virtualenv at
/// `<target dir>/tmp/deploy-tools` (where the test looks: its `CARGO_TARGET_TMPDIR`).
fn ensure_deploy_tools(apt: &mut Apt) -> Result<(), String> {
    if !on_path("docker-compose") {
        apt.install("docker-compose")?;
    }
    if !on_path("systemd-analyze") {
        apt.install("systemd")?;
    }
    if on_path("kubernetes-validate") {
        return Ok(());
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        },
        std::path::PathBuf::from,
    );
    let venv = target.join("tmp").join("deploy-tools");
    if venv.join("bin").join("kubernetes-validate").is_file() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing kubernetes-validate from PyPI into {}",
        venv.display()
    );
    if run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).is_err() {
        apt.install("python3-venv")?;
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(venv.join("bin").join("pip")).args(["install", "-q", "kubernetes-validate"]))
}

/// Installs Debian's `chromium` unless the browser the browser tests start is there.
fn ensure_chromium(apt: &mut Apt) -> Result<(), String> {
    match std::env::var("CHROMIUM") {
        Ok(path) if Path::new(&path).exists() => Ok(()),
        Ok(path) => Err(format!("CHROMIUM={path} does not exist")),
        Err(_) if Path::new("/usr/bin/chromium").exists() => Ok(()),
        Err(_) => apt.install("chromium"),
    }
}

/// `apt-get`, with the package lists refreshed once before the first install.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, package: &str) -> Result<(), String> {
        eprintln!("xtask: installing {package} from Debian's packages");
        if !self.updated {
            run(apt_get().args(["update", "-qq"]))?;
            self.updated = true;
        }
        run(apt_get().args(["install", "-y", "-qq", package]))
    }
}

fn apt_get() -> Command {
    // Root runs apt-get itself; anyone else goes through sudo.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::redis_host_port;

    #[test]
    fn redis_urls_give_host_and_port() {
        let hp = |u| redis_host_port(u).unwrap();
        assert_eq!(hp("redis://127.0.0.1:6379"), ("127.0.0.1".into(), 6379));
        assert_eq!(hp("redis://localhost"), ("localhost".into(), 6379));
        assert_eq!(
            hp("redis://:pw@127.0.0.1:6390/2"),
            ("127.0.0.1".into(), 6390)
        );
        assert_eq!(hp("redis://[::1]:6380"), ("::1".into(), 6380));
        assert!(redis_host_port("http://x").is_err());
        assert!(redis_host_port("redis://:6379").is_err());
    }
}
