//! The history of local runs (`history/<run-id>.json` in the state directory, one file per run,
//! each written atomically: a temporary file, flushed, renamed over the old one) and
//! `vesemir history APP ENV`, locally or through the server.
//!
//! A run's record is written when it starts (outcome `running`) and again when it ends. A run
//! whose record still says `running` but whose journal no deploy holds any more was killed
//! (`kill -9`, a crash): it shows as `interrupted`, its hosts' ends taken from its journal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vesemir_core::event::{HostOutcome, Phase};
use vesemir_core::history::{HistoryOutcome, HistoryRecord, HostResult};
use vesemir_core::journal::{JournalEntry, RunId};
use vesemir_http::wire::History;

use crate::exit::{Exit, Failure};
use crate::journal_file::StateDir;
use crate::output::OutputFormat;

/// A local run as its history file keeps it: the record, and the request it ran (its wire
/// form), so that `retry` and `rollback` can run it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalRun {
    /// What the history shows.
    #[serde(flatten)]
    pub record: HistoryRecord,
    /// The request as it ran (overrides applied), JSON.
    pub request: serde_json::Value,
}

impl StateDir {
    fn history_dir(&self) -> PathBuf {
        self.root().join("history")
    }

    /// Writes `run`'s record atomically: readers see the old record or the new one, never a
    /// part, whatever stops the process.
    pub fn write_history(&self, run: &LocalRun) -> Result<(), String> {
        let dir = self.history_dir();
        let error = |what: &str, e: io::Error| format!("history {}: {what}: {e}", dir.display());
        fs::create_dir_all(&dir).map_err(|e| error("cannot create the directory", e))?;
        let id = RunId::new(run.record.id.clone())?;
        let path = dir.join(format!("{id}.json"));
        let temporary = dir.join(format!(".{id}.json.tmp"));
        let bytes =
            serde_json::to_vec_pretty(run).map_err(|e| format!("cannot encode a history record: {e}"))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(|e| error("cannot create a file", e))?;
        file.write_all(&bytes).map_err(|e| error("cannot write", e))?;
        file.sync_all().map_err(|e| error("cannot flush", e))?;
        fs::rename(&temporary, &path).map_err(|e| error("cannot rename", e))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| error("cannot flush the directory", e))
    }

    /// One local run's record, as [`history`](Self::history) shows it.
    pub fn run(&self, id: &str) -> Result<LocalRun, String> {
        let id = RunId::new(id.to_owned())?;
        let path = self.history_dir().join(format!("{id}.json"));
        let run = read_run(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "no local run {id} in {} (see `vesemir history APP ENV`; a server's deployment needs --server)",
                self.root().display()
            ),
            _ => format!("{}: {e}", path.display()),
        })?;
        Ok(self.settle(run))
    }

    /// Every local run of `application` in `environment`, newest first.
    pub fn history(&self, application: &str, environment: &str) -> Result<Vec<LocalRun>, String> {
        let dir = self.history_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: cannot list: {e}", dir.display())),
        };
        let mut runs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match read_run(&path) {
                Ok(run)
                    if run.record.application.as_str() == application
                        && run.record.environment.as_str() == environment =>
                {
                    runs.push(self.settle(run))
                }
                Ok(_) => {}
                Err(e) => eprintln!("vesemir: warning: {}: {e}: ignored", path.display()),
            }
        }
        runs.sort_by(|a, b| {
            b.record.started_at.cmp(&a.record.started_at).then(b.record.id.cmp(&a.record.id))
        });
        Ok(runs)
    }

    /// A record still `running` whose deploy is gone is `interrupted`, with what its journal says.
    fn settle(&self, mut run: LocalRun) -> LocalRun {
        if run.record.outcome != HistoryOutcome::Running {
            return run;
        }
        let Ok(id) = RunId::new(run.record.id.clone()) else { return run };
        if self.is_running(&id) {
            return run;
        }
        run.record.outcome = HistoryOutcome::Interrupted;
        run.record.error = Some(format!(
            "the deploy process died while it ran: see `vesemir recover --list` for servers it left out (journal {id})"
        ));
        let path = self.path_of(&id);
        if let Ok(journal) = crate::journal_file::read(&path, id) {
            apply_journal(&mut run.record.hosts, &journal.entries);
        }
        run
    }
}

/// Each host's end as the journal's `Done` entries say; a host with intents and no `Done` was
/// in flight.
fn apply_journal(hosts: &mut [HostResult], entries: &[JournalEntry]) {
    for entry in entries {
        let (name, outcome, error, rotation) = match entry {
            JournalEntry::Intent(intent) => (&intent.host, None, None, None),
            JournalEntry::Done(done) => {
                (&done.host, Some(done.outcome), done.error.clone(), Some(done.rotation))
            }
            _ => continue,
        };
        let Some(host) = hosts.iter_mut().find(|h| &h.host == name) else { continue };
        match outcome {
            Some(outcome) => {
                host.outcome = Some(outcome);
                host.error = error;
                host.phase = Phase::Done;
            }
            None if host.outcome.is_none() => {
                host.error = Some("in flight when the deploy died".into());
                host.phase = Phase::Closing;
            }
            None => {}
        }
        if let Some(rotation) = rotation {
            host.rotation = rotation;
        }
    }
}

fn read_run(path: &Path) -> io::Result<LocalRun> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `vesemir history APP ENV`: the arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// The application.
    pub application: String,
    /// The environment.
    pub environment: String,
    /// At most this many deployments.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The history of this Vesemir server instead of local runs (token from `VESEMIR_TOKEN`).
    #[arg(long, env = "VESEMIR_SERVER")]
    pub server: Option<String>,
}

/// Runs `vesemir history`.
pub async fn history(args: &HistoryArgs) -> Result<Exit, Failure> {
    let view = match &args.server {
        Some(server) => {
            let mut view =
                crate::client::Client::new(server)?.history(&args.application, &args.environment).await?;
            view.deployments.truncate(args.limit);
            view
        }
        None => {
            let state = StateDir::locate().map_err(Failure::input)?;
            let runs = state.history(&args.application, &args.environment).map_err(Failure::input)?;
            let mut view = History::of(
                &args.application,
                &args.environment,
                runs.into_iter().map(|r| r.record).collect(),
            );
            view.deployments.truncate(args.limit);
            view
        }
    };
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string(&view).map_err(|e| Failure::input(e.to_string()))?);
    } else {
        print!("{}", describe(&view));
    }
    Ok(Exit::Success)
}

/// The history for a person.
pub fn describe(view: &History) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    if view.deployments.is_empty() {
        let _ = writeln!(text, "No deployment of {} in {} is recorded.", view.application, view.environment);
        return text;
    }
    let _ = writeln!(text, "{} in {}, newest first:", view.application, view.environment);
    for d in &view.deployments {
        let link = match (&d.retry_of, &d.rollback_of, &d.promoted_from) {
            (Some(parent), _, _) => format!("  (retry of {parent})"),
            (_, Some(parent), _) => format!("  (rollback of {parent})"),
            (_, _, Some(parent)) => format!("  (promoted from {parent})"),
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "  {}  {:12} {:24} by {}, started {}{link}",
            d.id,
            d.version.as_str(),
            d.outcome.to_string(),
            d.requested_by,
            humantime::format_rfc3339_seconds(d.started_at)
        );
        if let Some(error) = &d.error {
            let _ = writeln!(text, "      {error}");
        }
        if let Some(promotion) = view.promotions.get(&d.id) {
            let status = serde_json::to_value(promotion.status).ok();
            let status = status.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
            let deployment = promotion.deployment.map(|n| format!(" (deployment {n})")).unwrap_or_default();
            let _ = writeln!(text, "      promotion to {}: {status}{deployment}", promotion.to);
        }
        for h in d.hosts.iter().filter(|h| h.outcome != Some(HostOutcome::Succeeded)) {
            let outcome = h.outcome.map_or_else(|| "not ended".to_owned(), |o| o.to_string());
            let error = h.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            let _ = writeln!(text, "      {} {outcome} ({}){error}", h.host, h.rotation);
        }
    }
    let _ = writeln!(text, "\nEach host's last successful version:");
    for (host, v) in &view.hosts {
        let _ = writeln!(text, "  {host:20} {}  (deployment {})", v.version, v.deployment);
    }
    text
}

/// A new record for a run starting now.
pub fn started(
    id: &RunId,
    prepared: &vesemir_core::Prepared,
    started_at: std::time::SystemTime,
    links: &Links,
) -> HistoryRecord {
    let r = &prepared.request;
    HistoryRecord {
        id: id.to_string(),
        application: r.application.clone(),
        environment: r.environment.clone(),
        version: r.version.clone(),
        requested_by: r.requested_by.to_string(),
        started_at,
        finished_at: None,
        outcome: HistoryOutcome::Running,
        error: None,
        hosts: prepared
            .plan
            .hosts
            .iter()
            .map(|h| HostResult {
                host: h.host.name.clone(),
                outcome: None,
                phase: Phase::Pending,
                error: None,
                rotation: vesemir_core::event::Rotation::InRotation,
            })
            .collect(),
        retry_of: links.retry_of.clone(),
        rollback_of: links.rollback_of.clone(),
        promoted_from: None,
    }
}

/// What a deployment follows up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// The deployment it retries.
    pub retry_of: Option<String>,
    /// The deployment it rolls back.
    pub rollback_of: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use vesemir_core::event::Rotation;
    use vesemir_core::name::{AppName, EnvironmentName, HostName, Version};

    use super::*;

    fn record(id: &str, started: u64, outcome: HistoryOutcome) -> LocalRun {
        LocalRun {
            record: HistoryRecord {
                id: id.into(),
                application: AppName::new("shop").expect("name"),
                environment: EnvironmentName::new("production").expect("name"),
                version: Version::new("2.0.0").expect("version"),
                requested_by: "tests".into(),
                started_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(started),
                finished_at: None,
                outcome,
                error: None,
                hosts: vec![HostResult {
                    host: HostName::new("web-01").expect("name"),
                    outcome: None,
                    phase: Phase::Pending,
                    error: None,
                    rotation: Rotation::InRotation,
                }],
                retry_of: None,
                rollback_of: None,
                promoted_from: None,
            },
            request: serde_json::json!({ "version": "2.0.0" }),
        }
    }

    #[test]
    fn records_are_replaced_atomically_and_listed_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        state.write_history(&record("run-1", 10, HistoryOutcome::Succeeded)).expect("writes");
        state.write_history(&record("run-2", 20, HistoryOutcome::Running)).expect("writes");
        let mut ended = record("run-2", 20, HistoryOutcome::Stopped);
        ended.record.hosts[0].outcome = Some(HostOutcome::Failed);
        state.write_history(&ended).expect("replaces");
        let names: Vec<String> = fs::read_dir(dir.path().join("history"))
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        let runs = state.history("shop", "production").expect("reads");
        let shown: Vec<(&str, HistoryOutcome)> =
            runs.iter().map(|r| (r.record.id.as_str(), r.record.outcome)).collect();
        assert_eq!(shown, [("run-2", HistoryOutcome::Stopped), ("run-1", HistoryOutcome::Succeeded)]);
        assert!(state.history("shop", "staging").expect("reads").is_empty());
    }

    #[test]
    fn a_running_record_whose_deploy_died_shows_as_interrupted_with_its_journal() {
        use vesemir_core::journal::{Done, JournalWriter};
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let id = RunId::new("killed").expect("id");
        state.write_history(&record("killed", 10, HistoryOutcome::Running)).expect("writes");
        let journal = state.create(&id).expect("creates");
        assert_eq!(
            state.run("killed").expect("reads").record.outcome,
            HistoryOutcome::Running,
            "its deploy holds the journal"
        );
        journal
            .append(&JournalEntry::Done(Done {
                host: HostName::new("web-01").expect("name"),
                server: vesemir_core::name::ServerName::new("web-01").expect("name"),
                outcome: HostOutcome::Failed,
                rotation: Rotation::OutOfRotation,
                error: Some("health check failed".into()),
            }))
            .expect("appends");
        drop(journal);
        let run = state.run("killed").expect("reads");
        assert_eq!(run.record.outcome, HistoryOutcome::Interrupted);
        assert_eq!(run.record.hosts[0].outcome, Some(HostOutcome::Failed));
        assert_eq!(run.record.hosts[0].rotation, Rotation::OutOfRotation);
        assert!(state.run("nothing").expect_err("unknown").contains("no local run nothing"));
    }
}
