//! The layout rules of `docs/architecture.md`, checked on the sources so that
//! they hold after every change: the engine's top-level modules import only
//! modules of lower layers (so there is no import cycle between them), the
//! library never mentions Tauri, and no source file is over about 500 lines
//! (its `#[cfg(test)]` part aside).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The engine's top-level modules, lowest layer first. A module may import
/// only modules of a strictly lower layer.
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("telemetry", 1),
    ("storage", 2),
    ("rollups", 3),
    // A site's settings (goals): below the stats, which match goals' conversions.
    ("sites", 3),
    ("ingest", 4),
    ("worker", 4),
    ("stats", 4),
    // Backup and restore: reads the queue, events and sites; the binaries and desktop call it.
    ("backup", 4),
    ("http", 5),
    ("engine", 6),
    ("desktop", 7),
];

/// Most lines a source file may have before its tests.
const MAX_LINES: usize = 520;

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src-tauri/src")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a library file belongs to (`None` for `lib.rs` and the binaries).
fn top_module(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(sources()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The code of a file without its comment lines and without its tests.
fn code(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"))
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect()
}

/// The top-level modules a file's code names as `crate::NAME`.
fn imported_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in code(text) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `crate::{a, b}` and `crate::Config` (a re-export at the root) name no module here.
            if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                names.push(name);
            }
        }
    }
    names
}

fn layer(module: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .unwrap_or_else(|| panic!("module {module} is not in tests/architecture.rs's LAYERS: place it in a layer"))
        .1
}

#[test]
fn modules_import_only_lower_layers_so_there_are_no_cycles() {
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in rust_files(&sources()) {
        let Some(module) = top_module(&file) else { continue };
        let text = fs::read_to_string(&file).unwrap();
        for imported in imported_modules(&text) {
            if imported != module {
                let shown = file.strip_prefix(sources()).unwrap().display().to_string();
                edges.entry((module.clone(), imported)).or_default().push(shown);
            }
        }
    }
    assert!(!edges.is_empty(), "no imports found: the check reads nothing");
    let upward: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| layer(to) >= layer(from))
        .map(|((from, to), files)| format!("{from} -> {to} (in {})", files.join(", ")))
        .collect();
    assert!(upward.is_empty(), "imports that do not point to a lower layer:\n{}", upward.join("\n"));
}

#[test]
fn the_engine_library_knows_nothing_of_tauri() {
    let mut mentions = Vec::new();
    for file in rust_files(&sources()) {
        if file.strip_prefix(sources()).unwrap().starts_with("bin") {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        if code(&text).iter().any(|line| line.contains("tauri")) {
            mentions.push(file.display().to_string());
        }
    }
    assert!(mentions.is_empty(), "Tauri named in the library: {mentions:?}");
}

#[test]
fn no_source_file_is_over_about_500_lines_before_its_tests() {
    let files = rust_files(&sources());
    assert!(files.len() > 20, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = fs::read_to_string(file).unwrap();
            let lines = text.lines().take_while(|line| !line.trim_start().starts_with("#[cfg(test)]")).count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines before their tests:\n{}", long.join("\n"));
}

#[test]
fn the_checks_see_an_upward_import() {
    // The parser itself: a lower layer naming a higher one is found.
    let text = "use crate::http::ApiState;\n// crate::engine in a comment\nfn f() { crate::stats::sites(); }\n";
    assert_eq!(imported_modules(text), ["http", "stats"]);
    assert!(layer("http") >= layer("storage"));
}
