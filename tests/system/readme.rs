//! The README's examples work as written: every `curl` line of its `sh` blocks runs, as
//! printed, against a real origin (only the address is changed to the test's port). The
//! streaming ones (`-N`) run while the others publish, and the stream shows the published
//! event as the README says it does.

use std::time::Duration;

use crate::support::TestOrigin;

/// The `curl …` commands of the README's ```sh blocks, comments stripped.
fn readme_curls() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = trimmed == "```sh";
            continue;
        }
        if in_sh && trimmed.starts_with("curl ") {
            // A trailing `# …` comment (outside quotes: the examples quote their URLs).
            let command = match trimmed.find("  #") {
                Some(i) => trimmed[..i].trim_end(),
                None => trimmed,
            };
            out.push(command.to_owned());
        }
    }
    out
}

/// Runs `command` under `sh` with curl printing the status after the body.
async fn curl(command: &str, max_time: u64) -> (String, String) {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{command} -s -S --max-time {max_time} -w '\\n%{{http_code}}'"
        ))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_in_the_readme_works() {
    let examples = readme_curls();
    assert!(examples.len() >= 4, "{examples:#?}");
    // The defaults the README's `ssepush origin` runs with (its `retry: 3000`), on port 0.
    let origin = TestOrigin::start(ssepush_origin::settings::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await;
    let commands: Vec<String> = examples
        .iter()
        .map(|c| c.replace("http://127.0.0.1:8080", &origin.url))
        .collect();
    let (streams, requests): (Vec<_>, Vec<_>) =
        commands.iter().partition(|c| c.starts_with("curl -N "));
    let streams: Vec<_> = streams
        .into_iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move {
                let (status, body) = curl(&c, 3).await;
                (c, status, body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for c in &requests {
        let (status, body) = curl(c, 10).await;
        assert!(
            status.starts_with('2'),
            "README example `{c}` answered {status}: {body}"
        );
    }
    let mut saw_event = false;
    for s in streams {
        let (c, status, body) = s.await.unwrap();
        assert_eq!(status, "200", "README example `{c}`: {body}");
        assert!(body.starts_with("retry: 3000\n"), "`{c}`: {body:?}");
        if c.ends_with("channel=chat.*'") && !c.contains("Last-Event-ID") {
            // Terminal 2 of the README shows the event terminal 3 published.
            assert!(
                body.contains("event: message\ndata: {\"channel\":\"chat.a\",\"data\":{\"x\":1}"),
                "`{c}`: {body:?}"
            );
            saw_event = true;
        }
    }
    assert!(saw_event, "the README's subscribe example was not found");
    origin.stop().await;
}
