use clap::Subcommand;

use super::CliError;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (all layers applied) with secrets hidden.
    Print,
}

pub(super) fn run(config: &Config, cmd: &ConfigCommand) -> Result<(), CliError> {
    match cmd {
        ConfigCommand::Print => print!("{}", config.to_redacted_toml()),
    }
    Ok(())
}
