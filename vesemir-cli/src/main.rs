//! The `vesemir` command: rolling deployments from a terminal or a CI pipeline.

mod cli;
mod compose;
mod config;
mod deploy;
mod exit;
mod output;
mod request;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::Config;
use crate::exit::{Exit, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vesemir: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::BadInput as u8);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("vesemir: {failure}");
            failure.exit.into()
        }
    }
}

async fn run(cli: Cli) -> Result<Exit, Failure> {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "vesemir", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Command::Config { command: ConfigCommand::Check } => {
            let config = Config::load(&cli.config).map_err(Failure::input)?;
            println!(
                "{}: ok ({} playbooks; inventory: {}; ssh user {})",
                config.path.display(),
                config.playbooks.len(),
                if config.chef.is_some() {
                    "chef"
                } else if config.inventory_file.is_some() {
                    "static file"
                } else {
                    "hosts listed in requests"
                },
                config.ssh.user
            );
            Ok(Exit::Success)
        }
        Command::Deploy(args) => {
            let config = Config::load(&cli.config).map_err(Failure::input)?;
            deploy::deploy(args, &config).await
        }
        Command::Plan(args) => {
            let config = Config::load(&cli.config).map_err(Failure::input)?;
            deploy::plan(args, &config).await
        }
    }
}
