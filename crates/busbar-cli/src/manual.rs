//! `busbar completions SHELL` and `busbar man`: made from the command line's own
//! definitions, so they never disagree with `--help`.

use clap::CommandFactory;

/// Options of `busbar completions`.
#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. For example
    /// `busbar completions bash > /etc/bash_completion.d/busbar`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Writes the completion script for a shell to standard output.
pub fn completions(args: CompletionArgs) -> anyhow::Result<()> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "busbar", &mut std::io::stdout());
    Ok(())
}

/// Writes the man page (roff) to standard output: `busbar man > busbar.1`.
pub fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(crate::Cli::command()).render(&mut std::io::stdout())?;
    Ok(())
}
