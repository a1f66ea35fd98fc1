//! The generated Rust and the topic list of the test modules, pinned: a change to the
//! generator shows here as a diff to review. `BUSBAR_BLESS=1` writes the new versions.

use std::path::{Path, PathBuf};

use busbar_apigear::module::ModuleSet;

fn fixtures() -> ModuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    ModuleSet::load(&files).unwrap_or_else(|e| panic!("{e}"))
}

fn compare(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("BUSBAR_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from what the generator makes now, first at line {}:\n  golden: {:?}\n  now:    {:?}\n\
             Review the change; BUSBAR_BLESS=1 cargo test -p busbar-apigear --test golden accepts it.",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn the_generated_rust_is_pinned() {
    let rust = busbar_apigear::codegen::generate(&fixtures()).unwrap_or_else(|e| panic!("{e}"));
    compare("apigear.rs", &rust);
}

#[test]
fn the_topics_are_pinned() {
    let topics = fixtures().topics();
    // Two from ApiGear's own generated code, as a check on the list itself.
    assert!(topics.iter().any(|t| t == "counter/Counter/prop/extern_vectorArray"));
    assert!(topics.iter().any(|t| t == "counter/Counter/rpc/decrementArray"));
    // A read-only property has no set topic.
    assert!(!topics.iter().any(|t| t == "tb.simple/SimpleArrayInterface/set/propReadOnlyString"));
    compare("topics.txt", &(topics.join("\n") + "\n"));
}

/// The generated file is what rustfmt makes of it (when rustfmt is there to ask).
#[test]
fn the_generated_rust_is_formatted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/apigear.rs");
    let Ok(out) = std::process::Command::new("rustfmt")
        .args(["--edition", "2024", "--check"])
        .arg(&path)
        .output()
    else {
        eprintln!("SKIPPED: no rustfmt to check the formatting with");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
