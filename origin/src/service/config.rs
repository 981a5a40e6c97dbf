//! Loading settings: a TOML file, then `SSEPUSH_…` environment overrides, then the caller's flags.
//!
//! Environment names map onto the TOML tree: after the prefix, `__` separates nested keys and the
//! rest is lower-cased, so `SSEPUSH_ORIGIN_RETENTION__MAX_EVENTS=500` sets `retention.max_events`.
//! Values are read as TOML literals when they parse as one (`500`, `true`, `["a","b"]`) and as
//! plain strings otherwise (`redis://127.0.0.1:6379`). Shared by every server of the product:
//! each passes its own prefix (`SSEPUSH_ORIGIN_`, `SSEPUSH_PROXY_`, …) and its settings type.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Why settings could not be loaded; the message names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Reads `file` (if any), overlays the environment variables starting with `env_prefix`, and
/// deserializes the result; missing keys take the type's defaults.
///
/// A key of the wrong type or value, or one the settings do not have, is an error that names
/// the key (`retention.max_events`) and where it came from: the environment variable that set
/// it, or the file and line.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, env_prefix, vars)
}

/// [`load`] with an explicit environment, for tests.
pub fn load_from<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut text = None;
    let mut table = match file {
        Some(path) => {
            let read = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            // toml's syntax errors already say where: line, column and the line itself.
            let table = read
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            text = Some((path, read));
            table
        }
        None => toml::Table::new(),
    };
    // Which key each variable set, to name the variable when its value is refused.
    let mut from_env: Vec<(Vec<String>, String)> = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(env_prefix) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        set_path(&mut table, &path, parse_value(&value));
        from_env.push((path, name));
    }
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let message = e.inner().message().to_owned();
        let mut key: Vec<String> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        // An unknown key is reported at its parent table: the message names the key itself.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            key.push(unknown.to_owned());
        }
        let dotted = if key.is_empty() {
            "(top level)".to_owned()
        } else {
            key.join(".")
        };
        let variable = from_env
            .iter()
            .rev()
            .find(|(path, _)| key.starts_with(path) || path.starts_with(&key) && !key.is_empty());
        let source = match (variable, &text) {
            (Some((_, name)), _) => format!("environment variable {name}"),
            (None, Some((path, text))) => match file_line::<T>(text) {
                Some(line) => format!("{} line {line}", path.display()),
                None => path.display().to_string(),
            },
            (None, None) => "defaults".to_owned(),
        };
        ConfigError::Invalid(format!("`{dotted}` (from {source}): {message}"))
    })
}

/// The line of the first value the file alone cannot be deserialized with, from toml's span.
fn file_line<T: DeserializeOwned>(text: &str) -> Option<usize> {
    let err = toml::from_str::<T>(text).err()?;
    let start = err.span()?.start;
    Some(text.get(..start)?.matches('\n').count() + 1)
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        name: String,
        port: u16,
        nested: Nested,
    }

    #[derive(Debug, serde::Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Nested {
        max_events: u64,
        list: Vec<String>,
    }

    #[test]
    fn env_overrides_file_and_nests_with_double_underscore() {
        let dir = std::env::temp_dir().join(format!("ssepush-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("demo.toml");
        std::fs::write(
            &file,
            "name = \"file\"\nport = 1\n[nested]\nmax_events = 5\n",
        )
        .unwrap();
        let env = vec![
            ("X_PORT".to_string(), "8080".to_string()),
            ("X_NESTED__LIST".to_string(), "[\"a\", \"b\"]".to_string()),
            ("OTHER_PORT".to_string(), "9".to_string()),
        ];
        let demo: Demo = load_from(Some(&file), "X_", env).unwrap();
        assert_eq!(demo.name, "file");
        assert_eq!(demo.port, 8080);
        assert_eq!(demo.nested.max_events, 5);
        assert_eq!(demo.nested.list, vec!["a", "b"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let env = vec![("X_PROT".to_string(), "1".to_string())];
        assert!(load_from::<Demo>(None, "X_", env).is_err());
        let env = vec![("X_PORT".to_string(), "redis://x".to_string())];
        let err = load_from::<Demo>(None, "X_", env).unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn a_refused_value_names_its_key_and_where_it_came_from() {
        let env = vec![("X_NESTED__MAX_EVENTS".to_string(), "many".to_string())];
        let err = load_from::<Demo>(None, "X_", env).unwrap_err().to_string();
        assert!(err.contains("`nested.max_events`"), "{err}");
        assert!(err.contains("X_NESTED__MAX_EVENTS"), "{err}");

        let env = vec![("X_URL".to_string(), "http://x".to_string())];
        let err = load_from::<Demo>(None, "X_", env).unwrap_err().to_string();
        assert!(err.contains("`url`") && err.contains("X_URL"), "{err}");

        let dir = std::env::temp_dir().join(format!("ssepush-config-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("demo.toml");
        std::fs::write(&file, "name = \"a\"\n\n[nested]\nmax_events = \"five\"\n").unwrap();
        let err = load_from::<Demo>(Some(&file), "X_", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nested.max_events`"), "{err}");
        assert!(err.contains("demo.toml line 4"), "{err}");
    }
}
