use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (all layers applied) with secrets hidden.
    Print,
}

pub(super) fn run(config: &Config, cmd: &ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Print => print!("{}", config.to_redacted_toml()),
    }
    Ok(())
}
