//! The crate's layering, checked on its source: `cli` is the edge (argument parsing, printing,
//! exit codes) and nothing below it may import it. `web` and `tui` build on `analysis`,
//! `replay`, `index` and `cassette`, never on a command's module.
use std::path::{Path, PathBuf};

/// The module path of a source file below `src/` (`web/model.rs` → `["web", "model"]`,
/// `web/mod.rs` → `["web"]`, `lib.rs` → `[]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.strip_suffix(".rs").unwrap_or(&file);
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Whether Rust source `text` of the module at `module` names the crate's `cli` module: as
/// `crate::cli`, `crate::{…, cli…}`, or through `super::`/`self::` paths that lead to it.
/// Returns the offending path. Line comments are not code.
fn imports_cli(module: &[String], text: &str) -> Option<String> {
    // Without comments and whitespace, so `crate :: cli` and groups over several lines match.
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    let shown = |i: usize| code[i..].chars().take(60).collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let grouped = rest
            .strip_prefix('{')
            .is_some_and(|g| top_level_items(g).iter().any(|item| is_cli(item)));
        if is_cli(rest) || grouped {
            return Some(shown(i));
        }
    }
    // `super::super::cli` from `web/model.rs` is `crate::cli`; so is `self::cli` in `lib.rs`.
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("::") {
            continue; // counted from the first `super::` of the chain
        }
        let mut rest = &code[i..];
        let mut depth = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            depth += 1;
        }
        if depth == module.len() && is_cli(rest) {
            return Some(shown(i));
        }
    }
    if module.is_empty() {
        for (i, _) in code.match_indices("self::") {
            if is_cli(&code[i + "self::".len()..]) {
                return Some(shown(i));
            }
        }
        for pat in [";usecli", "{usecli"] {
            if let Some(i) = code.find(pat) {
                return Some(shown(i + 1));
            }
        }
        if code.starts_with("usecli") {
            return Some(shown(0));
        }
    }
    None
}

/// `cli` as a whole path segment at the start of `s`.
fn is_cli(s: &str) -> bool {
    s.strip_prefix("cli")
        .is_some_and(|r| !r.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
}

/// The comma-separated items of a `{…}` group, nested groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.push(&group[start..i]);
                return out;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&group[start..]);
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_outside_cli_imports_cli() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut offenders = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        // `cli/` is the edge; the binaries are thinner still (they call `cli::…::main`);
        // this file spells the forbidden paths in its own tests.
        if rel.starts_with("cli") || rel.starts_with("bin") || rel == Path::new("layering.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        if let Some(path) = imports_cli(&module_path(rel), &text) {
            offenders.push(format!("{}: {path}", rel.display()));
        }
    }
    assert!(
        files.len() > 50,
        "scanned only {} files under {}",
        files.len(),
        src.display()
    );
    assert!(
        offenders.is_empty(),
        "modules outside cli/ import cli (move what they need below cli, e.g. into \
         analysis/):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_finds_every_spelling() {
    let web = ["web".to_owned(), "model".to_owned()];
    for bad in [
        "use crate::cli::tools::stats::normalize_path;",
        "    crate::cli::tools::export::shell_quote(s)",
        "use crate::{cassette, cli::tools};",
        "use crate::{\n    cassette,\n    cli::{self, tools},\n};",
        "use super::super::cli::tools::diff;",
        "let r: &crate :: cli::tools::diff::Report;",
    ] {
        assert!(imports_cli(&web, bad).is_some(), "missed: {bad}");
    }
    for good in [
        "use crate::analysis::diff;",
        "use crate::client::x;",
        "use crate::{cassette, client};",
        "use crate::{replay::{cli, x}, index};",
        "use super::cli_helpers;",
        "// crate::cli::tools used to be imported here",
        "use super::super::web::cli;",
    ] {
        assert!(imports_cli(&web, good).is_none(), "false alarm: {good}");
    }
    assert!(imports_cli(&[], "pub mod cli;").is_none());
    assert!(imports_cli(&[], "use self::cli::tools;").is_some());
    assert!(imports_cli(&["web".to_owned()], "use super::cli::tools;").is_some());
}
