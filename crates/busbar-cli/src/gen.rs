//! `busbar gen`: Rust from ApiGear ObjectAPI modules.

use std::path::PathBuf;

use anyhow::Context;

/// Options of `busbar gen`.
#[derive(clap::Args)]
pub struct Args {
    /// The module files (`*.module.yaml`), all that import one another.
    #[arg(required = true, value_name = "MODULE")]
    modules: Vec<PathBuf>,
    /// Write the Rust here (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only check the modules; print every interface's topics.
    #[arg(long)]
    topics: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let set = busbar_apigear::module::ModuleSet::load(&args.modules)
        .map_err(|e| anyhow::anyhow!("{} problem(s) in the modules:\n{e}", e.0.len()))?;
    if args.topics {
        for topic in set.topics() {
            println!("{topic}");
        }
        return Ok(());
    }
    let rust = busbar_apigear::codegen::generate(&set).map_err(|e| {
        let e = e.located();
        anyhow::anyhow!("{} problem(s) in the modules:\n{e}", e.0.len())
    })?;
    match &args.output {
        Some(path) => std::fs::write(path, rust)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{rust}"),
    }
    Ok(())
}
