//! The `vesemir` command: rolling deployments from a terminal or a CI pipeline.

mod cli;
mod client;
mod compose;
mod config;
mod control_socket;
mod deploy;
mod exit;
mod followup;
mod history;
mod inventory_file;
mod journal_file;
mod locks;
mod manpages;
mod output;
mod overrides;
mod provision_config;
mod recover;
mod request;
mod vm;

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
    client::trust_ca_file(cli.ca_file.clone());
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "vesemir", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Command::Manpages { dir } => {
            let written = manpages::write_all(dir).map_err(Failure::input)?;
            println!("wrote {} manual pages into {}", written.len(), dir.display());
            Ok(Exit::Success)
        }
        Command::Config { command: ConfigCommand::Check { server_config } } => {
            config_check(&cli, server_config.as_deref())
        }
        Command::Deploy(args) => match &args.server {
            Some(_) if args.lock_wait.is_some() => Err(Failure::input(
                "--lock-wait is for deploys from here: with --server, the server's [locks] wait decides",
            )),
            Some(_) if args.confirm_from_socket => Err(Failure::input(
                "--confirm-from-socket is for deploys from here: with --server, confirm with `vesemir confirm --server URL ID`",
            )),
            Some(server) => deploy::deploy_remote(args, server).await,
            None => {
                let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
                deploy::deploy(args, &config).await
            }
        },
        Command::Plan(args) => {
            if args.server.is_some() {
                return Err(Failure::input(
                    "plan runs here, not on a server: drop --server (and VESEMIR_SERVER)",
                ));
            }
            let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
            deploy::plan(args, &config).await
        }
        Command::Unlock { hosts, file } => {
            let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
            locks::unlock(file, hosts, &config).await
        }
        Command::Locks { file } => {
            let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
            locks::list(file, &config).await
        }
        Command::Status { id, output, server } => {
            let deployment = client::Client::new(&server.server)?.get(*id).await?;
            if *output == output::OutputFormat::Json {
                println!("{}", serde_json::json!({ "deployment": deployment }));
            } else {
                println!("{}", client::describe(&deployment).trim_end());
            }
            Ok(client::exit_for(deployment.status))
        }
        Command::History(args) => history::history(args).await,
        Command::Retry(args) => match &args.server {
            Some(server) => client::retry_remote(args, server).await,
            None => {
                let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
                followup::retry(args, &config).await
            }
        },
        Command::Restore(args) => match &args.server {
            Some(server) => client::restore_remote(args, server).await,
            None => {
                let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
                followup::restore(args, &config).await
            }
        },
        Command::Rollback(args) => match &args.server {
            Some(server) => client::rollback_remote(args, server).await,
            None => {
                let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
                followup::rollback(args, &config).await
            }
        },
        Command::Logs { id, follow, output, server } => {
            let client = client::Client::new(&server.server)?;
            client.events(*id, &*output::sink(*output), *follow).await?;
            Ok(Exit::Success)
        }
        Command::List { application, environment, team, status, limit, output, server } => {
            let filter = client::ListFilter {
                application: application.clone(),
                environment: environment.clone(),
                team: team.clone(),
                status: status.clone(),
                limit: Some(*limit),
            };
            let list = client::Client::new(&server.server)?.list(&filter).await?;
            if *output == output::OutputFormat::Json {
                println!("{}", serde_json::to_string(&list).map_err(|e| Failure::input(e.to_string()))?);
            } else {
                print_list(&list);
            }
            Ok(Exit::Success)
        }
        Command::Cancel(args) => control(args, control_socket::Order::Cancel).await,
        Command::Pause(args) => control(args, control_socket::Order::Pause).await,
        Command::Resume(args) => control(args, control_socket::Order::Resume).await,
        Command::Confirm(args) => control(args, control_socket::Order::Confirm).await,
        Command::Promote { command } => client::promote(command).await,
        Command::Vm { command } => vm::run(command).await,
        Command::Serve { server_config } => serve(&cli, server_config).await,
        Command::Recover(args @ recover::RecoverArgs { server: Some(server), .. }) => {
            recover::recover_remote(args, server).await
        }
        Command::Recover(args) => {
            let state = journal_file::StateDir::locate().map_err(Failure::input)?;
            recover::recover(args, &state, || {
                let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
                Ok(recover::ports(&config))
            })
            .await
        }
    }
}

/// `vesemir cancel|pause|resume|confirm`: through the server's API with --server, else through
/// the control socket of the local deploy with that run id.
async fn control(args: &cli::ControlArgs, order: control_socket::Order) -> Result<Exit, Failure> {
    let word = order.word();
    if let Some(server) = &args.server {
        let id: i64 = args.id.parse().map_err(|_| {
            Failure::input(format!(
                "{:?} is not a deployment id of the server {server}: a local deploy's run id needs no --server (unset VESEMIR_SERVER)",
                args.id
            ))
        })?;
        client::Client::new(server)?.order(id, word).await?;
        let done = match order {
            control_socket::Order::Cancel => "cancel requested (hosts in flight finish, no new host starts)",
            control_socket::Order::Pause => {
                "pause requested (hosts in flight finish, no new host starts until resumed)"
            }
            control_socket::Order::Resume => "resumed (hosts start again)",
            control_socket::Order::Confirm => "canary confirmed (the rest of the hosts start)",
        };
        println!("deployment {id}: {done}");
        return Ok(Exit::Success);
    }
    let run = vesemir_core::journal::RunId::new(args.id.clone())
        .map_err(|e| Failure::input(format!("{:?} is not a run id: {e}", args.id)))?;
    let state = journal_file::StateDir::locate().map_err(Failure::input)?;
    control_socket::send(&state.socket_of(&run), run.as_str(), order).await
}

/// `vesemir config check`: every problem of the configuration, or a one-line summary.
fn config_check(cli: &Cli, server_config: Option<&std::path::Path>) -> Result<Exit, Failure> {
    if let Some(path) = server_config {
        let server = read_server_config(path)?;
        let validated = server.validate().map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
        println!(
            "{}: ok ({} units, {} tokens, {} playbooks)",
            path.display(),
            validated.catalog.len(),
            server.tokens.len(),
            validated.playbooks.len()
        );
    }
    let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
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
    if let Some(provision) = &config.provision {
        println!("{}", provision.summary());
    }
    Ok(Exit::Success)
}

/// `vesemir list`: one line per deployment.
fn print_list(list: &vesemir_http::wire::DeploymentList) {
    if list.deployments.is_empty() {
        println!("no deployments");
    }
    for d in &list.deployments {
        let status = serde_json::to_value(d.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:>6}  {:24}  {:12} {:12} {:16} {:22} {}",
            d.id, d.timings.created_at, d.application, d.environment, d.version, status, d.requested_by
        );
    }
}

/// `vesemir serve`: the HTTP server over the adapters of this configuration.
async fn serve(cli: &Cli, server_config: &std::path::Path) -> Result<Exit, Failure> {
    let config = Config::load(&cli.config, &cli.config_sets).map_err(Failure::input)?;
    let server = read_server_config(server_config)?;
    let factory = std::sync::Arc::new(compose::ConfiguredPorts::new(config)?);
    // Run on SIGHUP besides the TLS certificate's and the adapters' reloads: add each with
    // `.with(...)`.
    let reloads = vesemir_http::Reloads::default();
    vesemir_http::serve_with(server, factory, reloads)
        .await
        .map_err(|e| Failure::unreachable(e.to_string()))?;
    Ok(Exit::Success)
}

/// Reads and validates the server's configuration: every problem at once, by field path.
fn read_server_config(path: &std::path::Path) -> Result<vesemir_http::ServerConfig, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::input(format!("{}: cannot read the server configuration: {e}", path.display()))
    })?;
    vesemir_http::ServerConfig::from_toml(&text)
        .map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}
