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
    /// Override a configuration value for this run: `--config-set ssh.user=deploy`
    /// (after `VESEMIR_<SECTION>_<KEY>` environment overrides).
    #[arg(long = "config-set", global = true, value_name = "KEY=VALUE")]
    pub config_sets: Vec<String>,
    /// With --server over HTTPS: PEM certificates of the CA(s) that signed the server's
    /// certificate (a private CA), trusted besides the system's roots.
    #[arg(long = "ca-file", global = true, env = "VESEMIR_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
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
    /// Put back servers that local runs left out: a deploy killed mid-rollout (`kill -9`, a
    /// crash) or one that ended with hosts out of rotation. Every local deploy journals each load
    /// balancer change, with the server's original state, before making it. `--list` shows what
    /// the journals left unfinished; without it each server passes its health gate (the
    /// request's health command, then UP on every load balancer at weight 0) and goes back to
    /// its original weight and state, or is left out with the reason (exit 1).
    #[command(after_help = EXIT_CODES_HELP)]
    Recover(crate::recover::RecoverArgs),
    /// Break host locks left by a deployment that died (killed, crashed, its machine lost):
    /// shows who held each lock, then removes it. The hosts are the deployment file's.
    /// Only for a deployment that is really gone: a live one keeps running unlocked.
    #[command(after_help = EXIT_CODES_HELP)]
    Unlock {
        /// The hosts to unlock, by name.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// The deployment file whose hosts these are.
        #[command(flatten)]
        file: HostsArgs,
    },
    /// Show who holds the lock of each host of a deployment file. Changes nothing.
    #[command(after_help = EXIT_CODES_HELP)]
    Locks {
        /// The deployment file whose hosts to look at.
        #[command(flatten)]
        file: HostsArgs,
    },
    /// The deployments of an application in an environment, newest first, each host's result,
    /// and the version each host last succeeded with: local runs (this machine's state
    /// directory), or with --server the server's.
    #[command(after_help = crate::exit::FOLLOW_UP_EXIT_CODES_HELP)]
    History(crate::history::HistoryArgs),
    /// Run a deployment again over only the hosts it did not finish (failed, unreachable,
    /// skipped, cancelled), with the same request (`--concurrency`, `--set` to change it). Its
    /// servers left out of rotation are taken as they are and, once deployed, go back to the
    /// state the deployment found them in. ID is a local run id, or with --server a deployment's.
    #[command(after_help = crate::exit::FOLLOW_UP_EXIT_CODES_HELP)]
    Retry(crate::followup::RetryArgs),
    /// Put back servers a deployment left out of rotation: each passes its health gate (the
    /// request's health command, then UP on every load balancer at weight 0) and goes back to
    /// its original weight and state; one that fails stays out and the reason is shown.
    #[command(after_help = crate::exit::FOLLOW_UP_EXIT_CODES_HELP)]
    Restore(crate::followup::RestoreArgs),
    /// Deploy the previous version: the newest one before the current one that succeeded on
    /// every host (from the history), or --to VERSION; the same safety as a deploy.
    #[command(after_help = crate::exit::FOLLOW_UP_EXIT_CODES_HELP)]
    Rollback(crate::followup::RollbackArgs),
    /// Show a deployment's status on the server (`--server`).
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// The deployment's id.
        id: i64,
        /// `text` or `json` (the deployment as the API shows it).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a deployment's events on the server; `--follow` until it ends.
    Logs {
        /// The deployment's id.
        id: i64,
        /// Keep following until the deployment ends.
        #[arg(long)]
        follow: bool,
        /// `text` or `json`.
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List deployments on the server, newest first.
    List {
        /// Only this application.
        #[arg(long = "app")]
        application: Option<String>,
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
        /// Only this team.
        #[arg(long)]
        team: Option<String>,
        /// Only this status (queued, running, succeeded, completed_with_failures, stopped,
        /// cancelled, failed, interrupted).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// `text` or `json` (the list as the API shows it).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a deployment: hosts in flight finish, no new host starts. RUN-ID is a local
    /// deploy's run id (printed when it starts), or with --server a deployment's id there.
    Cancel(ControlArgs),
    /// Pause a deployment from another terminal: no new host starts until `resume`; hosts in
    /// flight finish. RUN-ID as for `cancel`.
    Pause(ControlArgs),
    /// Resume a paused deployment: hosts start again. RUN-ID as for `cancel`.
    Resume(ControlArgs),
    /// Confirm a canary that waits for confirmation (`canary = { confirm = true }`): the rest of
    /// the hosts start. RUN-ID as for `cancel`.
    Confirm(ControlArgs),
    /// Confirm or decline a promotion that waits for a person (a unit with `promote_confirm =
    /// true`): its version, successful on every host, goes to the next unit only once confirmed.
    #[command(after_help = crate::exit::FOLLOW_UP_EXIT_CODES_HELP)]
    Promote {
        /// What to do with it.
        #[command(subcommand)]
        command: PromoteCommand,
    },
    /// Virtual machines on the server (`--server`, token from `VESEMIR_TOKEN`): a new VM for a
    /// directory user in one command (an address, DNS records, a disk and domain on a
    /// hypervisor, SSH with its host key recorded, Chef registration and first bootstrap), the
    /// list, one VM, cancel, destroy.
    #[command(after_help = crate::exit::VM_EXIT_CODES_HELP)]
    Vm {
        /// What to do.
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Run the HTTP server: deployments go through the adapters of --config.
    Serve {
        /// The server's own configuration: listen address, database, tokens, playbooks, limits.
        #[arg(long, env = "VESEMIR_SERVER_CONFIG", default_value = "vesemir-server.toml")]
        server_config: PathBuf,
    },
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
    /// Write the manual pages, vesemir(1) and one per subcommand (vesemir-deploy(1)...), into a
    /// directory: for packagers.
    #[command(hide = true)]
    Manpages {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// `vesemir vm ...` (issue 19): VMs built by the server's `[provision]` configuration.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Ask for a new VM for OWNER (a user of the directory) and follow it step by step until it
    /// is ready: its DNS name, address, how to log in and the host key line for known_hosts
    /// are printed at the end. A step that fails undoes the steps done and names the step and
    /// why. With `-o json` the progress goes to stderr and stdout gets the VM as the API shows
    /// it.
    #[command(after_help = crate::exit::VM_EXIT_CODES_HELP)]
    Create(VmCreateArgs),
    /// List the VMs on the server, newest first.
    #[command(after_help = crate::exit::VM_EXIT_CODES_HELP)]
    List {
        /// Only this directory user's VMs.
        #[arg(long)]
        owner: Option<String>,
        /// Only VMs in this status (creating, ready, failed, cancelled, destroying, destroyed,
        /// interrupted).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `text` or `json` (the list as the API shows it).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one VM: its status, DNS name, address, hypervisor, host key, how to log in, and
    /// why it failed or what is left behind.
    #[command(after_help = crate::exit::VM_EXIT_CODES_HELP)]
    Show {
        /// The VM's name.
        name: String,
        /// `text` or `json` (the VM as the API shows it).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a VM being created: the step in flight ends, then every step done is undone
    /// (followed until it has).
    #[command(after_help = crate::exit::VM_EXIT_CODES_HELP)]
    Cancel {
        /// The VM's name.
        name: String,
        /// `text` or `json` (the VM as the API shows it at the end).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Take a VM down: its domain and disk, its DNS records, its Chef node and client, and its
    /// address reservation, followed until every part is gone. On a terminal it asks first;
    /// elsewhere it needs --yes.
    #[command(after_help = crate::exit::VM_EXIT_CODES_HELP)]
    Destroy {
        /// The VM's name.
        name: String,
        /// Destroy without asking (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// `text` or `json` (the VM as the API shows it at the end).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: OutputFormat,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// The arguments of `vesemir vm create`.
#[derive(Debug, clap::Args)]
pub struct VmCreateArgs {
    /// The directory user the VM is for: who logs in to it. Must exist in the directory.
    #[arg(long)]
    pub owner: String,
    /// A flavor of the server's configuration your team may create (cores, memory, disk).
    #[arg(long)]
    pub flavor: String,
    /// The VM's name (a DNS label: lowercase letters, digits, '-'); the default is the owner's
    /// name and the lowest free number (`alice-1`).
    #[arg(long)]
    pub name: Option<String>,
    /// Do not follow: print the VM as accepted (`creating`) and exit 0; `vesemir vm show NAME`
    /// tells how it went.
    #[arg(long)]
    pub detach: bool,
    /// `text` (steps as they happen) or `json` (the VM as the API shows it; progress on stderr).
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `vesemir promote ...` (issue 18: promotion by confirmation).
#[derive(Debug, Subcommand)]
pub enum PromoteCommand {
    /// Confirm deployment ID's waiting promotion: the next unit's deployment starts at once,
    /// asked by you, and is followed to its end. When the next unit is busy or refuses the
    /// version, nothing starts and the promotion keeps waiting.
    Confirm(PromoteArgs),
    /// Decline deployment ID's waiting promotion: the chain stops there.
    Decline(PromoteArgs),
}

/// Which deployment's promotion, on which server.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The deployment whose success waits to be promoted (`vesemir status` shows it).
    #[arg(value_name = "ID")]
    pub id: i64,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `vesemir config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and report every problem at once, with file, key and reason;
    /// with `--server-config`, the server's configuration too (tokens, playbooks, the catalog
    /// of units, limits).
    Check {
        /// The server's configuration file to check as well (what `vesemir serve` reads).
        #[arg(long)]
        server_config: Option<PathBuf>,
    },
}

/// Where the server is. The token comes from `VESEMIR_TOKEN`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The Vesemir server, e.g. `https://vesemir.example.com`.
    #[arg(long, env = "VESEMIR_SERVER")]
    pub server: String,
}

/// Which deployment `cancel`, `pause`, `resume` and `confirm` act on.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// A local deploy's run id (as it printed when it started: `vesemir: run RUN-ID ...`), or
    /// with --server the deployment's id on the server.
    #[arg(value_name = "RUN-ID")]
    pub id: String,
    /// Act on this Vesemir server's deployment instead of a local deploy (token from
    /// `VESEMIR_TOKEN`).
    #[arg(long, env = "VESEMIR_SERVER")]
    pub server: Option<String>,
}

/// The hosts of a deployment file (`unlock`, `locks`).
#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    /// The deployment file (TOML).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Override a field of the deployment file, as for `deploy`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
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
    /// Submit to this Vesemir server and follow, instead of deploying from here (token from
    /// `VESEMIR_TOKEN`). Not for `plan`.
    #[arg(long, env = "VESEMIR_SERVER")]
    pub server: Option<String>,
    /// With --server: the same key returns the same deployment (safe retries from CI).
    #[arg(long, requires = "server")]
    pub idempotency_key: Option<String>,
    /// When hosts are locked by another deployment, wait this long for them (`10m`) instead of
    /// refusing at once. Default: `[locks] wait` of the configuration, else zero. Not with
    /// --server (the server's configuration decides).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// For a canary with `confirm = true` run without a terminal (CI, nohup): wait for
    /// `vesemir confirm RUN-ID` from another shell instead of refusing to start. On a terminal
    /// the deploy asks instead ("continue with N hosts? [y/N]"), and `vesemir confirm` works
    /// too. Not with --server (confirm there with `vesemir confirm --server URL ID`).
    #[arg(long)]
    pub confirm_from_socket: bool,
}
