//! The import graph of `miniport/src` between its top-level modules has no cycle but the ones
//! allowed below (issue 18: "no module imports one above it").
//!
//! The test reads the source files, not the compiled crate: every path that starts with
//! `crate::` (in a `use` or inline, brace groups included) and every `super::` path that climbs
//! out of its top-level module is an edge from the file's top-level module to the module named.
//! Comments are skipped, so an intra-doc link is not an import. A new cycle fails `cargo test`;
//! run with `--nocapture` to see the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Cycles allowed, as pairs of top-level modules that may reach each other: none. The last one
/// (`adapter` <-> `io`) ended when the I/O path took the `io::IoHost` context instead of the
/// adapter and the queue state moved below both (`queue_state`). The list stays so that a pair
/// ever allowed again is named here, and checked by the test below to still be a cycle.
const ALLOWED_CYCLES: &[(&str, &str)] = &[];

/// Top-level module name -> the top-level modules its files name.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn source_files(directory: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(directory)
        .expect("miniport/src is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a file under `src`: `adapter/mod.rs` -> `["adapter"]`,
/// `recovery/tmf/table.rs` -> `["recovery", "tmf", "table"]`, `lib.rs` -> `[]`.
fn module_path(source: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(source).expect("a file under src");
    let mut path: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if path
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        path.pop();
    }
    path
}

/// The text with `//` and `/* */` comments blanked and string literals emptied.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut code = String::with_capacity(text.len());
    let mut index = 0;
    while index < bytes.len() {
        let rest = &text[index..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(text.len(), |offset| index + offset);
            index = end;
        } else if rest.starts_with("/*") {
            let end = rest
                .find("*/")
                .map_or(text.len(), |offset| index + offset + 2);
            code.push(' ');
            index = end;
        } else if rest.starts_with('"') {
            // Skip a string literal (escapes included) so a quoted `crate::` is not a path.
            index += 1;
            while index < bytes.len() && bytes[index] != b'"' {
                index += if bytes[index] == b'\\' { 2 } else { 1 };
            }
            index += 1;
            code.push_str("\"\"");
        } else if rest.starts_with("'\"'") {
            index += 3;
        } else {
            let character = rest.chars().next().expect("not at the end");
            code.push(character);
            index += character.len_utf8();
        }
    }
    code
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segments of the items of a brace group that starts just after its `{`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expect_head = true;
    for (offset, character) in group.char_indices() {
        match character {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            character if expect_head && depth == 0 && !character.is_whitespace() => {
                expect_head = false;
                let head = identifier_at(&group[offset..]);
                if !head.is_empty() {
                    heads.push(head.to_owned());
                }
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules one file names through `crate::` and escaping `super::` paths.
fn imports_of(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let preceded_by_path = |index: usize| {
        code[..index].chars().next_back().is_some_and(|character| {
            character.is_ascii_alphanumeric()
                || character == '_'
                || character == ':'
                || character == '$'
        })
    };
    for (index, _) in code.match_indices("crate::") {
        if preceded_by_path(index) {
            continue;
        }
        let rest = &code[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            named.extend(group_heads(group));
        } else {
            named.insert(identifier_at(rest).to_owned());
        }
    }
    for (index, _) in code.match_indices("super::") {
        if preceded_by_path(index) {
            continue;
        }
        // `super` in `a/b.rs` is `a`; each further `super::` climbs one more.
        let mut rest = &code[index + "super::".len()..];
        let mut depth = module.len().saturating_sub(1);
        while let Some(after) = rest.strip_prefix("super::") {
            depth = depth.saturating_sub(1);
            rest = after;
        }
        if depth == 0 {
            if let Some(group) = rest.strip_prefix('{') {
                named.extend(group_heads(group));
            } else {
                named.insert(identifier_at(rest).to_owned());
            }
        }
    }
    named
}

fn graph() -> Graph {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&source, &mut files);
    let top_level: BTreeSet<String> = files
        .iter()
        .filter_map(|file| module_path(&source, file).first().cloned())
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_path(&source, file);
        let Some(from) = module.first() else {
            continue; // lib.rs declares the modules; it is the root, not a node.
        };
        let text = fs::read_to_string(file).expect("a readable source file");
        let targets = graph.entry(from.clone()).or_default();
        for named in imports_of(&code_only(&text), &module) {
            // `crate::foo` where `foo` is not a module (a macro, a re-export) is no edge.
            if named != *from && top_level.contains(&named) {
                targets.insert(named);
            }
        }
    }
    graph
}

/// Every pair of distinct modules that reach each other, each pair once, sorted.
fn mutual_reaches(graph: &Graph) -> Vec<(String, String)> {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_owned()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|node| (node, reach(node))).collect();
    let mut pairs = Vec::new();
    for (from, reached) in &reaches {
        for to in reached {
            if *from < to && reaches.get(to).is_some_and(|back| back.contains(*from)) {
                pairs.push(((*from).clone(), to.clone()));
            }
        }
    }
    pairs
}

fn allowed_by(list: &[(&str, &str)], pair: &(String, String)) -> bool {
    list.iter()
        .any(|(a, b)| (pair.0 == *a && pair.1 == *b) || (pair.0 == *b && pair.1 == *a))
}

fn allowed(pair: &(String, String)) -> bool {
    allowed_by(ALLOWED_CYCLES, pair)
}

#[test]
fn top_level_modules_import_each_other_only_through_the_allowed_cycles() {
    let graph = graph();
    for (module, imports) in &graph {
        let imports: Vec<&str> = imports.iter().map(String::as_str).collect();
        println!("{module} -> {}", imports.join(", "));
    }
    let cycles: Vec<_> = mutual_reaches(&graph)
        .into_iter()
        .filter(|pair| !allowed(pair))
        .collect();
    assert!(
        cycles.is_empty(),
        "module pairs that reach each other (an import cycle): {cycles:?}"
    );
}

#[test]
fn the_allowed_cycles_are_still_cycles() {
    // An allow-list entry that no longer matches is a cycle someone removed: drop it so the
    // pair cannot come back unnoticed.
    let pairs = mutual_reaches(&graph());
    for (a, b) in ALLOWED_CYCLES {
        assert!(
            pairs.iter().any(|pair| allowed(pair)
                && ((pair.0 == *a && pair.1 == *b) || (pair.0 == *b && pair.1 == *a))),
            "{a} <-> {b} is no longer a cycle: remove it from ALLOWED_CYCLES"
        );
    }
}

#[test]
fn the_reader_finds_the_imports_a_planted_cycle_would_add() {
    // The parser itself: brace groups, inline paths, escaping `super::`, comments and strings.
    let code = code_only(
        "use crate::{adapter::Adapter, io::{self, complete}};\n\
         // use crate::events;\n\
         /* crate::dump */ let name = \"crate::trace\";\n\
         fn f() { crate::luns::remove(); super::super::super::limits::X; super::super::sibling::Y; }\n",
    );
    let named = imports_of(
        &code,
        &[
            "recovery".to_owned(),
            "tmf".to_owned(),
            "service".to_owned(),
        ],
    );
    let expected: BTreeSet<String> = ["adapter", "io", "luns", "limits"]
        .map(str::to_owned)
        .into();
    assert_eq!(named, expected);

    // A plain cycle among three modules: every pair in it is reported.
    let mut graph = Graph::new();
    for (from, to) in [
        ("events", "adapter"),
        ("adapter", "recovery"),
        ("recovery", "events"),
    ] {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned());
    }
    let cycles: Vec<_> = mutual_reaches(&graph)
        .into_iter()
        .filter(|pair| !allowed_by(&[("adapter", "io")], pair))
        .collect();
    assert_eq!(
        cycles,
        [
            ("adapter", "events"),
            ("adapter", "recovery"),
            ("events", "recovery")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // The allowed pair does not hide a cycle through it: recovery -> io -> adapter -> recovery.
    let mut graph = Graph::new();
    for (from, to) in [
        ("adapter", "io"),
        ("io", "adapter"),
        ("adapter", "recovery"),
        ("recovery", "io"),
    ] {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned());
    }
    let cycles: Vec<_> = mutual_reaches(&graph)
        .into_iter()
        .filter(|pair| !allowed_by(&[("adapter", "io")], pair))
        .collect();
    assert_eq!(
        cycles,
        [("adapter", "recovery"), ("io", "recovery")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}
