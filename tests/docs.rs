//! The documentation as a newcomer meets it: the README stays a front door (under 250 lines,
//! opening with the two commands), every relative link in the README, `docs/`, ARCHITECTURE.md
//! and CHANGELOG.md resolves (files and `#anchors`), and `docs/configuration.md` is generated
//! from `fidelis.example.toml`, with every key there explained (its own comment, or the same key
//! explained in an earlier section). After changing `fidelis.example.toml`, regenerate the page
//! with `FIDELIS_UPDATE_DOCS=1 cargo test --test docs`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> =
        ["README.md", "ARCHITECTURE.md", "CHANGELOG.md"].iter().map(|p| root().join(p)).collect();
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines < 250, "README.md has {lines} lines: move the detail to docs/");
    let first_block = readme.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).unwrap_or_default();
    let commands: Vec<&str> =
        first_block.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).collect();
    assert_eq!(commands, ["make demo", "make test"], "the README opens with the two commands");
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
        } else if !code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The relative link targets of a Markdown text (outside code blocks).
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.starts_with("http://")
                && !target.starts_with("https://")
                && !target.starts_with("mailto:")
            {
                out.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap();
        for target in links(&text) {
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() { page.clone() } else { dir.join(path) };
            let shown = page.strip_prefix(root()).unwrap_or(&page).display().to_string();
            if !file.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
                continue;
            }
            if let Some(a) = anchor.filter(|_| file.extension().is_some_and(|e| e == "md")) {
                if !anchors(&fs::read_to_string(&file).unwrap()).contains(a) {
                    broken.push(format!("{shown}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(checked > 30, "{checked} links checked");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// One key of `fidelis.example.toml`: its default and what the file says about it.
struct Key {
    name: String,
    default: String,
    meaning: String,
    /// The key right above it in the same block (no blank line or comment between), whose
    /// comment covers both.
    above: Option<String>,
}

#[derive(Default)]
struct Section {
    intro: Vec<String>,
    keys: Vec<Key>,
    /// Comment blocks that belong to no key (notes, commented-out examples).
    notes: Vec<Vec<String>>,
}

fn is_key(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(" = ")?;
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then_some((name, value))
}

/// A value without its trailing `# comment` (outside quotes), and the comment.
fn split_value(value: &str) -> (String, String) {
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return (value[..i].trim().to_string(), value[i + 1..].trim().to_string()),
            _ => {}
        }
    }
    (value.trim().to_string(), String::new())
}

/// The sections of `fidelis.example.toml` in file order (`[[x]]` tables merged into one).
fn parse(example: &str) -> Vec<(String, Section)> {
    let mut sections: Vec<(String, Section)> = vec![("(top)".into(), Section::default())];
    let mut pending: Vec<String> = Vec::new();
    // The previous line's key, when the previous line was a key.
    let mut previous: Option<String> = None;
    let flush = |sections: &mut Vec<(String, Section)>, pending: &mut Vec<String>| {
        if pending.is_empty() {
            return;
        }
        let s = &mut sections.last_mut().unwrap().1;
        if s.keys.is_empty() && s.notes.is_empty() && s.intro.is_empty() {
            s.intro = std::mem::take(pending);
        } else {
            s.notes.push(std::mem::take(pending));
        }
    };
    for line in example.lines() {
        let line = line.trim_end();
        let above = previous.take();
        if let Some(header) = line.strip_prefix('[') {
            // A comment right above a header (no blank line between) introduces its section.
            let intro = std::mem::take(&mut pending);
            let name = header.trim_start_matches('[').trim_end_matches(']').to_string();
            if sections.last().is_none_or(|(n, _)| *n != name) {
                sections.push((name, Section { intro, ..Section::default() }));
            }
        } else if let Some(comment) = line.strip_prefix('#') {
            pending.push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
        } else if line.is_empty() {
            flush(&mut sections, &mut pending);
        } else if let Some((name, value)) = is_key(line) {
            let (default, trailing) = split_value(value);
            let mut meaning: Vec<String> = std::mem::take(&mut pending);
            if !trailing.is_empty() {
                meaning.push(trailing);
            }
            let above = if meaning.is_empty() { above } else { None };
            let s = &mut sections.last_mut().unwrap().1;
            if !s.keys.iter().any(|k| k.name == name) {
                s.keys.push(Key { name: name.to_string(), default, meaning: meaning.join(" "), above });
            }
            previous = Some(name.to_string());
        }
    }
    flush(&mut sections, &mut pending);
    sections
}

/// `docs/configuration.md` from `fidelis.example.toml`; the keys nothing explains.
fn configuration_page(example: &str) -> (String, Vec<String>) {
    let sections = parse(example);
    let mut explained: BTreeMap<String, String> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from [`fidelis.example.toml`](../fidelis.example.toml) by `tests/docs.rs` (regenerate: \
         `FIDELIS_UPDATE_DOCS=1 cargo test --test docs`). A config file only needs the keys it changes; \
         an unknown key is an error naming it.\n",
    );
    for (name, s) in &sections {
        let escape = |t: &str| t.replace('|', "\\|");
        if name == "(top)" {
            out.push('\n');
            out.push_str(&s.intro.join(" "));
            out.push('\n');
            continue;
        }
        out.push_str(&format!("\n## `[{name}]`\n\n"));
        if !s.intro.is_empty() {
            out.push_str(&s.intro.join(" "));
            out.push_str("\n\n");
        }
        if !s.keys.is_empty() {
            out.push_str("| key | default | meaning |\n|---|---|---|\n");
        }
        let mut covered: HashSet<&str> = HashSet::new();
        for k in &s.keys {
            let meaning = if k.meaning.is_empty() {
                match (explained.get(&k.name), &k.above) {
                    (Some(section), _) => format!("as in `[{section}]`"),
                    (None, Some(above)) if covered.contains(above.as_str()) => {
                        format!("with `{above}` (above)")
                    }
                    (None, _) => {
                        unexplained.push(format!("[{name}] {}", k.name));
                        String::new()
                    }
                }
            } else {
                explained.entry(k.name.clone()).or_insert_with(|| name.clone());
                k.meaning.clone()
            };
            if !meaning.is_empty() {
                covered.insert(&k.name);
            }
            out.push_str(&format!("| `{}` | `{}` | {} |\n", k.name, escape(&k.default), escape(&meaning)));
        }
        for note in &s.notes {
            let code = note.iter().any(|l| is_key(l).is_some() || l.starts_with('['));
            out.push('\n');
            if code {
                // Commented-out keys as they would be set; the prose around them as comments.
                let lines: Vec<String> = note
                    .iter()
                    .map(|l| {
                        if l.trim().is_empty() || is_key(l).is_some() || l.starts_with('[') {
                            l.trim_end().to_string()
                        } else {
                            format!("# {l}")
                        }
                    })
                    .collect();
                out.push_str(&format!("```toml\n{}\n```\n", lines.join("\n")));
            } else {
                out.push_str(&note.join(" "));
                out.push('\n');
            }
        }
    }
    (out, unexplained)
}

#[test]
fn every_configuration_key_is_documented() {
    let example = fs::read_to_string(root().join("fidelis.example.toml")).unwrap();
    let (page, unexplained) = configuration_page(&example);
    assert!(unexplained.is_empty(), "keys fidelis.example.toml does not explain: {unexplained:?}");
    let keys: usize = parse(&example).iter().map(|(_, s)| s.keys.len()).sum();
    assert!(keys > 150, "{keys} keys");
    let path = root().join("docs/configuration.md");
    if std::env::var_os("FIDELIS_UPDATE_DOCS").is_some() {
        fs::write(&path, &page).unwrap();
    }
    let current = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == page,
        "{} is not what fidelis.example.toml gives: run FIDELIS_UPDATE_DOCS=1 cargo test --test docs",
        Path::new("docs/configuration.md").display()
    );
}
