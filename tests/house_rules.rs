//! Rules of the house that the compiler and clippy do not check, checked on the sources.

use std::path::{Path, PathBuf};

/// Every `.rs` file under the crate's `src/`, `tests/` and `examples/`.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for d in ["src", "tests", "examples"] {
        walk(&root.join(d), &mut out);
    }
    assert!(out.len() > 50, "found only {} sources", out.len());
    out
}

/// Lines of the sources that contain `needle`, as `path:line: text`, outside `except`.
fn lines_with(needle: &str, except: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hits = Vec::new();
    for p in sources() {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if except.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, l) in text.lines().enumerate() {
            if l.contains(needle) {
                hits.push(format!("{rel}:{}: {}", i + 1, l.trim()));
            }
        }
    }
    hits
}

/// A test that cannot run here says why through `skip!`, which also records it in the list
/// scripts/test.sh prints; a bare "SKIP" message is lost among passing tests' output.
#[test]
fn every_skip_goes_through_the_skip_macro() {
    let bare: Vec<String> = ["eprintln!(\"SKIP", "println!(\"SKIP"]
        .iter()
        .flat_map(|n| lines_with(n, &["tests/common/skip.rs", "tests/house_rules.rs"]))
        .collect();
    assert!(
        bare.is_empty(),
        "skips that are not recorded:\n{}",
        bare.join("\n")
    );
}
