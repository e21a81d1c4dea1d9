//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;
use crate::output::OutputFormat;

/// Rolling deployments to virtual machines behind HAProxy, without dropping a request.
#[derive(Debug, Parser)]
#[command(name = "vesemir", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The configuration file (Chef, SSH, HAProxy, playbooks).
    #[arg(long, short = 'c', global = true, env = "VESEMIR_CONFIG", default_value = "vesemir.toml")]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a deployment here, with live progress. Ctrl-C cancels gracefully (hosts in flight
    /// finish, no new host starts); a second Ctrl-C stops at once and names the hosts that may
    /// be out of rotation.
    #[command(after_help = EXIT_CODES_HELP)]
    Deploy(DeployArgs),
    /// Resolve hosts and load balancer servers, check SSH reachability and host keys, print the
    /// batches. Changes nothing.
    #[command(after_help = EXIT_CODES_HELP)]
    Plan(DeployArgs),
    /// Check the configuration file.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `vesemir config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and report every problem at once, with file, key and reason.
    Check,
}

/// The arguments of `deploy` and `plan`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The deployment file (TOML).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Override a field of the deployment file: `--set version=1.2.3`,
    /// `--set variables.channel=beta`, `--set strategy.max_failures=2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Override strategy.concurrency: a count or a percentage (`25%`).
    #[arg(long)]
    pub concurrency: Option<String>,
    /// `text` (live progress on a terminal, lines otherwise) or `json` (JSON lines).
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
}
