//! No import circles between the modules of `origin/src`.
//!
//! The module graph is read from the source: a module depends on another when its code (test
//! modules aside) names it by path — `crate::a::b`, `super::x`, `self::y`, a `use` group
//! `crate::a::{b, c}`, or a child module by its bare name (`auth::check`). Declaring a child
//! (`pub mod auth;`) is not a dependency; naming one is, so a parent that calls into a child
//! which calls back into the parent is a circle too. The test fails with every strongly
//! connected component of more than one module and the edges inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// Module path (`server::ws::session`, `""` for the crate root) → source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The longest known module that `path` starts with.
fn resolve<'a>(names: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segs.len())
        .rev()
        .find_map(|n| names.get(&segs[..n].join("::")))
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_owned())
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}::{rest}"),
    }
}

/// The source a module's dependencies are read from: no comments, no test module, no
/// `pub(super)`-style visibilities (they name a module without depending on it).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    let comments = Regex::new(r"//[^\n]*").unwrap();
    let visibility = Regex::new(r"pub\((crate|super|self|in [^)]*)\)").unwrap();
    let text = comments.replace_all(text, "");
    visibility.replace_all(&text, "pub").into_owned()
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    let paths = Regex::new(r"\b(crate|super|self)((?:::\w+)*)(?:::\{([^}]*)\})?").unwrap();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &mods {
        let src = code(file);
        let mut targets = Vec::new();
        for m in paths.captures_iter(&src) {
            let base = match &m[1] {
                "crate" => String::new(),
                "super" => parent(module),
                _ => module.clone(),
            };
            let full = join(&base, m[2].trim_start_matches("::"));
            match m.get(3) {
                // `a::{b, c}` names `a::b` and `a::c`; `a` itself only through `self`.
                Some(group) => {
                    for item in group.as_str().split(',') {
                        match item.split_whitespace().next().unwrap_or_default() {
                            "" => {}
                            "self" => targets.push(full.clone()),
                            item => targets.push(join(&full, item)),
                        }
                    }
                }
                None => targets.push(full),
            }
        }
        let children: Vec<&str> = names
            .iter()
            .filter(|n| !n.is_empty() && parent(n) == *module)
            .map(|n| n.rsplit("::").next().unwrap())
            .collect();
        if !children.is_empty() {
            let bare =
                Regex::new(&format!(r"(?:^|[^:\w])({})::(\w+)", children.join("|"))).unwrap();
            for m in bare.captures_iter(&src) {
                targets.push(join(module, &format!("{}::{}", &m[1], &m[2])));
            }
        }
        let out = edges.entry(module.clone()).or_default();
        for t in targets {
            if let Some(r) = resolve(&names, &t).filter(|r| *r != module) {
                out.insert(r.clone());
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn origin_src_has_no_import_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.len() > 40,
        "the module walk found {} modules",
        edges.len()
    );
    let found = circles(&edges);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let inside: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    edges[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("{}: {}", c.join(" <-> "), inside.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import circles:\n{}", report.join("\n"));
}

/// The reader sees the kinds of reference the code uses, so a circle cannot hide in one.
#[test]
fn the_reader_finds_each_kind_of_reference() {
    let dir = std::env::temp_dir().join(format!("ssepush-modgraph-{}", std::process::id()));
    let write = |p: &str, text: &str| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a/mod.rs", "pub mod child;\nfn f() { child::g(); }\n");
    write("a/child.rs", "use super::{X, Y};\npub(super) fn g() {}\n");
    write("b.rs", "use crate::a::child::g; // crate::c\n");
    // Naming siblings through the parent is no dependency on the parent.
    write("c.rs", "use super::{a, b};\n");
    let edges = graph(&dir);
    assert_eq!(edges["a"], BTreeSet::from(["a::child".to_owned()]));
    assert_eq!(edges["a::child"], BTreeSet::from(["a".to_owned()]));
    assert_eq!(edges["b"], BTreeSet::from(["a::child".to_owned()]));
    assert_eq!(edges["c"], BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    assert_eq!(
        circles(&edges),
        [vec!["a".to_owned(), "a::child".to_owned()]]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
