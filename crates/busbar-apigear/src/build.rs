//! For build scripts: generate the Rust of a set of modules into `OUT_DIR`.
//!
//! In `build.rs`'s `main`:
//!
//! ```no_run
//! busbar_apigear::build::compile(&["api/counter.module.yaml", "api/custom_types.module.yaml"])
//!     .unwrap_or_else(|e| panic!("{e}"));
//! ```
//!
//! and in the crate: `include!(concat!(env!("OUT_DIR"), "/apigear.rs"));`.

use std::path::{Path, PathBuf};

/// What can go wrong generating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The modules have problems.
    #[error("ObjectAPI modules:\n{0}")]
    Modules(#[from] crate::module::ModuleErrors),
    /// `OUT_DIR` is not set: not in a build script.
    #[error("OUT_DIR is not set: call this from a build script, or use `generate_to`")]
    NoOutDir,
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Generates `$OUT_DIR/apigear.rs` from the module files, and tells cargo to run the build
/// script again when one of them changes.
pub fn compile<P: AsRef<Path>>(modules: &[P]) -> Result<PathBuf, BuildError> {
    let dir = std::env::var_os("OUT_DIR").ok_or(BuildError::NoOutDir)?;
    for m in modules {
        println!("cargo:rerun-if-changed={}", m.as_ref().display());
    }
    let path = PathBuf::from(dir).join("apigear.rs");
    generate_to(modules, &path)?;
    Ok(path)
}

/// Generates the Rust of the module files into `output`.
pub fn generate_to<P: AsRef<Path>>(modules: &[P], output: &Path) -> Result<(), BuildError> {
    let set = crate::module::ModuleSet::load(modules)?;
    let text = crate::codegen::generate(&set).map_err(crate::module::ModuleErrors::located)?;
    std::fs::write(output, text)
        .map_err(|source| BuildError::Write { path: output.to_path_buf(), source })
}
