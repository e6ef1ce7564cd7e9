//! The layer order of the crate's top-level modules: every module refers
//! only to modules below it, never to one above it or beside it.
//!
//! cli -> demo -> {bench, report, eval, interop} -> train -> data
//! -> {geo, model} -> {formats, progress, settings}
//!
//! The check reads the sources (no compiler): every `crate::<module>` path
//! (in `use` lines, `use crate::{a, b}` groups and inline paths) and every
//! `super::` chain that climbs out of its top-level module, outside comments
//! and string literals.

use std::path::{Path, PathBuf};

/// The layers, top first; modules of one layer may not refer to each other.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["demo"],
    &["bench", "report", "eval", "interop"],
    &["train"],
    &["data"],
    &["geo", "model"],
    &["formats", "progress", "settings"],
];

/// The layer of top-level module `module` (0 is the top), if listed.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `source` with comments and the contents of string and char literals
/// replaced by spaces, newlines kept (so line numbers stay).
fn code_only(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            i = skip_block_comment(&c, i, &mut out);
        } else if c[i] == 'r' && !ident(c.get(i.wrapping_sub(1))) && raw_string_at(&c, i) {
            i = skip_raw_string(&c, i, &mut out);
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('"', '\''); a lifetime ('a) stays.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A space for `ch`, or the newline it is.
fn blank(out: &mut String, ch: char) {
    out.push(if ch == '\n' { '\n' } else { ' ' });
}

/// Blanks the (nested) block comment that opens at `c[i]`; returns the
/// index after it.
fn skip_block_comment(c: &[char], mut i: usize, out: &mut String) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
            out.push_str("  ");
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            out.push_str("  ");
            if depth == 0 {
                break;
            }
        } else {
            blank(out, c[i]);
            i += 1;
        }
    }
    i
}

/// Whether a raw string `r"..."` or `r#"..."#` opens at `c[i]` (an `r`).
fn raw_string_at(c: &[char], i: usize) -> bool {
    let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
    c.get(i + 1 + hashes) == Some(&'"')
}

/// Blanks the raw string that opens at `c[i]`; returns the index after it.
fn skip_raw_string(c: &[char], i: usize, out: &mut String) -> usize {
    let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
    let close: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    let mut i = i + 2 + hashes;
    while i < c.len() && !c[i..].starts_with(&close) {
        blank(out, c[i]);
        i += 1;
    }
    out.push_str("\"\"");
    i + close.len()
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The identifier at the start of `s`.
fn leading_ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a line of code refers to: `crate::m`, each `m` of
/// `crate::{m, n::x}`, and `super::...::m` climbing `depth` or more levels
/// (`depth`: how deep the file's module sits below the crate root).
fn references(line: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        if ident(line[..at].chars().last().as_ref()) {
            continue; // e.g. `mycrate::`
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut nesting = 0;
            let mut item_start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => nesting += 1,
                    '}' if nesting == 0 => break,
                    '}' => nesting -= 1,
                    ',' if nesting == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        found.push(leading_ident(&group[k..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(leading_ident(rest).to_string());
        }
    }
    for (at, _) in line.match_indices("super::") {
        if ident(line[..at].chars().last().as_ref()) || line[..at].ends_with("super::") {
            continue; // counted from the first `super::` of a chain
        }
        let mut rest = &line[at..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r.trim_start();
        }
        if climbs >= depth {
            found.push(leading_ident(rest).to_string());
        }
    }
    found
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Where a file sits: its top-level module and its module's depth below the
/// crate root (`src/data/synth/mod.rs`: data, 2); `None` for the crate root.
fn module_of(relative: &Path) -> Option<(String, usize)> {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.last()?;
    let depth = parts.len() - usize::from(last == "mod.rs");
    match parts.first()?.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(module) => Some((module.to_string(), 1)),
        None => Some((parts[0].clone(), depth)),
    }
}

/// Every reference against the layer order, as `file:line: a -> b (code)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let Some((module, depth)) = module_of(relative) else {
            continue;
        };
        let Some(from) = layer(&module) else {
            found.push(format!(
                "src/{}: module {module} is in no layer",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        let raw: Vec<&str> = source.lines().collect();
        for (n, line) in code_only(&source).lines().enumerate() {
            for target in references(line, depth) {
                let allowed = target == module || layer(&target).is_none_or(|to| to > from);
                // A name outside LAYERS after crate:: is an item of lib.rs
                // or a module missing from the table: the second is caught
                // by `every_module_has_a_layer`.
                if !allowed {
                    found.push(format!(
                        "src/{}:{}: {module} -> {target}: {}",
                        relative.display(),
                        n + 1,
                        raw[n].trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn modules_refer_only_to_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "references against the layer order (see tests/layers.rs):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let code = code_only(&lib);
    let modules: Vec<&str> = code
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or(l.trim().strip_prefix("mod "))
        })
        .map(|m| m.trim_end_matches(';').trim())
        .collect();
    assert!(
        modules.len() >= 10,
        "read the modules of lib.rs: {modules:?}"
    );
    let missing: Vec<&&str> = modules.iter().filter(|m| layer(m).is_none()).collect();
    assert!(missing.is_empty(), "modules in no layer: {missing:?}");
}

#[test]
fn the_scanner_finds_paths_and_skips_comments_and_strings() {
    let code = code_only(
        "use crate::{data::Manifest, geo};\n\
         // use crate::cli;\n\
         let s = \"crate::eval\"; let c = '\"'; /* crate::report */ crate::model::x();\n\
         let r = r#\"crate::bench\"#;\n\
         /// [`crate::demo`]\n\
         use super::super::train::Sgd;\n",
    );
    let lines: Vec<&str> = code.lines().collect();
    assert_eq!(references(lines[0], 2), ["data", "geo"]);
    assert!(references(lines[1], 2).is_empty());
    assert_eq!(references(lines[2], 2), ["model"]);
    assert!(references(lines[3], 2).is_empty(), "raw string");
    assert!(references(lines[4], 2).is_empty(), "doc comment");
    assert_eq!(references(lines[5], 2), ["train"]);
    assert!(references(lines[5], 3).is_empty(), "inside the module");
}

#[test]
fn a_reference_upward_or_sideways_is_reported() {
    let dir = std::env::temp_dir().join(format!("geossl-layers-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("geo")).unwrap();
    std::fs::write(
        dir.join("geo/a.rs"),
        "use crate::formats::npy;\nuse crate::data::Manifest;\nfn f() { crate::model::x(); super::b::y(); }\n",
    )
    .unwrap();
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [
            "src/geo/a.rs:2: geo -> data: use crate::data::Manifest;",
            "src/geo/a.rs:3: geo -> model: fn f() { crate::model::x(); super::b::y(); }",
        ]
    );
}
