//! Configuration mistakes are named, on the real binary: a refused value names its key and
//! where it came from (file and line, or the environment variable); a configured file that
//! does not exist stops start-up instead of being created (a new VAPID key would orphan every
//! browser subscription); the client's environment variables never collide with a server's
//! settings prefix.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ssepush-config-errors-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `ssepush ARGS…` to its exit (it must not start serving), with `env` added.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit: it should have refused to start"))
        .unwrap()
}

/// A refusal: non-zero exit, and stderr (returned) says why.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} started: {stderr}");
    stderr
}

/// Starts `ssepush ARGS…` and waits for its "listening" log line; the server is killed on drop.
async fn starts(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening") {
                return true;
            }
            seen.push(line);
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(listening, "{args:?} with {env:?} did not start: {seen:#?}");
    child
}

#[tokio::test]
async fn a_wrong_type_in_the_file_names_the_key_file_and_line() {
    let dir = temp_dir("file");
    let file = dir.join("origin.toml");
    std::fs::write(
        &file,
        "# an operator's config\nlisten = \"127.0.0.1:0\"\n\nkeep_alive_secs = \"fifteen\"\n",
    )
    .unwrap();
    let err = refused(&["origin", "--config", file.to_str().unwrap()], &[]).await;
    assert!(err.contains("keep_alive_secs"), "{err}");
    assert!(err.contains("origin.toml line 4"), "{err}");
    assert!(err.contains("expected u64"), "{err}");

    // A nested key of the proxy's, in a table.
    let file = dir.join("proxy.toml");
    std::fs::write(&file, "[wake]\ncoalesce_ms = -5\n").unwrap();
    let err = refused(&["proxy", "--config", file.to_str().unwrap()], &[]).await;
    assert!(err.contains("wake.coalesce_ms"), "{err}");
    assert!(err.contains("proxy.toml line 2"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_wrong_value_in_the_environment_names_the_variable() {
    let err = refused(
        &["origin", "--listen", "127.0.0.1:0"],
        &[("SSEPUSH_ORIGIN_RETENTION__MAX_EVENTS", "lots")],
    )
    .await;
    assert!(err.contains("retention.max_events"), "{err}");
    assert!(
        err.contains("environment variable SSEPUSH_ORIGIN_RETENTION__MAX_EVENTS"),
        "{err}"
    );

    // An unknown key is named with the variable that set it.
    let err = refused(
        &["proxy", "--listen", "127.0.0.1:0"],
        &[("SSEPUSH_PROXY_BUFER_EVENTS", "10")],
    )
    .await;
    assert!(err.contains("bufer_events"), "{err}");
    assert!(err.contains("SSEPUSH_PROXY_BUFER_EVENTS"), "{err}");
}

#[tokio::test]
async fn a_missing_vapid_key_stops_the_proxy_instead_of_minting_a_new_one() {
    let dir = temp_dir("vapid");
    // A mistyped directory: neither it nor a key may appear.
    let typo = dir.join("ssepsuh").join("vapid.pem");
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\n[webpush]\nvapid_key_path = {:?}\nsubject = \"mailto:ops@example.com\"\n",
            typo.to_str().unwrap()
        ),
    )
    .unwrap();
    let err = refused(&["proxy", "--config", file.to_str().unwrap()], &[]).await;
    assert!(err.contains("vapid_key_path"), "{err}");
    assert!(err.contains("gen-vapid-key"), "{err}");
    assert!(
        !typo.parent().unwrap().exists(),
        "the proxy created the mistyped directory"
    );

    // Generating is an explicit command; the proxy then starts with that key.
    let out = run(&["proxy", "gen-vapid-key", typo.to_str().unwrap()], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        public.trim().len(),
        87,
        "an uncompressed P-256 point: {public}"
    );
    // It refuses to replace a key.
    let again = run(&["proxy", "gen-vapid-key", typo.to_str().unwrap()], &[]).await;
    assert!(!again.status.success());
    let mut proxy = starts(&["proxy", "--config", file.to_str().unwrap()], &[]).await;
    proxy.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The `[env: NAME=…]` variables a subcommand's `--help` documents.
async fn documented_env(subcommand: &str) -> Vec<String> {
    let out = run(&[subcommand, "--help"], &[]).await;
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().trim().to_owned())
        .collect()
}

#[tokio::test]
async fn the_clients_environment_does_not_collide_with_the_servers() {
    let mut vars = documented_env("publish").await;
    vars.extend(documented_env("subscribe").await);
    assert!(!vars.is_empty(), "the clients document their variables");
    for var in &vars {
        for prefix in [
            ssepush_origin::settings::ENV_PREFIX,
            ssepush_proxy::settings::ENV_PREFIX,
        ] {
            assert!(
                !var.starts_with(prefix),
                "{var} is read by the server whose prefix is {prefix}"
            );
        }
    }
    // A shell that exports the client's variables still starts both servers.
    let env: Vec<(&str, &str)> = vars
        .iter()
        .map(|v| (v.as_str(), "http://127.0.0.1:1"))
        .collect();
    let mut origin = starts(&["origin", "--listen", "127.0.0.1:0"], &env).await;
    let mut proxy = starts(&["proxy", "--listen", "127.0.0.1:0"], &env).await;
    origin.kill().await.unwrap();
    proxy.kill().await.unwrap();
}

#[tokio::test]
async fn every_missing_provider_file_stops_start_up() {
    let dir = temp_dir("providers");
    for (section, body, path) in [
        (
            "apns",
            "key_path = \"/nonexistent/ssepush/AuthKey.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"a.b\"\n",
            "/nonexistent/ssepush/AuthKey.p8",
        ),
        (
            "fcm",
            "service_account_path = \"/nonexistent/ssepush/sa.json\"\n",
            "/nonexistent/ssepush/sa.json",
        ),
    ] {
        let file = dir.join(format!("{section}.toml"));
        std::fs::write(
            &file,
            format!("listen = \"127.0.0.1:0\"\n[{section}]\n{body}"),
        )
        .unwrap();
        let err = refused(
            &["proxy", "--config", file.to_str().unwrap()],
            &[("RUST_BACKTRACE", "0")],
        )
        .await;
        assert!(err.contains(path), "[{section}]: {err}");
        assert!(!std::path::Path::new("/nonexistent/ssepush").exists());
    }
    let _ = std::fs::remove_dir_all(dir);
}
