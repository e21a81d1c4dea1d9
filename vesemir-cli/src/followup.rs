//! After something went wrong, locally: `vesemir retry RUN` (the hosts a run did not finish),
//! `vesemir restore HOST…` (servers a run left out, health gate first), `vesemir rollback APP ENV`
//! (the previous version, from the history), and the automatic rollback of
//! `strategy.on_failure = "rollback"`.
//!
//! A follow-up of a run that left servers out takes them as they are
//! (`servers_not_in_rotation = "include"`: the budget counts them, the rollout returns each to
//! the state it found); once such a host succeeded, its server goes back to the state the earlier
//! run found it in, through the same health gate as `vesemir recover` ([`resume_servers`]).

use std::collections::BTreeSet;

use serde::Serialize;
use vesemir_core::history::{rollback_target, HistoryRecord};
use vesemir_core::journal::{replay, JournalEntry, JournalWriter, Recovered, RecoveryOutcome, RunId};
use vesemir_core::name::{HostName, Version};

use crate::config::Config;
use crate::deploy::{run_job, Job, Ran, RunJournal, RunOptions};
use crate::exit::{Exit, Failure};
use crate::history::{Links, LocalRun};
use crate::journal_file::StateDir;
use crate::output::OutputFormat;
use crate::recover::{print_recovery, recover_run, RunRecovery};

/// `vesemir retry`.
#[derive(Debug, Clone, clap::Args)]
pub struct RetryArgs {
    /// The run to retry: a local run id (`vesemir history` lists them), or with --server the
    /// deployment's id there.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Override strategy.concurrency: a count or a percentage (`25%`).
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Override a field of the request, as for `deploy` (`--set variables.channel=beta`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// When hosts are locked by another deployment, wait this long for them.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// Retry a deployment of this Vesemir server (token from `VESEMIR_TOKEN`).
    #[arg(long, env = "VESEMIR_SERVER")]
    pub server: Option<String>,
}

/// `vesemir rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The application.
    pub application: String,
    /// The environment.
    pub environment: String,
    /// The version to go back to (default: the newest one, before the current one, that
    /// succeeded on every host).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// When hosts are locked by another deployment, wait this long for them.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// Roll back on this Vesemir server (token from `VESEMIR_TOKEN`).
    #[arg(long, env = "VESEMIR_SERVER")]
    pub server: Option<String>,
}

/// `vesemir restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The hosts to put back (default with --deployment: every server it left out).
    #[arg(value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The run (or with --server, the deployment) that left them out.
    #[arg(long, value_name = "ID", required_unless_present = "hosts")]
    pub deployment: Option<String>,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Restore on this Vesemir server (token from `VESEMIR_TOKEN`); needs --deployment.
    #[arg(long, env = "VESEMIR_SERVER", requires = "deployment")]
    pub server: Option<String>,
}

fn options(output: OutputFormat, lock_wait: Option<std::time::Duration>) -> RunOptions {
    RunOptions { output, lock_wait, confirm_from_socket: true }
}

/// The hosts whose servers run `run`'s journal left out of rotation.
fn left_out_by(state: &StateDir, run: &str) -> BTreeSet<HostName> {
    let Ok(id) = RunId::new(run.to_owned()) else { return BTreeSet::new() };
    match crate::journal_file::read(&state.path_of(&id), id) {
        Ok(journal) => replay(journal.entries).servers.into_iter().map(|s| s.host).collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// A follow-up of local run `parent`, to run: its recorded request with `edits`, `--set` and
/// `--concurrency`, over `candidates` (all the request finds when `None`; `fleet` names them).
struct FollowUp<'a> {
    recorded: &'a serde_json::Value,
    edits: Vec<String>,
    sets: &'a [String],
    concurrency: Option<&'a str>,
    candidates: Option<BTreeSet<HostName>>,
    fleet: BTreeSet<HostName>,
    parent: &'a str,
    links: Links,
    source: String,
}

/// Runs a follow-up. When its parent left servers out, it runs in two deployments: first those
/// hosts (taken as they are, with `servers_not_in_rotation = "include"`, then put back to the
/// state the parent found them in, health gate first), so that they count against no budget;
/// then, once that succeeded, the others.
async fn run_follow_up(
    follow_up: FollowUp<'_>,
    options: RunOptions,
    config: &Config,
    state: &StateDir,
) -> Result<Ran, Failure> {
    let left = left_out_by(state, follow_up.parent);
    let job = |only: Option<BTreeSet<HostName>>, resume: bool| -> Result<Job, Failure> {
        let mut edits = follow_up.edits.clone();
        if resume {
            edits.push("load_balancer.servers_not_in_rotation=include".to_owned());
        }
        let (spec, request) = crate::request::from_recorded(
            follow_up.recorded,
            &edits,
            follow_up.sets,
            follow_up.concurrency,
            &config.playbooks,
        )?;
        let resume = if resume {
            Some(RunId::new(follow_up.parent.to_owned()).map_err(Failure::input)?)
        } else {
            None
        };
        Ok(Job {
            request,
            spec,
            source: follow_up.source.clone(),
            only_hosts: only,
            links: follow_up.links.clone(),
            resume,
        })
    };
    let candidates = follow_up.candidates.clone().unwrap_or_else(|| follow_up.fleet.clone());
    let (first, rest): (BTreeSet<HostName>, BTreeSet<HostName>) =
        candidates.into_iter().partition(|h| left.contains(h));
    if first.is_empty() {
        return run_job(job(follow_up.candidates.clone(), false)?, options, config, state).await;
    }
    let names =
        |hosts: &BTreeSet<HostName>| hosts.iter().map(HostName::as_str).collect::<Vec<_>>().join(", ");
    eprintln!(
        "vesemir: first the host(s) run {} left out of rotation ({}){}",
        follow_up.parent,
        names(&first),
        if rest.is_empty() { String::new() } else { format!(", then the others ({})", names(&rest)) }
    );
    let ran = run_job(job(Some(first), true)?, options, config, state).await?;
    if rest.is_empty() {
        return Ok(ran);
    }
    if ran.exit != Exit::Success {
        eprintln!(
            "vesemir: the other host(s) ({}) were not started: fix the failure, then `vesemir retry {}`",
            names(&rest),
            ran.record.id
        );
        return Ok(ran);
    }
    run_job(job(Some(rest), false)?, options, config, state).await
}

/// Runs `vesemir retry RUN` here.
pub async fn retry(args: &RetryArgs, config: &Config) -> Result<Exit, Failure> {
    let state = StateDir::locate().map_err(Failure::input)?;
    let parent = state.run(&args.id).map_err(Failure::input)?;
    if !parent.record.outcome.is_finished() {
        return Err(Failure::input(format!(
            "run {} is still running: wait for it, or cancel it with `vesemir cancel {}`",
            args.id, args.id
        )));
    }
    let hosts = parent.record.to_retry();
    if hosts.is_empty() {
        say(args.output, &format!("run {}: every host succeeded, nothing to retry", args.id));
        return Ok(Exit::Success);
    }
    let names: Vec<&str> = hosts.iter().map(HostName::as_str).collect();
    eprintln!("vesemir: retrying run {} on {} host(s): {}", args.id, hosts.len(), names.join(", "));
    let follow_up = FollowUp {
        recorded: &parent.request,
        edits: Vec::new(),
        sets: &args.sets,
        concurrency: args.concurrency.as_deref(),
        candidates: Some(hosts),
        fleet: BTreeSet::new(),
        parent: &args.id,
        links: Links { retry_of: Some(args.id.clone()), rollback_of: None },
        source: format!("retry of {}", args.id),
    };
    let ran = run_follow_up(follow_up, options(args.output, args.lock_wait), config, &state).await?;
    Ok(ran.exit)
}

/// Runs `vesemir rollback APP ENV` here.
pub async fn rollback(args: &RollbackArgs, config: &Config) -> Result<Exit, Failure> {
    let state = StateDir::locate().map_err(Failure::input)?;
    let to = match &args.to {
        Some(v) => Some(Version::new(v).map_err(|e| Failure::input(format!("--to: {e}")))?),
        None => None,
    };
    let runs = state.history(&args.application, &args.environment).map_err(Failure::input)?;
    let ran =
        rollback_of(&runs, to.as_ref(), None, options(args.output, args.lock_wait), config, &state).await?;
    Ok(ran.exit)
}

/// A rollback over `runs` (newest first) to `to` (or the history's choice), of `only` hosts
/// (all when `None`).
async fn rollback_of(
    runs: &[LocalRun],
    to: Option<&Version>,
    only: Option<BTreeSet<HostName>>,
    options: RunOptions,
    config: &Config,
    state: &StateDir,
) -> Result<Ran, Failure> {
    let records: Vec<HistoryRecord> = runs.iter().map(|r| r.record.clone()).collect();
    let target =
        rollback_target(&records, to).map_err(|e| Failure::input(format!("nothing was changed: {e}")))?;
    let source = runs
        .iter()
        .find(|r| r.record.id == target.source)
        .ok_or_else(|| Failure::input(format!("run {} is no longer in the history", target.source)))?;
    let current = &records[0];
    eprintln!(
        "vesemir: rolling back {} in {} from {} (run {}) to {} (as run {} deployed it)",
        current.application, current.environment, current.version, current.id, target.version, target.source
    );
    let follow_up = FollowUp {
        recorded: &source.request,
        edits: vec![format!("version={}", target.version)],
        sets: &[],
        concurrency: None,
        candidates: only,
        fleet: current.hosts.iter().map(|h| h.host.clone()).collect(),
        parent: &target.rollback_of,
        links: Links { retry_of: None, rollback_of: Some(target.rollback_of.clone()) },
        source: format!("rollback of {}", target.rollback_of),
    };
    run_follow_up(follow_up, options, config, state).await
}

/// `strategy.on_failure = "rollback"`: `failed` stopped on its failures, so the hosts it changed
/// go back to the previous version. Without a previous version (or hosts to take back), says so
/// and leaves the failure as it is. The exit code stays the failed deployment's.
pub async fn rollback_after_failure(
    failed: &Ran,
    options: RunOptions,
    config: &Config,
    state: &StateDir,
) -> Result<Exit, Failure> {
    let record = &failed.record;
    let touched = record.touched();
    let runs =
        state.history(record.application.as_str(), record.environment.as_str()).map_err(Failure::input)?;
    let refused = |reason: String| {
        if options.output == OutputFormat::Json {
            println!("{}", serde_json::json!({ "on_failure": { "rollback": "not_run", "reason": reason } }));
        }
        eprintln!("vesemir: on_failure = \"rollback\": no rollback: {reason}; the failure is left as it is.");
        Ok(Exit::DeploymentFailed)
    };
    if touched.is_empty() {
        return refused("the deployment changed no host".into());
    }
    eprintln!(
        "vesemir: on_failure = \"rollback\": run {} stopped on its failures; rolling back the {} host(s) it changed",
        record.id,
        touched.len()
    );
    match rollback_of(&runs, None, Some(touched), options, config, state).await {
        Ok(ran) => {
            let how = if ran.exit == Exit::Success { "succeeded" } else { "did not succeed" };
            eprintln!("vesemir: the rollback (run {}) of run {} {how}", ran.record.id, record.id);
            if options.output == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({ "on_failure": { "rollback": ran.record.id, "outcome": ran.record.outcome } })
                );
            }
            Ok(Exit::DeploymentFailed)
        }
        Err(e) => refused(e.message),
    }
}

/// After a follow-up of `parent`: the servers `parent` left out whose hosts succeeded in this
/// run go back to the state `parent` found them in (health gate first); each one put back is
/// also marked recovered in this run's journal, whose own record of it (the state this run
/// found: out) is superseded.
pub async fn resume_servers(
    state: &StateDir,
    parent: &RunId,
    succeeded: &BTreeSet<HostName>,
    journal: &RunJournal,
    config: &Config,
    output: OutputFormat,
) {
    let Ok(journals) = state.unfinished() else { return };
    let Some(parent_journal) = journals.iter().find(|j| &j.run == parent) else { return };
    let unfinished = replay(parent_journal.entries.clone());
    if unfinished.is_empty() {
        return;
    }
    let ports = crate::recover::ports(config);
    let recovery = recover_run(state, parent_journal, unfinished, &ports, Some(succeeded)).await;
    mark_recovered(&journal.file, &recovery);
    if output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "resumed": recovery }));
    } else {
        for s in &recovery.servers {
            let what = match &s.outcome {
                RecoveryOutcome::LeftOut { reason } => format!("LEFT OUT: {reason}"),
                _ => format!("back in the state run {parent} found it in"),
            };
            eprintln!("vesemir: {} (host {}): {what}", s.server, s.host);
        }
    }
}

/// Appends `Recovered` to `writer` for every server `recovery` put back.
fn mark_recovered(writer: &dyn JournalWriter, recovery: &RunRecovery) {
    for s in &recovery.servers {
        if matches!(s.outcome, RecoveryOutcome::LeftOut { .. }) {
            continue;
        }
        let (Ok(host), Ok(server)) = (HostName::new(&s.host), vesemir_core::name::ServerName::new(&s.server))
        else {
            continue;
        };
        if let Err(e) = writer.append(&JournalEntry::Recovered(Recovered { host, server })) {
            eprintln!("vesemir: warning: {e}");
        }
    }
}

/// What `vesemir restore -o json` prints.
#[derive(Debug, Serialize)]
struct RestoreView<'a> {
    runs: &'a [RunRecovery],
    not_found: Vec<String>,
    left_out: usize,
}

/// Runs `vesemir restore` here: each host's server goes back to the state the oldest run that
/// left it out found it in (health gate first); the other runs that list it are marked.
pub async fn restore(args: &RestoreArgs, config: &Config) -> Result<Exit, Failure> {
    let state = StateDir::locate().map_err(Failure::input)?;
    let mut wanted = BTreeSet::new();
    for host in &args.hosts {
        wanted.insert(HostName::new(host).map_err(|e| Failure::input(e.to_string()))?);
    }
    let journals = state.unfinished().map_err(|e| Failure::input(e.to_string()))?;
    let idle: Vec<_> = journals.into_iter().filter(|j| !state.is_running(&j.run)).collect();
    let mut plan: Vec<(usize, BTreeSet<HostName>)> = Vec::new();
    let mut not_found = Vec::new();
    if let Some(run) = &args.deployment {
        let index = idle.iter().position(|j| j.run.as_str() == run).ok_or_else(|| {
            Failure::input(format!(
                "run {run} left no server out (or still runs): see `vesemir recover --list`"
            ))
        })?;
        let pending: BTreeSet<HostName> =
            replay(idle[index].entries.clone()).servers.into_iter().map(|s| s.host).collect();
        let hosts = if wanted.is_empty() { pending.clone() } else { wanted.clone() };
        not_found.extend(hosts.difference(&pending).map(ToString::to_string));
        plan.push((index, hosts.intersection(&pending).cloned().collect()));
    } else {
        for host in &wanted {
            let oldest =
                idle.iter().position(|j| replay(j.entries.clone()).servers.iter().any(|s| &s.host == host));
            match oldest {
                Some(index) => match plan.iter_mut().find(|(i, _)| *i == index) {
                    Some((_, hosts)) => {
                        hosts.insert(host.clone());
                    }
                    None => plan.push((index, BTreeSet::from([host.clone()]))),
                },
                None => not_found.push(host.to_string()),
            }
        }
    }
    for host in &not_found {
        eprintln!("vesemir: {host}: no local run left it out of rotation (see `vesemir recover --list`)");
    }
    let ports = if plan.is_empty() { None } else { Some(crate::recover::ports(config)) };
    let mut results = Vec::new();
    if let Some(ports) = &ports {
        for (index, hosts) in &plan {
            let journal = &idle[*index];
            let recovery =
                recover_run(&state, journal, replay(journal.entries.clone()), ports, Some(hosts)).await;
            // The same servers, listed by later runs (a retry that failed them again), are back too.
            for other in idle.iter().skip(index + 1) {
                if let Ok(Some(writer)) = state.open(&other.run) {
                    let listed: BTreeSet<HostName> =
                        replay(other.entries.clone()).servers.into_iter().map(|s| s.host).collect();
                    let back = RunRecovery {
                        servers: recovery
                            .servers
                            .iter()
                            .filter(|s| HostName::new(&s.host).is_ok_and(|h| listed.contains(&h)))
                            .cloned()
                            .collect(),
                        ..recovery.clone()
                    };
                    mark_recovered(&writer, &back);
                }
            }
            results.push(recovery);
        }
    }
    let left_out: usize = results
        .iter()
        .map(|r| r.servers.iter().filter(|s| matches!(s.outcome, RecoveryOutcome::LeftOut { .. })).count())
        .sum();
    if args.output == OutputFormat::Json {
        let view = RestoreView { runs: &results, not_found: not_found.clone(), left_out };
        println!("{}", serde_json::to_string(&view).map_err(|e| Failure::input(e.to_string()))?);
    } else if !results.is_empty() {
        print_recovery(&results, OutputFormat::Text);
    }
    Ok(if results.is_empty() {
        Exit::BadInput
    } else if left_out > 0 || !not_found.is_empty() {
        Exit::DeploymentFailed
    } else {
        Exit::Success
    })
}

/// One line for a person, or `{"message": ...}` in JSON.
fn say(output: OutputFormat, message: &str) {
    if output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "message": message }));
    } else {
        println!("{message}");
    }
}
