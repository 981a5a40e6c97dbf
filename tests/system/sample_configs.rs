//! The sample configs in `deploy/` and the configuration reference (`docs/configuration.md`)
//! stay true: each sample parses into the settings type it documents, loading it changes no
//! default, and every key the settings types have — derived from the types themselves, so none
//! can be missed — is in the sample (set, or commented out with its example) and in the
//! reference with its environment variable.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every key path of a settings value, dotted (`retention.max_events`): tables are walked,
/// anything else (numbers, strings, lists, `null` for an unset option) is a key.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Value::Object(map) = value else {
        return;
    };
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(_) => key_paths(v, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// The key paths a TOML sample mentions, set or commented out (`# key = …` under a `[table]`
/// or `# [table]` header; `[[array.of.tables]]` headers count as the array's key).
fn sample_keys(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            out.insert(name.trim().to_owned());
            table = name.trim().to_owned();
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_owned();
        } else if let Some((key, _)) = line.split_once(" = ") {
            let key = key.trim();
            if !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                out.insert(if table.is_empty() {
                    key.to_owned()
                } else {
                    format!("{table}.{key}")
                });
            }
        }
    }
    out
}

/// `SSEPUSH_ORIGIN_RETENTION__MAX_EVENTS` for `retention.max_events`.
fn env_name(prefix: &str, path: &str) -> String {
    format!("{prefix}{}", path.replace('.', "__").to_ascii_uppercase())
}

/// Each key of `keys` is in `sample` and, with its variable, in the configuration reference.
fn documented(keys: &BTreeSet<String>, sample: &str, env_prefix: &str) {
    let in_sample = sample_keys(&repo_file(sample));
    let missing: Vec<&String> = keys.iter().filter(|k| !in_sample.contains(*k)).collect();
    assert!(missing.is_empty(), "{sample} does not list {missing:?}");
    let reference = repo_file("docs/configuration.md");
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !reference.contains(&format!("`{k}`")))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not list {missing:?}"
    );
    let missing: Vec<String> = keys
        .iter()
        .map(|k| env_name(env_prefix, k))
        .filter(|v| !reference.contains(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name {missing:?}"
    );
}

#[test]
fn deploy_origin_toml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/origin.toml");
    let settings =
        ssepush_origin::settings::Settings::load(Some(&path)).expect("deploy/origin.toml");
    let defaults = ssepush_origin::settings::Settings::default();
    // The sample documents the defaults: loading it changes nothing.
    assert_eq!(
        serde_json::to_value(&settings).unwrap(),
        serde_json::to_value(&defaults).unwrap()
    );
}

#[test]
fn deploy_proxy_toml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/proxy.toml");
    let settings = ssepush_proxy::settings::Settings::load(Some(&path)).expect("deploy/proxy.toml");
    settings.validate().expect("deploy/proxy.toml validates");
    let defaults = ssepush_proxy::settings::Settings::default();
    assert_eq!(
        serde_json::to_value(&settings).unwrap(),
        serde_json::to_value(&defaults).unwrap()
    );
}

#[test]
fn every_origin_key_is_in_the_sample_and_the_reference() {
    let mut keys = BTreeSet::new();
    let defaults = ssepush_origin::settings::Settings::default();
    key_paths(&serde_json::to_value(&defaults).unwrap(), "", &mut keys);
    assert!(keys.len() > 20, "{keys:?}");
    documented(
        &keys,
        "deploy/origin.toml",
        ssepush_origin::settings::ENV_PREFIX,
    );
}

#[test]
fn every_proxy_key_is_in_the_sample_and_the_reference() {
    use ssepush_proxy::push::{ApnsSettings, FcmSettings, WebPushSettings};
    let mut keys = BTreeSet::new();
    let defaults = ssepush_proxy::settings::Settings::default();
    key_paths(&serde_json::to_value(&defaults).unwrap(), "", &mut keys);
    // The provider sections are unset by default: their keys come from their own types.
    for (section, value) in [
        (
            "apns",
            serde_json::to_value(ApnsSettings::default()).unwrap(),
        ),
        ("fcm", serde_json::to_value(FcmSettings::default()).unwrap()),
        (
            "webpush",
            serde_json::to_value(WebPushSettings::default()).unwrap(),
        ),
    ] {
        keys.remove(section);
        key_paths(&value, section, &mut keys);
    }
    assert!(keys.len() > 30, "{keys:?}");
    documented(
        &keys,
        "deploy/proxy.toml",
        ssepush_proxy::settings::ENV_PREFIX,
    );
}
