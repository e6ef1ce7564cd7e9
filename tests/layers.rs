//! The layer order of the crate's top-level modules: every module refers
//! only to modules below it, never to one above it or beside it.
//!
//! cli -> demo -> {bench, report, eval, interop} -> train -> data
//! -> {geo, model} -> dist -> {formats, progress, settings}
//!
//! The check parses the sources with syn (no compiler): every `crate::<module>`
//! path (in `use` trees, expressions, types, patterns and the token bodies of
//! macro calls) and every `super::` chain that climbs out of its top-level
//! module. Comments and string literals are not code, so they do not count.

use proc_macro2::{Ident, TokenStream, TokenTree};
use std::path::{Path, PathBuf};
use syn::visit::{self, Visit};

/// The layers, top first; modules of one layer may not refer to each other.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["demo"],
    &["bench", "report", "eval", "interop"],
    &["train"],
    &["data"],
    &["geo", "model"],
    &["dist"],
    &["formats", "progress", "settings"],
];

/// The layer of top-level module `module` (0 is the top), if listed.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Collects the top-level modules a file refers to, as (line, module).
struct References {
    /// How deep the file's module sits below the crate root.
    depth: usize,
    found: Vec<(usize, String)>,
}

impl References {
    /// Where a path names a top-level module: `crate::m::...`, or
    /// `super::...::m::...` climbing `depth` or more levels.
    fn target(&self, segments: &[Ident]) -> Option<usize> {
        let climbs = segments.iter().take_while(|s| *s == "super").count();
        let at = match segments.first() {
            Some(first) if first == "crate" => 1,
            _ if climbs >= self.depth => climbs,
            _ => return None,
        };
        (at < segments.len()).then_some(at)
    }

    /// Records the top-level module a path names, if any.
    fn path(&mut self, segments: &[Ident]) {
        if let Some(at) = self.target(segments) {
            let target = &segments[at];
            self.found
                .push((target.span().start().line, target.to_string()));
        }
    }

    /// The modules a `use` tree names, each once (`use crate::a::{b, c}`
    /// names `a` once), `prefix` being the path above `tree`.
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<Ident>) {
        let name = match tree {
            syn::UseTree::Path(p) => &p.ident,
            syn::UseTree::Name(n) => &n.ident,
            syn::UseTree::Rename(r) => &r.ident,
            syn::UseTree::Glob(_) => return,
            syn::UseTree::Group(g) => {
                return g.items.iter().for_each(|t| self.use_tree(t, prefix));
            }
        };
        prefix.push(name.clone());
        if self.target(prefix) == Some(prefix.len() - 1) {
            self.path(prefix);
        }
        if let syn::UseTree::Path(p) = tree {
            self.use_tree(&p.tree, prefix);
        }
        prefix.pop();
    }

    /// The `a::b::c` chains in a macro body, which syn leaves as tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let mut chain: Vec<Ident> = Vec::new();
        let mut colons = 0;
        for token in tokens {
            match token {
                TokenTree::Ident(i) if colons == 2 => {
                    chain.push(i);
                    colons = 0;
                }
                TokenTree::Punct(p) if p.as_char() == ':' && !chain.is_empty() && colons < 2 => {
                    colons += 1
                }
                other => {
                    self.path(&chain);
                    chain.clear();
                    colons = 0;
                    match other {
                        TokenTree::Ident(i) => chain.push(i),
                        TokenTree::Group(g) => self.tokens(g.stream()),
                        _ => {}
                    }
                }
            }
        }
        self.path(&chain);
    }
}

impl Visit<'_> for References {
    fn visit_item_use(&mut self, item: &syn::ItemUse) {
        self.use_tree(&item.tree, &mut Vec::new());
    }

    fn visit_path(&mut self, path: &syn::Path) {
        let segments: Vec<Ident> = path.segments.iter().map(|s| s.ident.clone()).collect();
        self.path(&segments);
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &syn::Macro) {
        visit::visit_macro(self, mac);
        self.tokens(mac.tokens.clone());
    }
}

/// The top-level modules `source` refers to, as (line, module), in line
/// order; `depth`: how deep the file's module sits below the crate root.
fn references(source: &str, depth: usize) -> syn::Result<Vec<(usize, String)>> {
    let mut refs = References {
        depth,
        found: Vec::new(),
    };
    refs.visit_file(&syn::parse_file(source)?);
    refs.found.sort_by_key(|(line, _)| *line);
    Ok(refs.found)
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

/// Every reference against the layer order, as `file:line: a -> b: code`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let shown = format!("src/{}", relative.display());
        let Some((module, depth)) = module_of(relative) else {
            continue;
        };
        let Some(from) = layer(&module) else {
            found.push(format!("{shown}: module {module} is in no layer"));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        let targets = match references(&source, depth) {
            Ok(targets) => targets,
            Err(e) => {
                found.push(format!("{shown}: does not parse: {e}"));
                continue;
            }
        };
        for (line, target) in targets {
            // A name outside LAYERS after crate:: is an item of lib.rs or a
            // module missing from the table: the second is caught by
            // `every_module_has_a_layer`.
            if target != module && layer(&target).is_some_and(|to| to <= from) {
                let code = lines[line - 1].trim();
                found.push(format!("{shown}:{line}: {module} -> {target}: {code}"));
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
    let modules: Vec<String> = syn::parse_file(&lib)
        .unwrap()
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        modules.len() >= 10,
        "read the modules of lib.rs: {modules:?}"
    );
    let missing: Vec<&String> = modules.iter().filter(|m| layer(m).is_none()).collect();
    assert!(missing.is_empty(), "modules in no layer: {missing:?}");
}

#[test]
fn the_scanner_finds_paths_and_skips_comments_and_strings() {
    let source = "use crate::{data::Manifest, geo};\n\
         // use crate::cli;\n\
         fn f() { let s = \"crate::eval\"; /* crate::report */ crate::model::x(); }\n\
         fn g() { let r = r#\"crate::bench\"#; anyhow::bail!(\"crate::demo {}\", crate::interop::y()); }\n\
         /// [`crate::demo`]\n\
         use super::super::train::Sgd;\n";
    let at = |depth| -> Vec<String> {
        let found = references(source, depth).unwrap();
        found
            .iter()
            .map(|(line, m)| format!("{line}:{m}"))
            .collect()
    };
    assert_eq!(
        at(2),
        ["1:data", "1:geo", "3:model", "4:interop", "6:train"]
    );
    assert_eq!(at(3), ["1:data", "1:geo", "3:model", "4:interop"], "inside");
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
