//! The import graph among a crate's top-level modules, read from its sources, and its cycles
//! (issue 13: modules are layered, never importing back). Used by `ike` and `agent` tests.
//!
//! Every `crate::NAME` path outside comments, in `use` lines and inline alike, including
//! `use crate::{a, b::C}` groups, is an edge from the module of that file to `NAME` when
//! `NAME` is a top-level module. `lib.rs` and `main.rs` (the roots, which declare and
//! re-export everything) are no modules of their own and add no edges.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;

/// Module to the modules it references.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level modules: `src/NAME.rs` and `src/NAME/`.
fn modules(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
        let Some(name) = name else { continue };
        if (path.is_dir() || path.extension().is_some_and(|e| e == "rs"))
            && name != "lib"
            && name != "main"
        {
            out.insert(name);
        }
    }
    out
}

/// Every `.rs` file under `path` (a file or a directory).
fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            files(&entry.expect("dir entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segments reachable from each `crate::` in `code`: `crate::a::B` gives `a`,
/// `crate::{a::B, c}` gives `a` and `c` (nested groups are not used in this crate's style; the
/// first segment of every item of the outer group is taken).
pub fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(is_ident) {
            // e.g. `mycrate::`: not our root.
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let seg: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !seg.is_empty() {
                    out.push(seg);
                }
            }
        } else {
            let seg: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            out.push(seg);
        }
    }
    out
}

/// Strips `//` comments (doc comments included: their intra-doc links are no imports).
pub fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The import graph among the top-level modules of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Graph {
    let mods = modules(src);
    let mut g = Graph::new();
    for m in &mods {
        let mut fs = Vec::new();
        let file = src.join(format!("{m}.rs"));
        if file.exists() {
            files(&file, &mut fs);
        }
        files(&src.join(m), &mut fs);
        let deps = g.entry(m.clone()).or_default();
        for f in fs {
            let text = std::fs::read_to_string(&f).expect("read source");
            for line in text.lines() {
                for dep in crate_refs(code_of(line)) {
                    if dep != *m && mods.contains(&dep) {
                        deps.insert(dep);
                    }
                }
            }
        }
    }
    g
}

/// A cycle as a path `a → b → … → a`, if there is one.
pub fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        n: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_owned(), Mark::Open);
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(g, n, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

/// Prints the graph and fails with the first cycle found, naming the crate.
pub fn assert_acyclic(crate_name: &str, src: &Path) {
    let g = graph(src);
    for (m, deps) in &g {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{m} -> {}", deps.join(", "));
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "import cycle among {crate_name} modules: {}",
            cycle.join(" -> ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_sees_cycles_and_grouped_imports() {
        // The checker itself must be able to fail.
        let refs =
            crate_refs("use crate::{endpoint::Output, sa};  let x = crate::wire::Reader::new;");
        assert_eq!(refs, ["endpoint", "sa", "wire"]);
        assert!(crate_refs("use mycrate::endpoint;").is_empty());
        assert_eq!(code_of("let a = 1; // crate::sa"), "let a = 1; ");
        let mut g = Graph::new();
        g.entry("a".into()).or_default().insert("b".into());
        g.entry("b".into()).or_default().insert("c".into());
        g.entry("c".into()).or_default();
        assert_eq!(find_cycle(&g), None);
        g.entry("c".into()).or_default().insert("a".into());
        assert_eq!(
            find_cycle(&g),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
