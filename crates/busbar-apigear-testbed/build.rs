//! Generates the test modules' Rust, as any user's build script would.

fn main() {
    let dir = std::path::Path::new("../busbar-apigear/tests/modules");
    let mut modules: Vec<_> = std::fs::read_dir(dir)
        .expect("the test modules")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    modules.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    if let Err(e) = busbar_apigear::build::compile(&modules) {
        panic!("{e}");
    }
}
