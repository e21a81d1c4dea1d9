//! `vesemir deploy` and `vesemir plan`: local deployments over the real adapters.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinSet;
use vesemir_core::host_locks::{LockConflicts, WaitNotice};
use vesemir_core::journal::{replay, JournalHeader, JournalSink, JournaledLoadBalancer, RunId};
use vesemir_core::lock::HeldLock;
use vesemir_core::request::CanaryGate;
use vesemir_core::{Control, Event, EventSink, PrepareError, Prepared};

use vesemir_core::history::HistoryOutcome;
use vesemir_core::request::OnFailure;

use crate::cli::DeployArgs;
use crate::config::Config;
use crate::control_socket::{self, ControlSocket, LocalControl};
use crate::exit::{Exit, Failure};
use crate::history::{Links, LocalRun};
use crate::journal_file::{FileJournal, StateDir};
use crate::output::{self, OutputFormat};
use crate::{compose, request};

/// A deployment to run here: its request (as written, and validated), where it came from, and
/// what it follows up on.
pub struct Job {
    /// The request, validated.
    pub request: vesemir_core::request::DeploymentRequest,
    /// The request as written (overrides applied), recorded in the journal and the history.
    pub spec: vesemir_core::request::spec::RequestSpec,
    /// Where it came from, for messages: the deployment file, or `retry of RUN`.
    pub source: String,
    /// Only these hosts of the ones found (a retry, an automatic rollback).
    pub only_hosts: Option<std::collections::BTreeSet<vesemir_core::name::HostName>>,
    /// The deployment it retries or rolls back.
    pub links: Links,
    /// A run whose journal left servers out that this job takes as they are (its request says
    /// `servers_not_in_rotation = "include"`): once such a host succeeds here, its server goes
    /// back to the state that run found it in, health gate first.
    pub resume: Option<RunId>,
}

impl Job {
    /// The job of a deployment file.
    pub fn from_file(args: &DeployArgs, config: &Config) -> Result<Self, Failure> {
        let request = request::load(&args.file, &args.sets, args.concurrency.as_deref(), &config.playbooks)?;
        let spec = request::spec(
            &args.file,
            &args.sets,
            args.concurrency.as_deref(),
            request::Requester::FromEnvironment,
        )?;
        Ok(Self {
            request,
            spec,
            source: args.file.display().to_string(),
            only_hosts: None,
            links: Links::default(),
            resume: None,
        })
    }
}

/// How a local run shows and waits.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// `text` or `json`.
    pub output: OutputFormat,
    /// How long to wait for hosts locked by another deployment.
    pub lock_wait: Option<std::time::Duration>,
    /// Wait for `vesemir confirm` without a terminal.
    pub confirm_from_socket: bool,
}

impl RunOptions {
    /// The options of `deploy`.
    pub fn of(args: &DeployArgs) -> Self {
        Self { output: args.output, lock_wait: args.lock_wait, confirm_from_socket: args.confirm_from_socket }
    }
}

/// Finds, resolves and plans; with `lock`, also takes every host's lock (deploy, not plan).
async fn prepare(
    request: vesemir_core::request::DeploymentRequest,
    source: &str,
    only_hosts: Option<std::collections::BTreeSet<vesemir_core::name::HostName>>,
    options: RunOptions,
    config: &Config,
    lock: bool,
) -> Result<(Prepared, vesemir_core::Ports), Failure> {
    if lock {
        refuse_unconfirmable(
            options.confirm_from_socket,
            source,
            &request,
            control_socket::stdin_is_terminal(),
        )?;
    }
    let ports = compose::ports(config, &request)?;
    let mut driver = compose::driver_config(config);
    driver.only_hosts = only_hosts;
    if lock {
        let wait = options.lock_wait.or(config.locks.wait).unwrap_or_default();
        let mut policy = compose::lock_policy(config, &request, wait);
        policy.on_wait = Some(WaitNotice(Arc::new(|wait| eprintln!("vesemir: {wait}"))));
        driver.locks = Some(policy);
    }
    let prepared = vesemir_core::prepare(Arc::new(request), &ports, &driver).await.map_err(|e| match &e {
        PrepareError::Locked(conflicts) => Failure::input(locked_message(conflicts, source)),
        e if e.is_unreachable() => Failure::unreachable(format!("nothing was changed: {e}")),
        e => Failure::input(format!("nothing was changed: {e}")),
    })?;
    for warning in &prepared.warnings {
        eprintln!("vesemir: warning: {warning}");
    }
    Ok((prepared, ports))
}

/// A canary that waits for confirmation needs someone to confirm: a person at the terminal, or
/// `vesemir confirm RUN-ID` from elsewhere (`--confirm-from-socket`). Without either the deploy
/// would wait forever, so it is refused before anything is looked up or changed.
fn refuse_unconfirmable(
    confirm_from_socket: bool,
    source: &str,
    request: &vesemir_core::request::DeploymentRequest,
    terminal: bool,
) -> Result<(), Failure> {
    let confirm = matches!(&request.strategy.canary, Some(c) if c.gate == CanaryGate::Confirm);
    if !confirm || terminal || confirm_from_socket {
        return Ok(());
    }
    Err(Failure::input(format!(
        "nothing was changed: {}: the canary waits for confirmation (strategy.canary.confirm = true), but stdin is not a terminal, so nobody can answer the prompt. Add --confirm-from-socket and run `vesemir confirm RUN-ID` from another shell once the canary is done, or give the canary a hold instead (strategy.canary.hold = \"5m\")",
        source
    )))
}

/// What to do about hosts another deployment holds.
fn locked_message(conflicts: &LockConflicts, file: &str) -> String {
    let hosts: Vec<&str> = conflicts.hosts().map(|h| h.as_str()).collect();
    let wait =
        if conflicts.waited.is_zero() { "wait with --lock-wait 10m" } else { "wait longer with --lock-wait" };
    format!(
        "nothing was changed: {conflicts}; {wait}, or if that deployment is dead: vesemir unlock -f {} {}",
        file,
        hosts.join(" ")
    )
}

/// Runs a deployment to its end, journaling every load balancer change before making it; with
/// `strategy.on_failure = "rollback"`, a deployment stopped by its failures is followed by a
/// rollback of the hosts it changed.
pub async fn deploy(args: &DeployArgs, config: &Config) -> Result<Exit, Failure> {
    let state = StateDir::locate().map_err(Failure::input)?;
    let job = match Job::from_file(args, config) {
        Ok(job) => job,
        Err(refused) => return Err(refused),
    };
    let options = RunOptions::of(args);
    let on_failure = job.request.strategy.on_failure;
    let ran = run_job(job, options, config, &state).await?;
    if on_failure == OnFailure::Rollback && ran.record.outcome == HistoryOutcome::Stopped {
        return crate::followup::rollback_after_failure(&ran, options, config, &state).await;
    }
    Ok(ran.exit)
}

/// How a local run ended.
pub struct Ran {
    /// The exit code it calls for.
    pub exit: Exit,
    /// Its history record, as written.
    pub record: vesemir_core::history::HistoryRecord,
}

/// Runs `job` here to its end: prepared, journaled, recorded in the history (when it starts and
/// when it ends), with the control socket, the prompt and the signals of a local deploy.
pub async fn run_job(
    job: Job,
    options: RunOptions,
    config: &Config,
    state: &StateDir,
) -> Result<Ran, Failure> {
    let Job { request, spec, source, only_hosts, links, resume } = job;
    let backend = request.load_balancer.backend.as_str().to_owned();
    let (prepared, mut ports) = match prepare(request, &source, only_hosts, options, config, true).await {
        Ok(prepared) => prepared,
        Err(refused) => {
            // Refused (its servers out of rotation, its hosts locked...): when a killed or failed
            // run of this backend left servers out, that is likely why; say how to put them back.
            warn_unfinished(state, &backend);
            return Err(refused);
        }
    };
    warn_unfinished(state, prepared.backend.name.as_str());
    let started_at = SystemTime::now();
    let journal = match start_journal(&spec, state, &prepared, &mut ports, started_at) {
        Ok(journal) => journal,
        Err(refused) => {
            // Nothing was changed: give the locks back now (dropping them only starts releases
            // that the runtime's end cuts short, leaving the hosts locked for `stale_after`).
            if let Some(locks) = &prepared.locks {
                locks.release_all().await;
            }
            return Err(refused);
        }
    };
    let request_json = serde_json::to_value(&spec).unwrap_or_default();
    let mut record = LocalRun {
        record: crate::history::started(&journal.run, &prepared, started_at, &links),
        request: request_json,
    };
    if let Err(e) = state.write_history(&record) {
        if let Some(locks) = &prepared.locks {
            locks.release_all().await;
        }
        return Err(Failure::input(format!(
            "nothing was changed: the run's history record cannot be written ({e}); set {} to a writable directory",
            crate::journal_file::STATE_DIR_VARIABLE
        )));
    }
    let reporter = output::sink(options.output);
    let control = Control::new();
    let local = LocalControl::new(control.clone());
    let socket = ControlSocket::bind(&state.socket_of(&journal.run), local.clone())
        .map_err(|e| {
            eprintln!(
                "vesemir: warning: no control socket ({e}): `vesemir pause|resume|confirm {}` will not reach this deploy",
                journal.run
            )
        })
        .ok();
    let what = match (&links.retry_of, &links.rollback_of) {
        (Some(parent), _) => format!(" (retry of {parent})"),
        (_, Some(parent)) => format!(" (rollback of {parent})"),
        _ => String::new(),
    };
    eprintln!(
        "vesemir: run {run}{what}: from another terminal: vesemir pause {run} | vesemir resume {run} | vesemir cancel {run}{}",
        if prepared.request.strategy.canary.as_ref().is_some_and(|c| c.gate == CanaryGate::Confirm) {
            format!(" | vesemir confirm {run} (once the canary is done)", run = journal.run)
        } else {
            String::new()
        },
        run = journal.run
    );
    let prompt = control_socket::stdin_is_terminal().then(|| {
        let plan = &prepared.plan;
        let canary = plan.batches.first().cloned().unwrap_or_default();
        let names: Vec<&str> = plan.hosts[canary.clone()].iter().map(|h| h.host.name.as_str()).collect();
        let rest = plan.hosts.len() - canary.len();
        tokio::spawn(local.clone().prompt_on_terminal(names.join(", "), rest))
    });
    let sink = Both(&*reporter, &journal.sink, &local);
    let interrupts = tokio::spawn(handle_interrupts(control.clone()));
    let driver = compose::driver_config(config);
    let outcome = vesemir_core::run_catching_panics(&prepared, &ports, &sink, &control, &driver).await;
    interrupts.abort();
    if let Some(prompt) = prompt {
        prompt.abort();
    }
    drop(socket);
    let report = match outcome {
        Ok(report) => report,
        Err(crash) => {
            eprintln!("\n{}", crash_summary(&crash));
            record.record.outcome = HistoryOutcome::Failed;
            record.record.error = Some(crash.to_string());
            record.record.finished_at = Some(SystemTime::now());
            if let Err(e) = state.write_history(&record) {
                eprintln!("vesemir: warning: {e}");
            }
            return Ok(Ran { exit: Exit::DeploymentFailed, record: record.record });
        }
    };
    reporter.finish(&report);
    record.record.outcome = report.outcome.map_or(HistoryOutcome::Failed, HistoryOutcome::from);
    record.record.hosts = vesemir_core::history::HistoryRecord::host_results(&report);
    record.record.finished_at = Some(SystemTime::now());
    if let Err(e) = state.write_history(&record) {
        eprintln!("vesemir: warning: {e}");
    }
    if let Some(parent) = &resume {
        let succeeded = record.record.succeeded();
        if !succeeded.is_empty() {
            crate::followup::resume_servers(state, parent, &succeeded, &journal, config, options.output)
                .await;
        }
    }
    journal.close(state);
    if !report.succeeded() && options.output == OutputFormat::Text {
        eprintln!("{}", next_steps(&record.record));
    }
    Ok(Ran {
        exit: if report.succeeded() { Exit::Success } else { Exit::DeploymentFailed },
        record: record.record,
    })
}

/// The commands that come next after a run that did not fully succeed.
pub fn next_steps(record: &vesemir_core::history::HistoryRecord) -> String {
    let mut lines = vec!["Next steps:".to_owned()];
    let retry = record.to_retry();
    if !retry.is_empty() {
        lines.push(format!(
            "  vesemir retry {}    runs the {} host(s) that did not succeed again, once the cause is fixed",
            record.id,
            retry.len()
        ));
    }
    let out: Vec<&str> = record
        .hosts
        .iter()
        .filter(|h| h.rotation != vesemir_core::event::Rotation::InRotation)
        .map(|h| h.host.as_str())
        .collect();
    if !out.is_empty() {
        lines.push(format!(
            "  vesemir restore {}    puts them back into rotation once healthy (health gate first)",
            out.join(" ")
        ));
    }
    lines.push(format!(
        "  vesemir rollback {} {}    deploys the previous version everywhere",
        record.application, record.environment
    ));
    lines.join("\n")
}

/// What `vesemir deploy` says when its rollout task panicked: the internal error, and every
/// host that may have been left out of rotation.
fn crash_summary(crash: &vesemir_core::Crash) -> String {
    let out = crash.out_of_rotation();
    let hosts = if out.is_empty() {
        "No host was taken out of rotation.".to_owned()
    } else {
        let names: Vec<&str> = out.iter().map(|h| h.as_str()).collect();
        format!(
            "Hosts that may be out of rotation ({}): {}. Check them on the load balancer.",
            names.len(),
            names.join(", ")
        )
    };
    format!("vesemir: the deployment stopped on an {crash}.\n{hosts}")
}

/// Every event to the journal, then to the reporter, then to the local control (which may
/// prompt).
struct Both<'a>(&'a dyn EventSink, &'a JournalSink<Arc<FileJournal>>, &'a LocalControl);

impl EventSink for Both<'_> {
    fn emit(&self, event: &Event) {
        self.1.emit(event);
        self.0.emit(event);
        self.2.emit(event);
    }
}

/// A run's journal while the deploy runs.
pub struct RunJournal {
    /// The run.
    pub run: RunId,
    /// Its file, to append to.
    pub file: Arc<FileJournal>,
    sink: JournalSink<Arc<FileJournal>>,
}

/// Opens the run's journal and wraps the load balancer so that every change is journaled first.
/// A journal that cannot be written stops the deploy before anything changes.
fn start_journal(
    spec: &vesemir_core::request::spec::RequestSpec,
    state: &StateDir,
    prepared: &Prepared,
    ports: &mut vesemir_core::Ports,
    now: SystemTime,
) -> Result<RunJournal, Failure> {
    let cannot = |e: &dyn std::fmt::Display| {
        Failure::input(format!(
            "nothing was changed: the journal of load balancer changes cannot be written ({e}); set {} to a writable directory",
            crate::journal_file::STATE_DIR_VARIABLE
        ))
    };
    let run = state.new_run_id(now).map_err(|e| cannot(&e))?;
    let request_json = serde_json::to_value(spec).map_err(|e| cannot(&e))?;
    let header = JournalHeader::of_prepared(run.clone(), prepared, request_json, now);
    let file = Arc::new(state.create(&run).map_err(|e| cannot(&e))?);
    let journaled = JournaledLoadBalancer::start(ports.load_balancer.clone(), file.clone(), &header)
        .map_err(|e| cannot(&e))?;
    ports.load_balancer = Arc::new(journaled);
    let sink = JournalSink::new(file.clone(), &header);
    Ok(RunJournal { run, file, sink })
}

impl RunJournal {
    /// After the run: a journal with nothing left to put back is moved away; otherwise the
    /// servers left out are named with the command that puts them back.
    fn close(self, state: &StateDir) {
        if let Some(e) = self.sink.error() {
            eprintln!(
                "vesemir: warning: {e}: hosts may be listed by `vesemir recover --list` though they ended"
            );
        }
        let path = self.file.path().to_owned();
        drop(self.sink);
        drop(self.file);
        let unfinished = match crate::journal_file::read(&path, self.run.clone()) {
            Ok(journal) => replay(journal.entries),
            Err(e) => {
                eprintln!("vesemir: warning: {e}");
                return;
            }
        };
        if unfinished.is_empty() {
            if let Err(e) = state.archive(&self.run) {
                eprintln!("vesemir: warning: {e}");
            }
            return;
        }
        let servers: Vec<&str> = unfinished.servers.iter().map(|s| s.server.as_str()).collect();
        eprintln!(
            "vesemir: {} server(s) left out of rotation are in journal {}: {}. See `vesemir recover --list`; `vesemir recover {}` puts them back once healthy.",
            servers.len(),
            self.run,
            servers.join(", "),
            self.run
        );
    }
}

/// Warns when journals left servers of `backend` out (a killed deploy, or hosts that failed).
fn warn_unfinished(state: &StateDir, backend: &str) {
    for run in crate::recover::unfinished_for_backend(state, backend) {
        let servers: Vec<&str> = run.servers.iter().map(|s| s.server.as_str()).collect();
        let what = match run.state {
            crate::recover::RunState::Running => "a deploy still running",
            crate::recover::RunState::Interrupted => "a deploy that was killed",
            crate::recover::RunState::Ended => "a deploy that ended",
        };
        eprintln!(
            "vesemir: warning: {what} (run {}) left servers of backend {} out of rotation: {}. See `vesemir recover --list`; `vesemir recover {}` puts them back.",
            run.run,
            backend,
            servers.join(", "),
            run.run
        );
    }
}

/// Ctrl-C, SIGTERM (what a CI job's cancel sends) and SIGHUP: the first cancels gracefully (hosts
/// in flight finish, no new host starts), a second stops at once.
async fn handle_interrupts(control: Control) {
    let mut signals = Signals::new();
    let Some(first) = signals.next().await else { return };
    control.cancel();
    eprintln!("\nvesemir: cancelling ({first}): hosts in flight finish and go back into rotation, no new host starts. Press Ctrl-C (or send SIGTERM) again to stop at once.");
    if let Some(second) = signals.next().await {
        eprintln!("\nvesemir: stopping at once ({second}): hosts in flight may be left out of rotation (listed below, and kept in the journal for `vesemir recover`).");
        control.abort();
    }
}

/// The signals that cancel a local deploy.
struct Signals {
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Signals {
    fn new() -> Self {
        Self { term: signal(SignalKind::terminate()).ok(), hup: signal(SignalKind::hangup()).ok() }
    }

    /// The next signal's name; `None` when none can arrive any more.
    async fn next(&mut self) -> Option<&'static str> {
        async fn recv(signal: &mut Option<Signal>) -> Option<()> {
            match signal {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            interrupt = tokio::signal::ctrl_c() => interrupt.ok().map(|()| "SIGINT"),
            term = recv(&mut self.term) => term.map(|()| "SIGTERM"),
            hup = recv(&mut self.hup) => hup.map(|()| "SIGHUP"),
        }
    }
}

/// Shows what a deployment would do and checks every host can be reached over SSH.
pub async fn plan(args: &DeployArgs, config: &Config) -> Result<Exit, Failure> {
    let request = request::load(&args.file, &args.sets, args.concurrency.as_deref(), &config.playbooks)?;
    let source = args.file.display().to_string();
    let (prepared, ports) = prepare(request, &source, None, RunOptions::of(args), config, false).await?;
    let results = check_ssh(&prepared, &ports).await;
    let unreachable = results.iter().filter(|r| !matches!(r, Some(Ok(_)))).count();
    let locked = results.iter().filter(|r| matches!(r, Some(Ok(Some(_))))).count();
    if args.output == OutputFormat::Json {
        println!("{}", plan_json(&prepared, &results));
    } else {
        print_plan(&prepared, &results);
        if locked > 0 {
            println!("\n{locked} host(s) are locked by another deployment: a deploy now is refused (or waits with --lock-wait).");
        }
        if unreachable > 0 {
            println!("\n{unreachable} host(s) cannot be reached over SSH: fix them before deploying.");
        } else {
            println!("\nEvery host is reachable. Nothing was changed.");
        }
    }
    Ok(if unreachable == 0 { Exit::Success } else { Exit::Unreachable })
}

/// Each host's SSH check and who holds its lock, in plan order (`None`: the check did not
/// finish), 16 at a time.
type SshChecks = Vec<Option<Result<Option<HeldLock>, String>>>;

async fn check_ssh(prepared: &Prepared, ports: &vesemir_core::Ports) -> SshChecks {
    let hosts = &prepared.plan.hosts;
    let mut checks = JoinSet::new();
    let mut results = vec![None; hosts.len()];
    let mut next = 0;
    loop {
        while checks.len() < 16 && next < hosts.len() {
            let (executor, host, index) = (ports.executor.clone(), hosts[next].host.clone(), next);
            checks.spawn(async move {
                let result = match executor.connect(&host).await {
                    Ok(()) => executor.read_lock(&host).await,
                    Err(e) => Err(e),
                };
                executor.close(&host).await;
                (index, result.map_err(|e| e.chain()))
            });
            next += 1;
        }
        let Some(done) = checks.join_next().await else { break };
        if let Ok((index, result)) = done {
            results[index] = Some(result);
        }
    }
    results
}

fn plan_json(prepared: &Prepared, results: &SshChecks) -> serde_json::Value {
    let (request, plan) = (&prepared.request, &prepared.plan);
    let hosts: Vec<_> = plan
        .hosts
        .iter()
        .zip(results)
        .map(|(h, r)| {
            serde_json::json!({
                "name": h.host.name, "address": h.host.address, "server": h.server,
                "ssh": match r { Some(Ok(_)) => "ok".to_owned(), Some(Err(e)) => e.clone(), None => "not checked".to_owned() },
                "locked_by": match r { Some(Ok(Some(held))) => Some(held.to_string()), _ => None },
                "in_rotation": h.was_in_rotation(), "skip": h.skip, "states": h.original,
            })
        })
        .collect();
    let batches: Vec<Vec<&str>> = plan
        .batches
        .iter()
        .map(|b| plan.hosts[b.clone()].iter().map(|h| h.host.name.as_str()).collect())
        .collect();
    serde_json::json!({
        "application": request.application, "environment": request.environment, "version": request.version,
        "backend": prepared.backend.name, "load_balancers": prepared.backend.instances.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "concurrency": plan.concurrency, "max_failures": plan.max_failures, "hosts": hosts, "batches": batches,
        "budget": {
            "concurrency": prepared.budget.concurrency,
            "already_out": prepared.budget.already_out.iter().map(|s| serde_json::json!({ "server": s.name, "states": s.instances })).collect::<Vec<_>>(),
            "effective": prepared.budget.effective(),
        },
        "warnings": prepared.warnings,
    })
}

fn print_plan(prepared: &Prepared, results: &SshChecks) {
    let (request, plan) = (&prepared.request, &prepared.plan);
    let window = match request.strategy.window {
        vesemir_core::request::Window::Sliding => "sliding window".to_owned(),
        vesemir_core::request::Window::Batches => format!("{} batches", plan.batches.len()),
    };
    println!(
        "Plan: {} {} to {} ({} hosts, {window}, at most {} out of rotation, stop after {} failed)",
        request.application,
        request.version,
        request.environment,
        plan.hosts.len(),
        plan.concurrency,
        plan.max_failures + 1
    );
    let instances: Vec<String> = prepared.backend.instances.iter().map(|i| i.to_string()).collect();
    println!("Backend {} on {}", prepared.backend.name, instances.join(", "));
    println!("Budget: {}", prepared.budget);
    for out in &prepared.budget.already_out {
        println!("  out of rotation: {}: {}", out.name, out.describe());
    }
    let width = plan.hosts.iter().map(|h| h.host.name.as_str().len()).max().unwrap_or(4).max(4);
    for (number, batch) in plan.batches.iter().enumerate() {
        let label = if number == 0 && plan.canary { " (canary)" } else { "" };
        println!("\nbatch {}{label}", number + 1);
        for index in batch.clone() {
            let h = &plan.hosts[index];
            let ssh = match &results[index] {
                Some(Ok(None)) => "ssh ok".to_owned(),
                Some(Ok(Some(held))) => format!("ssh ok, LOCKED by {held}"),
                Some(Err(e)) => format!("SSH FAILED: {e}"),
                None => "not checked".to_owned(),
            };
            println!(
                "  {:width$}  {:15}  server {:20}  {ssh}",
                h.host.name.as_str(),
                h.host.address,
                h.server.as_str()
            );
            print_states(h);
        }
    }
    let skipped: Vec<_> = plan.hosts.iter().filter(|h| h.skip).collect();
    if !skipped.is_empty() {
        println!("\nskipped (not in rotation, left as found)");
        for h in skipped {
            println!(
                "  {:width$}  {:15}  server {}",
                h.host.name.as_str(),
                h.host.address,
                h.server.as_str()
            );
            print_states(h);
        }
    }
}

/// A planned host's server, box by box, as it was found.
fn print_states(h: &vesemir_core::plan::PlannedHost) {
    let note = if h.was_in_rotation() { "" } else { "  (NOT IN ROTATION: returned to this state)" };
    for (i, state) in h.original.iter().enumerate() {
        println!("      {state}{}", if i == 0 { note } else { "" });
    }
}

/// Submits the deployment to a server and follows it to its end.
pub async fn deploy_remote(args: &DeployArgs, server: &str) -> Result<Exit, Failure> {
    let (unit, left_out) = request::unit(&args.file, &args.sets, args.concurrency.as_deref())?;
    if !left_out.is_empty() {
        eprintln!(
            "vesemir: not sent to the server, whose catalog sets them for {}/{}/{}: {}",
            unit.team,
            unit.application,
            unit.environment,
            left_out.join(", ")
        );
    }
    let client = crate::client::Client::new(server)?;
    let accepted = client.submit(&unit, args.idempotency_key.as_deref()).await?;
    let id = accepted.id;
    eprintln!(
        "vesemir: deployment {id} accepted for {} (following {})",
        accepted.requested_by, accepted.links.events
    );
    let reporter = output::sink(args.output);
    let server = server.to_owned();
    let interrupts = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("\nvesemir: asking the server to cancel deployment {id}: hosts in flight finish. Press Ctrl-C again to stop following.");
        if let Ok(client) = crate::client::Client::new(&server) {
            let _ = client.cancel(id).await;
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nvesemir: stopped following; the server goes on. See `vesemir status {id}`.");
            std::process::exit(Exit::DeploymentFailed as i32);
        }
    });
    let followed = client.events(id, &*reporter, true).await;
    interrupts.abort();
    followed?;
    let deployment = client.wait_until_ended(id).await?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "deployment": deployment }));
    } else {
        println!("\n{}", crate::client::describe(&deployment).trim_end());
    }
    Ok(crate::client::exit_for(deployment.status))
}

#[cfg(test)]
mod tests {
    use vesemir_core::event::{Event, EventKind, Phase};
    use vesemir_core::name::HostName;
    use vesemir_core::{Crash, Progress};

    use super::crash_summary;

    #[test]
    fn a_crash_names_the_hosts_that_may_be_out() {
        let host = |name: &str| HostName::new(name).expect("name");
        let mut progress = Progress::with_hosts([host("web-01"), host("web-02")]);
        let draining = EventKind::HostPhase { host: host("web-02"), phase: Phase::Draining };
        progress.apply(&Event { seq: 1, elapsed: std::time::Duration::ZERO, kind: draining });
        let crash = Crash::from_panic(&"index out of bounds", progress);
        assert_eq!(
            crash_summary(&crash),
            "vesemir: the deployment stopped on an internal error: index out of bounds (a bug: please \
             report).\nHosts that may be out of rotation (1): web-02. Check them on the load balancer."
        );
    }
}
