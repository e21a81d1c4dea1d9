//! `vesemir recover`: lists what local runs' journals left unfinished, and puts those servers
//! back (health gate first, then each one's original state on every load balancer instance).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use vesemir_core::journal::{
    health_check, recover_server, replay, Finished, JournalEntry, JournalHeader, JournalWriter,
    PendingServer, Recovered, RecoveryConfig, RecoveryOutcome, RunId, Unfinished,
};
use vesemir_core::ports::{Executor, LoadBalancer};
use vesemir_core::request::spec::RequestSpec;
use vesemir_core::request::{DeploymentRequest, InlineChangesets, Playbooks, RawQueries, RequestPolicy};
use vesemir_core::Host;

use crate::exit::{Exit, Failure};
use crate::journal_file::{ReadJournal, StateDir};
use crate::output::OutputFormat;

/// The arguments of `vesemir recover`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoverArgs {
    /// The run to recover (as `--list` shows it); without it, every unfinished run that is not
    /// running.
    #[arg(value_name = "RUN-ID", conflicts_with = "all")]
    pub run: Option<String>,
    /// Recover every unfinished run that is not running (the default without RUN-ID).
    #[arg(long)]
    pub all: bool,
    /// Only list what journals left unfinished; change nothing.
    #[arg(long)]
    pub list: bool,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Recover deployment RUN-ID (its id) on this Vesemir server instead of local journals
    /// (token from `VESEMIR_TOKEN`).
    #[arg(long, requires = "run", conflicts_with_all = ["all", "list"])]
    pub server: Option<String>,
}

/// One unfinished run, as `--list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunListing {
    /// The run.
    pub run: RunId,
    /// Its header (application, environment, backend, hosts, who, when), if the journal has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<ListedHeader>,
    /// `running` (its deploy still holds the journal), `interrupted` (the process died), or
    /// `ended` (the deploy ended, leaving servers out).
    pub state: RunState,
    /// Seconds since it started (or since its journal was last written, without a header).
    pub age_seconds: Option<u64>,
    /// The servers to put back.
    pub servers: Vec<PendingServer>,
    /// Lines of the journal that could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The journal's file.
    pub journal: std::path::PathBuf,
}

/// The parts of a header a listing shows.
#[derive(Debug, Clone, Serialize)]
pub struct ListedHeader {
    /// The application.
    pub application: String,
    /// The environment.
    pub environment: String,
    /// The version it deployed.
    pub version: String,
    /// The backend.
    pub backend: String,
    /// Who ran it.
    pub requested_by: String,
    /// When it started.
    pub started_at: String,
}

/// Where a run with a journal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Its deploy still runs (it holds the journal's lock).
    Running,
    /// The process died before the run ended.
    Interrupted,
    /// The deploy ended and left servers out of rotation.
    Ended,
}

/// What `recover` did for one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRecovery {
    /// The host.
    pub host: String,
    /// Its server.
    pub server: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: RecoveryOutcome,
}

/// What `recover` did for one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecovery {
    /// The run.
    pub run: RunId,
    /// Why it was not recovered at all, if it was not (running, unreadable...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Each server.
    pub servers: Vec<ServerRecovery>,
    /// Whether nothing is left: its journal is marked finished.
    pub finished: bool,
}

/// Runs `vesemir recover`. `ports` builds the load balancer and executor (and gives the
/// playbooks to rebuild requests) only when something is to be recovered.
pub async fn recover(
    args: &RecoverArgs,
    state: &StateDir,
    ports: impl FnOnce() -> Result<RecoveryPorts, Failure>,
) -> Result<Exit, Failure> {
    let now = SystemTime::now();
    let journals = state.unfinished().map_err(|e| Failure::input(e.to_string()))?;
    let wanted = match &args.run {
        Some(run) => Some(RunId::new(run.clone()).map_err(Failure::input)?),
        None => None,
    };
    if args.list {
        let listings: Vec<RunListing> = journals
            .iter()
            .filter(|j| wanted.as_ref().is_none_or(|w| *w == j.run))
            .map(|j| listing(state, j, now))
            .filter(|l| !l.servers.is_empty() || l.state == RunState::Running)
            .collect();
        print_listing(&listings, args.output);
        return Ok(Exit::Success);
    }
    if let Some(wanted) = &wanted {
        if !journals.iter().any(|j| &j.run == wanted) {
            return Err(Failure::input(format!(
                "no unfinished journal for run {wanted} in {} (see `vesemir recover --list`)",
                state.root().display()
            )));
        }
    }
    let selected: Vec<&ReadJournal> =
        journals.iter().filter(|j| wanted.as_ref().is_none_or(|w| *w == j.run)).collect();
    let mut ports = Some(ports);
    let mut built: Option<RecoveryPorts> = None;
    let mut results = Vec::new();
    for journal in selected {
        for warning in &journal.warnings {
            eprintln!("vesemir: warning: {warning}");
        }
        if state.is_running(&journal.run) {
            if wanted.is_some() {
                results.push(RunRecovery {
                    run: journal.run.clone(),
                    skipped: Some(
                        "its deploy is still running (it holds the journal): cancel it first".into(),
                    ),
                    servers: Vec::new(),
                    finished: false,
                });
            }
            continue;
        }
        let unfinished = replay(journal.entries.clone());
        if unfinished.is_empty() {
            // Nothing to put back (a run that died before its first change, or recovered).
            close(state, &journal.run, &unfinished).map_err(|e| Failure::input(e.to_string()))?;
            continue;
        }
        if built.is_none() {
            if let Some(make) = ports.take() {
                built = Some(make()?);
            }
        }
        let Some(ports) = built.as_ref() else { continue };
        results.push(recover_run(state, journal, unfinished, ports, None).await);
    }
    print_recovery(&results, args.output);
    let clean = results.iter().all(|r| r.skipped.is_none() && r.finished);
    Ok(if clean { Exit::Success } else { Exit::DeploymentFailed })
}

/// What recovery runs over: the configured adapters and playbooks.
pub struct RecoveryPorts {
    /// The load balancer adapter (the backend comes from each journal).
    pub load_balancer: Arc<dyn LoadBalancer>,
    /// The executor for health commands.
    pub executor: Arc<dyn Executor>,
    /// The configuration's playbooks, to rebuild each run's request.
    pub playbooks: Playbooks,
    /// Bound on one quick call.
    pub call_timeout: Duration,
    /// Bytes of health command output kept at most.
    pub output_limit: usize,
}

/// The configured adapters, for recovery.
pub fn ports(config: &crate::config::Config) -> RecoveryPorts {
    let driver = crate::compose::driver_config(config);
    RecoveryPorts {
        load_balancer: Arc::new(vesemir_haproxy::HaproxyLoadBalancer::new(config.haproxy.clone())),
        executor: Arc::new(vesemir_ssh::SshExecutor::new(config.ssh.clone())),
        playbooks: config.playbooks.clone(),
        call_timeout: driver.call_timeout,
        output_limit: driver.output_limit,
    }
}

/// Puts back the servers `journal` left out (only those of `only`'s hosts, when given), each
/// through its health gate; the run is finished (and archived) once none is left.
pub async fn recover_run(
    state: &StateDir,
    journal: &ReadJournal,
    unfinished: Unfinished,
    ports: &RecoveryPorts,
    only: Option<&std::collections::BTreeSet<vesemir_core::name::HostName>>,
) -> RunRecovery {
    let run = journal.run.clone();
    let skip = |reason: String| RunRecovery {
        run: run.clone(),
        skipped: Some(reason),
        servers: Vec::new(),
        finished: false,
    };
    let Some(header) = unfinished.header.as_ref() else {
        return skip("the journal has no header (backend unknown): check its servers by hand".into());
    };
    let writer = match state.open(&run) {
        Ok(Some(writer)) => writer,
        Ok(None) => return skip("another process holds its journal (a deploy or a recovery)".into()),
        Err(e) => return skip(e.to_string()),
    };
    let request = rebuild_request(header, &ports.playbooks);
    let up_timeout = request
        .as_ref()
        .ok()
        .and_then(|r| r.changeset.health.load_balancer_up)
        .unwrap_or(RecoveryConfig::default().up_timeout);
    let config = RecoveryConfig { up_timeout, call_timeout: ports.call_timeout };
    let mut servers = Vec::new();
    let selected: Vec<&PendingServer> =
        unfinished.servers.iter().filter(|p| only.is_none_or(|only| only.contains(&p.host))).collect();
    let every_one = selected.len() == unfinished.servers.len();
    for pending in selected {
        let outcome = recover_one(header, pending, request.as_ref(), ports, &config).await;
        if !matches!(outcome, RecoveryOutcome::LeftOut { .. }) {
            let entry = JournalEntry::Recovered(Recovered {
                host: pending.host.clone(),
                server: pending.server.clone(),
            });
            if let Err(e) = writer.append(&entry) {
                eprintln!("vesemir: warning: {e}: {} was put back but stays listed", pending.server);
            }
        }
        servers.push(ServerRecovery {
            host: pending.host.to_string(),
            server: pending.server.to_string(),
            outcome,
        });
    }
    let left = servers.iter().any(|s| matches!(s.outcome, RecoveryOutcome::LeftOut { .. }));
    let mut finished = false;
    if !left && every_one {
        finished = match writer.append(&JournalEntry::Finished(Finished::Recovery)) {
            Ok(()) => {
                drop(writer);
                match state.archive(&run) {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!("vesemir: warning: {e}");
                        true
                    }
                }
            }
            Err(e) => {
                eprintln!("vesemir: warning: {e}");
                false
            }
        };
    }
    RunRecovery { run, skipped: None, servers, finished }
}

async fn recover_one(
    header: &JournalHeader,
    pending: &PendingServer,
    request: Result<&DeploymentRequest, &String>,
    ports: &RecoveryPorts,
    config: &RecoveryConfig,
) -> RecoveryOutcome {
    let left_out = |reason: String| RecoveryOutcome::LeftOut { reason };
    let host = header.host_of(&pending.server).map(|h| Host {
        name: h.name.clone(),
        address: h.address.clone(),
        attributes: Default::default(),
    });
    let health = if pending.originally_in_rotation() {
        match (request, &host) {
            (Ok(request), Some(host)) => health_check(request, host, ports.output_limit),
            (Err(e), _) => {
                return left_out(format!(
                    "it goes back into rotation, but its health gate cannot be rebuilt from the journal's request ({e}): put it back by hand"
                ))
            }
            (Ok(_), None) => {
                return left_out("its host is not in the journal's plan: put it back by hand".into());
            }
        }
    } else {
        None
    };
    recover_server(&*ports.load_balancer, &*ports.executor, &header.backend, pending, health.as_ref(), config)
        .await
}

fn rebuild_request(header: &JournalHeader, playbooks: &Playbooks) -> Result<DeploymentRequest, String> {
    let policy = RequestPolicy {
        playbooks,
        inline_changesets: InlineChangesets::Allowed,
        raw_queries: RawQueries::Allowed,
    };
    RequestSpec::from_json(&header.request.to_string())
        .and_then(|spec| spec.validate(&policy))
        .map_err(|e| e.to_string())
}

/// Marks a run with nothing left as finished and moves its journal away.
fn close(
    state: &StateDir,
    run: &RunId,
    unfinished: &Unfinished,
) -> Result<(), vesemir_core::journal::JournalError> {
    let Some(writer) = state.open(run)? else { return Ok(()) };
    if unfinished.finished != Some(Finished::Recovery) {
        writer.append(&JournalEntry::Finished(Finished::Recovery))?;
    }
    drop(writer);
    state.archive(run)
}

fn listing(state: &StateDir, journal: &ReadJournal, now: SystemTime) -> RunListing {
    let unfinished = replay(journal.entries.clone());
    let running = state.is_running(&journal.run);
    let header = unfinished.header.as_ref();
    let since = header.map(|h| h.started_at).or(journal.modified);
    RunListing {
        run: journal.run.clone(),
        header: header.map(|h| ListedHeader {
            application: h.application.to_string(),
            environment: h.environment.to_string(),
            version: h.version.to_string(),
            backend: h.backend.name.to_string(),
            requested_by: h.requested_by.clone(),
            started_at: humantime::format_rfc3339_seconds(h.started_at).to_string(),
        }),
        state: if running {
            RunState::Running
        } else if unfinished.finished.is_some() {
            RunState::Ended
        } else {
            RunState::Interrupted
        },
        age_seconds: since.and_then(|s| now.duration_since(s).ok()).map(|d| d.as_secs()),
        servers: unfinished.servers,
        warnings: journal.warnings.clone(),
        journal: journal.path.clone(),
    }
}

/// Unfinished journals for `backend` (except `except`, the caller's own run), for the warning
/// `vesemir deploy` prints at start.
pub fn unfinished_for_backend(state: &StateDir, backend: &str) -> Vec<RunListing> {
    let Ok(journals) = state.unfinished() else { return Vec::new() };
    journals
        .iter()
        .map(|j| (j, replay(j.entries.clone())))
        .filter(|(_, u)| {
            !u.is_empty() && u.header.as_ref().is_some_and(|h| h.backend.name.as_str() == backend)
        })
        .map(|(j, _)| listing(state, j, SystemTime::now()))
        .collect()
}

fn age(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) => format!("{} ago", humantime::format_duration(Duration::from_secs(s))),
        None => "age unknown".into(),
    }
}

fn print_listing(listings: &[RunListing], format: OutputFormat) {
    if format == OutputFormat::Json {
        println!("{}", serde_json::json!({ "runs": listings }));
        return;
    }
    if listings.is_empty() {
        println!("Nothing to recover: no journal left a server out.");
        return;
    }
    for (i, run) in listings.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let state = match run.state {
            RunState::Running => "RUNNING (its deploy holds the journal)",
            RunState::Interrupted => "interrupted (the process died)",
            RunState::Ended => "ended, leaving servers out",
        };
        match &run.header {
            Some(h) => println!(
                "run {}: {} {} to {} (backend {}), by {}, started {} ({}): {state}",
                run.run,
                h.application,
                h.version,
                h.environment,
                h.backend,
                h.requested_by,
                h.started_at,
                age(run.age_seconds)
            ),
            None => println!("run {} ({}): {state}, no header", run.run, age(run.age_seconds)),
        }
        println!("  journal {}", run.journal.display());
        for s in &run.servers {
            let why = match &s.pending {
                vesemir_core::journal::Pending::Interrupted => "in flight".to_owned(),
                vesemir_core::journal::Pending::LeftOut { outcome, error, .. } => match error {
                    Some(error) => format!("{outcome}: {error}"),
                    None => outcome.to_string(),
                },
            };
            println!("  {} (host {}): {why}; last change: {}", s.server, s.host, s.last_change);
            println!("    original: {}", vesemir_core::journal::describe_states(&s.original));
        }
    }
    println!("\nPut them back with `vesemir recover RUN-ID` (or `vesemir recover --all`): each server passes its health gate first.");
}

/// `vesemir recover --server URL ID`: the server puts back what deployment ID's journal left out.
pub async fn recover_remote(args: &RecoverArgs, server: &str) -> Result<Exit, Failure> {
    let id = args
        .run
        .as_deref()
        .and_then(|run| run.parse::<i64>().ok())
        .ok_or_else(|| Failure::input("with --server, give the deployment's id (a number)"))?;
    let report = crate::client::Client::new(server)?.recover(id).await?;
    print_remote_recovery(id, &report, server, args.output);
    Ok(if report.finished { Exit::Success } else { Exit::DeploymentFailed })
}

/// Shows what the server's recovery (or restore) of deployment `id` did.
pub fn print_remote_recovery(
    id: i64,
    report: &vesemir_http::wire::RecoveryReport,
    server: &str,
    output: OutputFormat,
) {
    if output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "recovery": report }));
        return;
    }
    use vesemir_http::wire::RecoveryResult;
    if report.servers.is_empty() {
        println!("deployment {id}: nothing to recover.");
    }
    for s in &report.servers {
        let what = match (s.result, s.gated) {
            (RecoveryResult::AlreadyRestored, _) => "already in its original state".to_owned(),
            (RecoveryResult::Restored, Some(false)) => {
                "back to its original state (it took no traffic, no health gate)".to_owned()
            }
            (RecoveryResult::Restored, _) => "healthy, back to its original state".to_owned(),
            (RecoveryResult::LeftOut, _) => format!("LEFT OUT: {}", s.reason.as_deref().unwrap_or("")),
        };
        println!("  {} (host {}): {what}", s.server, s.host);
    }
    if !report.finished {
        println!(
            "deployment {id}: some servers are still out ({}): fix them and run `vesemir restore --server {server} --deployment {id}` again.",
            report.out_of_rotation.join(", ")
        );
    }
}

/// Shows what a recovery (or a restore) did.
pub fn print_recovery(results: &[RunRecovery], format: OutputFormat) {
    if format == OutputFormat::Json {
        let left: usize = results
            .iter()
            .map(|r| {
                r.servers.iter().filter(|s| matches!(s.outcome, RecoveryOutcome::LeftOut { .. })).count()
            })
            .sum();
        println!("{}", serde_json::json!({ "runs": results, "left_out": left }));
        return;
    }
    if results.is_empty() {
        println!("Nothing to recover.");
        return;
    }
    for r in results {
        if let Some(reason) = &r.skipped {
            println!("run {}: not recovered: {reason}", r.run);
            continue;
        }
        println!("run {}:", r.run);
        for s in &r.servers {
            let what = match &s.outcome {
                RecoveryOutcome::AlreadyRestored => "already in its original state".to_owned(),
                RecoveryOutcome::Restored { gated: true } => "healthy, back to its original state".to_owned(),
                RecoveryOutcome::Restored { gated: false } => {
                    "back to its original state (it took no traffic, no health gate)".to_owned()
                }
                RecoveryOutcome::LeftOut { reason } => format!("LEFT OUT: {reason}"),
            };
            println!("  {} (host {}): {what}", s.server, s.host);
        }
        let left: Vec<&str> = r
            .servers
            .iter()
            .filter(|s| matches!(s.outcome, RecoveryOutcome::LeftOut { .. }))
            .map(|s| s.host.as_str())
            .collect();
        if r.finished {
            println!("  every server is back: the run's journal is finished.");
        } else if !left.is_empty() {
            println!(
                "  some servers are still out: fix them and run `vesemir restore {}` (or `vesemir recover {}`) again.",
                left.join(" "),
                r.run
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::event::{HostOutcome, Rotation};
    use vesemir_core::fake::FakeFleet;
    use vesemir_core::journal::{Done, JournalHost, JournaledLoadBalancer};
    use vesemir_core::ports::{AdminState, LbEndpoint, Operational, Weight};

    fn instances() -> Vec<LbEndpoint> {
        vec![
            LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 },
            LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9002 },
        ]
    }

    fn request_json(fleet: &FakeFleet) -> serde_json::Value {
        let hosts: Vec<String> = (1..=fleet.size)
            .map(|i| {
                format!("{{ name = \"{}\", address = \"{}\" }}", FakeFleet::host(i), FakeFleet::address(i))
            })
            .collect();
        let text = format!(
            r#"application = "shop"
environment = "production"
team = "payments"
version = "2.0.0"
requested_by = "tests"
[targets]
hosts = [{}]
[load_balancer]
backend = "be_web"
instances = [{{ address = "127.0.0.1", port = 9001 }}, {{ address = "127.0.0.1", port = 9002 }}]
[changeset]
steps = [{{ name = "install", run = "install-shop", timeout = "1m" }}]
[changeset.health]
command = "check-shop {{host}}"
timeout = "3s"
interval = "1s"
"#,
            hosts.join(", ")
        );
        serde_json::to_value(RequestSpec::from_toml(&text).expect("spec")).expect("json")
    }

    /// A run on `fleet` that took web-01 and web-02 out (web-02 found at weight 37) and died,
    /// after web-03 went through and back.
    async fn crashed_run(fleet: &FakeFleet, state: &StateDir) -> RunId {
        let run = state.new_run_id(SystemTime::now()).expect("id");
        let header = JournalHeader {
            run: run.clone(),
            application: "shop".parse().expect("name"),
            environment: "production".parse().expect("name"),
            version: "2.0.0".parse().expect("version"),
            backend: fleet.lb.backend(),
            hosts: fleet
                .hosts()
                .into_iter()
                .enumerate()
                .map(|(i, h)| JournalHost {
                    name: h.name,
                    address: h.address,
                    server: FakeFleet::server(i + 1),
                })
                .collect(),
            request: request_json(fleet),
            requested_by: "tests".into(),
            started_at: SystemTime::now(),
        };
        let writer = Arc::new(state.create(&run).expect("creates"));
        let lb = JournaledLoadBalancer::start(fleet.lb.clone(), writer.clone(), &header).expect("starts");
        let backend = fleet.lb.backend();
        for i in [1, 2, 3] {
            lb.set_state(&backend, &FakeFleet::server(i), AdminState::Drain).await.expect("drain");
            lb.set_state(&backend, &FakeFleet::server(i), AdminState::Maint).await.expect("maint");
        }
        lb.set_weight(&backend, &FakeFleet::server(3), Weight::FULL).await.expect("weight");
        lb.set_state(&backend, &FakeFleet::server(3), AdminState::Ready).await.expect("ready");
        writer
            .append(&JournalEntry::Done(Done {
                host: FakeFleet::host(3),
                server: FakeFleet::server(3),
                outcome: HostOutcome::Succeeded,
                rotation: Rotation::InRotation,
                error: None,
            }))
            .expect("done");
        // The process dies: its lock goes with it.
        drop(lb);
        drop(writer);
        run
    }

    fn ports(fleet: &FakeFleet) -> RecoveryPorts {
        RecoveryPorts {
            load_balancer: Arc::new(fleet.lb.clone()),
            executor: Arc::new(fleet.executor.clone()),
            playbooks: Playbooks::new(),
            call_timeout: Duration::from_secs(5),
            output_limit: 1024,
        }
    }

    #[test]
    fn recover_with_server_takes_a_deployment_id_and_nothing_local() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::cli::Cli::try_parse_from(args).map(|cli| cli.command);
        let parsed = parse(&["vesemir", "recover", "--server", "http://vesemir:8080", "42"]).expect("parses");
        let crate::cli::Command::Recover(args) = parsed else { panic!("not recover: {parsed:?}") };
        assert_eq!(args.server.as_deref(), Some("http://vesemir:8080"));
        assert_eq!(args.run.as_deref(), Some("42"));
        for wrong in [
            &["vesemir", "recover", "--server", "http://vesemir:8080"][..],
            &["vesemir", "recover", "--server", "http://vesemir:8080", "--list", "42"],
            &["vesemir", "recover", "--server", "http://vesemir:8080", "--all"],
        ] {
            assert!(parse(wrong).is_err(), "{wrong:?} is refused");
        }
    }

    fn args(run: Option<&RunId>, list: bool) -> RecoverArgs {
        RecoverArgs {
            run: run.map(|r| r.to_string()),
            all: false,
            list,
            output: OutputFormat::Json,
            server: None,
        }
    }

    fn fleet() -> FakeFleet {
        FakeFleet::new(3, instances())
            .starting(2, None, AdminState::Ready, Operational::Up, 37)
            .expect("initial state")
    }

    #[tokio::test]
    async fn a_crashed_run_is_listed_then_put_back_at_each_servers_own_weight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let fleet = fleet();
        let run = crashed_run(&fleet, &state).await;
        assert_eq!(fleet.lb.out_of_rotation().len(), 2);
        let journals = state.unfinished().expect("lists");
        let listed = listing(&state, &journals[0], SystemTime::now());
        assert_eq!(listed.state, RunState::Interrupted);
        let servers: Vec<&str> = listed.servers.iter().map(|s| s.server.as_str()).collect();
        assert_eq!(servers, ["web-01", "web-02"]);
        assert_eq!(
            recover(&args(None, true), &state, || panic!("listing builds no ports")).await.expect("lists"),
            Exit::Success
        );

        let exit = recover(&args(Some(&run), false), &state, || Ok(ports(&fleet))).await.expect("recovers");
        assert_eq!(exit, Exit::Success);
        assert!(fleet.lb.out_of_rotation().is_empty());
        for instance in instances() {
            let weight = |i| {
                fleet.lb.server_on(&instance, &FakeFleet::server(i)).map(|s| (s.admin, s.effective_weight()))
            };
            assert_eq!(weight(1), Some((AdminState::Ready, 100)));
            assert_eq!(weight(2), Some((AdminState::Ready, 37)), "its own weight, not 100%");
        }
        assert_eq!(
            fleet.executor.commands(&FakeFleet::host(1))[0].script,
            "check-shop 'web-01'",
            "health gate first"
        );
        assert!(state.unfinished().expect("lists").is_empty(), "the finished journal is no longer listed");
    }

    #[tokio::test]
    async fn a_server_failing_its_health_gate_is_left_out_and_stays_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let fleet = fleet();
        let run = crashed_run(&fleet, &state).await;
        fleet.executor.fail_command(&FakeFleet::host(1), "check-shop", 1);
        let exit = recover(&args(None, false), &state, || Ok(ports(&fleet))).await.expect("recovers");
        assert_eq!(exit, Exit::DeploymentFailed);
        assert_eq!(
            fleet.lb.server(&FakeFleet::server(1)).map(|s| s.admin),
            Some(AdminState::Maint),
            "left out as found"
        );
        assert_eq!(fleet.lb.server(&FakeFleet::server(2)).map(|s| s.effective_weight()), Some(37));
        let journals = state.unfinished().expect("lists");
        let left = replay(journals[0].entries.clone());
        assert_eq!(left.servers.iter().map(|s| s.server.as_str()).collect::<Vec<_>>(), ["web-01"]);
        // Fixed: a second recovery finishes the run.
        let healed =
            RecoveryPorts { executor: Arc::new(vesemir_core::fake::FakeExecutor::new()), ..ports(&fleet) };
        let exit = recover(&args(Some(&run), false), &state, || Ok(healed)).await.expect("recovers");
        assert_eq!(exit, Exit::Success);
        assert!(fleet.lb.out_of_rotation().is_empty());
        assert!(state.unfinished().expect("lists").is_empty());
    }

    #[tokio::test]
    async fn a_running_deploy_is_not_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let fleet = fleet();
        let run = state.new_run_id(SystemTime::now()).expect("id");
        let _held = state.create(&run).expect("creates");
        let exit = recover(&args(Some(&run), false), &state, || Ok(ports(&fleet))).await.expect("answers");
        assert_eq!(exit, Exit::DeploymentFailed, "an explicit run that is still running is refused");
        assert_eq!(
            recover(&args(None, false), &state, || Ok(ports(&fleet))).await.expect("answers"),
            Exit::Success
        );
        assert_eq!(state.unfinished().expect("lists").len(), 1, "left alone");
    }
}
