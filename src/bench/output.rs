//! How every benchmark reports: a plain-text table (parameters first, then what was measured)
//! or, with `--json`, one JSON document on stdout; progress bars on stderr, hidden with
//! `--json`. The figures are printed, never judged: a benchmark asserts nothing.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Rows under section headings.
#[derive(Debug, Default)]
pub struct Table {
    title: String,
    rows: Vec<Row>,
}

#[derive(Debug)]
enum Row {
    Section(String),
    Pair(String, String),
}

impl Table {
    pub fn new(title: impl Into<String>) -> Table {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn section(&mut self, name: &str) -> &mut Table {
        self.rows.push(Row::Section(name.to_owned()));
        self
    }

    pub fn row(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Table {
        self.rows.push(Row::Pair(key.to_owned(), value.to_string()));
        self
    }

    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Pair(k, _) => Some(k.chars().count()),
                Row::Section(_) => None,
            })
            .max()
            .unwrap_or(0);
        let mut s = format!("{}\n", self.title);
        for r in &self.rows {
            match r {
                Row::Section(name) => {
                    let _ = writeln!(s, "\n  {name}");
                }
                Row::Pair(k, v) => {
                    let pad = width - k.chars().count();
                    let _ = writeln!(s, "    {k}{}  {v}", " ".repeat(pad));
                }
            }
        }
        s
    }
}

/// Prints the JSON document or the table on stdout.
pub fn emit(json: bool, table: &Table, doc: &impl Serialize) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(doc)?);
    } else {
        print!("{}", table.render());
    }
    Ok(())
}

/// A spinner with a message on stderr (hidden with `--json`).
pub fn spinner(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A bar of `len` steps on stderr (hidden with `--json`).
pub fn bar(json: bool, len: u64) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// The 1-, 5- and 15-minute load averages of `/proc/loadavg`, printed beside every figure:
/// the machines are shared, and a figure taken under load says so.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Bytes as `12.3 MiB` (binary units, as RSS is counted in pages).
pub fn bytes(n: f64) -> String {
    let abs = n.abs();
    if abs >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if abs >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if abs >= 1024.0 {
        format!("{:.2} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_keys() {
        let mut t = Table::new("bench x");
        t.section("parameters").row("a", 1).row("longer", "two");
        let s = t.render();
        assert!(s.starts_with("bench x\n"), "{s}");
        assert!(s.contains("    a       1\n"), "{s}");
        assert!(s.contains("    longer  two\n"), "{s}");
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(14_745.6), "14.40 KiB");
        assert_eq!(bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
    }
}
