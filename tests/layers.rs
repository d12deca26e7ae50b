//! The layering check (`make lint`, and every `cargo test`): the modules of `pipeline/` in
//! the layer order written in ARCHITECTURE.md (block `layers`, top layer first). A module may
//! import from strictly lower layers only (never from its own layer or above), so data flows
//! one way and no import cycle can form; inside one module, its submodules may not import
//! each other in a cycle either. Every module must be placed in a layer.
//!
//! Imports are read from the text: `crate::x...` paths and `use crate::{x, y::z}` groups,
//! outside `#[cfg(test)]` modules and comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer block of ARCHITECTURE.md: one line per layer, top first, module names
/// separated by spaces.
fn layers_of(architecture: &str) -> Vec<Vec<String>> {
    let start = architecture.find("```layers\n").expect("ARCHITECTURE.md has a ```layers block") + 10;
    let end = start + architecture[start..].find("```").expect("the layers block is closed");
    architecture[start..end]
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Module path of a source file relative to `pipeline/`: `train/gbdt.rs` -> `train::gbdt`,
/// `train/mod.rs` -> `train`; `None` for the crate root and the binary.
fn module_of(rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    if parts.last() == Some(&"mod") {
        parts.pop();
    }
    match parts.as_slice() {
        ["lib"] | ["main"] => None,
        _ => Some(parts.join("::")),
    }
}

/// The code of a file without `#[cfg(test)]` modules and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The module paths (as named in `modules`) a file's code refers to.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut paths: Vec<String> = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            paths.extend(body.split(',').map(|p| p.trim().to_string()));
        } else {
            let end =
                rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            paths.push(rest[..end].to_string());
        }
    }
    paths
        .iter()
        .filter_map(|p| {
            // The longest prefix that is a module.
            let parts: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
            (1..=parts.len()).rev().map(|k| parts[..k].join("::")).find(|m| modules.contains(m))
        })
        .collect()
}

/// Violations of the layering rules by `files` (path relative to `pipeline/`, text).
fn check(files: &[(String, String)], layers: &[Vec<String>]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i))).collect();
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let mut errors = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let Some(module) = module_of(path) else { continue };
        let top = module.split("::").next().unwrap_or("").to_string();
        let Some(&mine) = layer_of.get(top.as_str()) else {
            errors.push(format!("pipeline/{path}: module `{top}` is in no layer of ARCHITECTURE.md"));
            continue;
        };
        for dep in imports(&code(text), &modules) {
            let dep_top = dep.split("::").next().unwrap_or("");
            if dep_top == top {
                edges.entry(module.clone()).or_default().insert(dep);
                continue;
            }
            match layer_of.get(dep_top) {
                Some(&theirs) if theirs > mine => {}
                Some(&theirs) => errors.push(format!(
                    "pipeline/{path}: `{module}` imports `{dep}`, which is {} (layer {} of `{top}`, {} of `{dep_top}`; top = 1)",
                    if theirs == mine { "in the same layer" } else { "in a higher layer" },
                    mine + 1,
                    theirs + 1
                )),
                None => errors.push(format!("pipeline/{path}: imports `{dep}`, which is in no layer")),
            }
        }
    }
    errors.extend(submodule_cycles(&edges));
    errors
}

/// Cycles among the submodules of one module (a parent declaring its children is not an
/// import; a child naming its parent is).
fn submodule_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut errors = Vec::new();
    for (a, deps) in edges {
        for b in deps {
            if b.starts_with(&format!("{a}::")) {
                continue;
            }
            // Is there a path back from b to a?
            let mut seen = BTreeSet::new();
            let mut stack = vec![b.clone()];
            while let Some(m) = stack.pop() {
                if !seen.insert(m.clone()) {
                    continue;
                }
                for n in edges.get(&m).into_iter().flatten() {
                    if n == a {
                        errors.push(format!("import cycle: `{a}` -> `{b}` -> ... -> `{a}`"));
                    } else if !n.starts_with(&format!("{m}::")) {
                        stack.push(n.clone());
                    }
                }
            }
        }
    }
    errors.sort();
    errors.dedup();
    errors
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn pipeline_modules_import_only_from_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layers_of(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let mut files = Vec::new();
    sources(&root.join("pipeline"), &root.join("pipeline"), &mut files);
    files.sort();
    let errors = check(&files, &layers);
    assert!(errors.is_empty(), "layering violations:\n{}", errors.join("\n"));
    // Every layer names modules that exist (the documentation stays true).
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    for m in layers.iter().flatten() {
        assert!(modules.contains(m), "ARCHITECTURE.md names a layer module `{m}` that does not exist");
    }
}

fn file(path: &str, text: &str) -> (String, String) {
    (path.to_string(), text.to_string())
}

#[test]
fn the_check_finds_cycles_upward_and_same_layer_imports_and_unplaced_modules() {
    let layers = layers_of("```layers\njobs\nscore train\nschema  # foundations\n```");
    assert_eq!(layers, vec![vec!["jobs"], vec!["score", "train"], vec!["schema"]]);
    let ok = [
        file("jobs/mod.rs", "use crate::score::{self, Run};\nuse crate::{schema, train::fit};"),
        file("score.rs", "use crate::schema::CUSTOMER;\n#[cfg(test)]\nmod tests { use crate::jobs; }"),
        file("train/mod.rs", "pub mod gbdt;\npub mod oot;\n// crate::jobs in a comment"),
        file("train/oot.rs", "use super::gbdt::Gbdt;\nuse crate::train::gbdt;"),
        file("train/gbdt.rs", "use crate::schema;"),
        file("schema.rs", ""),
        file("lib.rs", "pub mod jobs;"),
    ];
    assert_eq!(check(&ok, &layers), Vec::<String>::new());
    // An injected cycle between two layers: the lower one imports the upper one.
    let mut cyclic = ok.to_vec();
    cyclic[1] = file("score.rs", "use crate::schema::CUSTOMER;\nfn f() { crate::jobs::run(); }");
    let e = check(&cyclic, &layers);
    assert!(
        e.len() == 1 && e[0].contains("`score` imports `jobs`") && e[0].contains("higher layer"),
        "{e:?}"
    );
    // The same layer.
    let mut same = ok.to_vec();
    same[1] = file("score.rs", "use crate::train::{gbdt::Gbdt};");
    let e = check(&same, &layers);
    assert!(e.len() == 1 && e[0].contains("same layer"), "{e:?}");
    // A cycle between submodules of one module.
    let mut sub = ok.to_vec();
    sub[4] = file("train/gbdt.rs", "use crate::train::oot::Trees;");
    let e = check(&sub, &layers);
    assert!(e.iter().any(|m| m.contains("import cycle")), "{e:?}");
    // A module in no layer.
    let mut unplaced = ok.to_vec();
    unplaced.push(file("extra.rs", ""));
    assert!(check(&unplaced, &layers).iter().any(|m| m.contains("`extra` is in no layer")));
}
