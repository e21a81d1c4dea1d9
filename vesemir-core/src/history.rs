//! The history of one application's deployments in one environment, and what it tells the
//! person on call: the version each host last succeeded with ([`last_succeeded`]), which hosts a
//! retry takes ([`HistoryRecord::to_retry`]), and which version a rollback returns to
//! ([`rollback_target`]). Pure: the front ends keep the records (the CLI as one file per run in
//! its state directory, the server in its store) and fold them here, newest first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::{DeploymentOutcome, HostOutcome, Phase, Rotation};
use crate::name::{AppName, EnvironmentName, HostName, Version};
use crate::report::DeploymentReport;

/// How a deployment of the history ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOutcome {
    /// It is still running (or waiting to).
    Running,
    /// Every host succeeded.
    Succeeded,
    /// Every host was tried; some failed, within the tolerated failures.
    CompletedWithFailures,
    /// Too many failures: the rest were skipped.
    Stopped,
    /// Cancelled: hosts not started were cancelled.
    Cancelled,
    /// It could not start, or its run ended on an internal error.
    Failed,
    /// Its process (or the server) died while it ran: its hosts may be out of rotation.
    Interrupted,
}

impl HistoryOutcome {
    /// Whether it has ended.
    pub fn is_finished(self) -> bool {
        self != HistoryOutcome::Running
    }
}

impl From<DeploymentOutcome> for HistoryOutcome {
    fn from(outcome: DeploymentOutcome) -> Self {
        match outcome {
            DeploymentOutcome::Succeeded => HistoryOutcome::Succeeded,
            DeploymentOutcome::CompletedWithFailures => HistoryOutcome::CompletedWithFailures,
            DeploymentOutcome::Stopped => HistoryOutcome::Stopped,
            DeploymentOutcome::Cancelled => HistoryOutcome::Cancelled,
        }
    }
}

impl fmt::Display for HistoryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HistoryOutcome::Running => "running",
            HistoryOutcome::Succeeded => "succeeded",
            HistoryOutcome::CompletedWithFailures => "completed with failures",
            HistoryOutcome::Stopped => "stopped",
            HistoryOutcome::Cancelled => "cancelled",
            HistoryOutcome::Failed => "failed",
            HistoryOutcome::Interrupted => "interrupted",
        })
    }
}

/// How one host of a recorded deployment ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    /// The host.
    pub host: HostName,
    /// How it ended (`None`: not ended, or the run was interrupted before it did).
    pub outcome: Option<HostOutcome>,
    /// Where it was, or where it failed.
    pub phase: Phase,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it took traffic when the deployment ended.
    pub rotation: Rotation,
}

/// One deployment as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// Its id where it ran: a local run id, or the server's deployment id.
    pub id: String,
    /// The application.
    pub application: AppName,
    /// The environment.
    pub environment: EnvironmentName,
    /// The version it deployed.
    pub version: Version,
    /// Who asked.
    pub requested_by: String,
    /// When it started.
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    /// When it ended.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<SystemTime>,
    /// How it ended.
    pub outcome: HistoryOutcome,
    /// Why it failed to start or was interrupted, when it did not run to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every host of its plan.
    pub hosts: Vec<HostResult>,
    /// The deployment it retried (its failed, unreachable, skipped and cancelled hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The deployment it rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// The deployment of the unit before it in a promotion chain (staging before production)
    /// whose success started this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<String>,
}

impl HistoryRecord {
    /// Every host's result from a finished run's report.
    pub fn host_results(report: &DeploymentReport) -> Vec<HostResult> {
        report
            .hosts
            .iter()
            .map(|h| HostResult {
                host: h.name.clone(),
                outcome: h.outcome,
                phase: h.phase.clone(),
                error: h.error.clone(),
                rotation: h.rotation,
            })
            .collect()
    }

    /// The hosts a retry takes: those that failed, were unreachable, skipped or cancelled, and
    /// those an interrupted run never ended.
    pub fn to_retry(&self) -> BTreeSet<HostName> {
        self.hosts
            .iter()
            .filter(|h| h.outcome != Some(HostOutcome::Succeeded))
            .map(|h| h.host.clone())
            .collect()
    }

    /// The hosts it moved to its version: those that succeeded.
    pub fn succeeded(&self) -> BTreeSet<HostName> {
        self.hosts
            .iter()
            .filter(|h| h.outcome == Some(HostOutcome::Succeeded))
            .map(|h| h.host.clone())
            .collect()
    }

    /// The hosts it changed, or may have: those that started (succeeded or failed past their
    /// connection), and those an interrupted run never ended.
    pub fn touched(&self) -> BTreeSet<HostName> {
        self.hosts
            .iter()
            .filter(|h| match h.outcome {
                Some(HostOutcome::Succeeded | HostOutcome::Failed) => true,
                Some(HostOutcome::Unreachable | HostOutcome::Skipped | HostOutcome::Cancelled) => false,
                None => h.phase != Phase::Pending,
            })
            .map(|h| h.host.clone())
            .collect()
    }
}

/// The version a host last succeeded with, and in which deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostVersion {
    /// The version.
    pub version: Version,
    /// The deployment it succeeded in.
    pub deployment: String,
}

/// The version each host last succeeded with, from `records` newest first.
pub fn last_succeeded(records: &[HistoryRecord]) -> BTreeMap<HostName, HostVersion> {
    let mut hosts = BTreeMap::new();
    for record in records {
        for host in record.succeeded() {
            hosts.entry(host).or_insert_with(|| HostVersion {
                version: record.version.clone(),
                deployment: record.id.clone(),
            });
        }
    }
    hosts
}

/// What a rollback deploys, and what it rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackTarget {
    /// The version to go back to.
    pub version: Version,
    /// The newest deployment of that version that succeeded on some host (its request is the
    /// one to deploy again).
    pub source: String,
    /// The deployment rolled back: the newest one.
    pub rollback_of: String,
}

/// Why there is nothing to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRollback {
    /// No deployment of the application in the environment is recorded.
    #[error("no deployment is recorded: nothing to roll back")]
    NoHistory,
    /// The newest deployment is still running.
    #[error("deployment {0} is still running: cancel it (or wait for it) first")]
    Running(String),
    /// No earlier version succeeded on every host of the newest deployment.
    #[error("no version before {current} succeeded on every host ({hosts}) in the recorded history: give one with --to VERSION")]
    NoPrevious {
        /// The version deployed now.
        current: Version,
        /// The hosts of the newest deployment.
        hosts: String,
    },
    /// The version asked for never succeeded on any host.
    #[error("version {0} never succeeded on any host in the recorded history")]
    UnknownVersion(Version),
}

/// The version a rollback deploys, from `records` newest first: `to` when given (it must have
/// succeeded on some host), else the newest version other than the newest deployment's that
/// succeeded on every host of the newest deployment (over all its deployments: a retry that
/// finished what its parent left counts).
pub fn rollback_target(
    records: &[HistoryRecord],
    to: Option<&Version>,
) -> Result<RollbackTarget, NoRollback> {
    let newest = records.first().ok_or(NoRollback::NoHistory)?;
    if !newest.outcome.is_finished() {
        return Err(NoRollback::Running(newest.id.clone()));
    }
    let source_of = |version: &Version| {
        records.iter().find(|r| &r.version == version && !r.succeeded().is_empty()).map(|r| r.id.clone())
    };
    if let Some(to) = to {
        let source = source_of(to).ok_or_else(|| NoRollback::UnknownVersion(to.clone()))?;
        return Ok(RollbackTarget { version: to.clone(), source, rollback_of: newest.id.clone() });
    }
    let fleet: BTreeSet<HostName> = newest.hosts.iter().map(|h| h.host.clone()).collect();
    let mut seen = BTreeSet::new();
    for record in records.iter().skip(1) {
        let version = &record.version;
        if version == &newest.version || !seen.insert(version.clone()) {
            continue;
        }
        let succeeded: BTreeSet<HostName> =
            records.iter().filter(|r| &r.version == version).flat_map(HistoryRecord::succeeded).collect();
        if !fleet.is_empty() && fleet.is_subset(&succeeded) {
            if let Some(source) = source_of(version) {
                return Ok(RollbackTarget {
                    version: version.clone(),
                    source,
                    rollback_of: newest.id.clone(),
                });
            }
        }
    }
    let hosts: Vec<&str> = fleet.iter().map(HostName::as_str).collect();
    Err(NoRollback::NoPrevious { current: newest.version.clone(), hosts: hosts.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, outcome: HostOutcome) -> HostResult {
        HostResult {
            host: HostName::new(name).expect("name"),
            outcome: Some(outcome),
            phase: Phase::Done,
            error: None,
            rotation: if outcome == HostOutcome::Succeeded {
                Rotation::InRotation
            } else {
                Rotation::OutOfRotation
            },
        }
    }

    fn record(id: &str, version: &str, outcome: HistoryOutcome, hosts: Vec<HostResult>) -> HistoryRecord {
        HistoryRecord {
            id: id.into(),
            application: AppName::new("shop").expect("name"),
            environment: EnvironmentName::new("production").expect("name"),
            version: Version::new(version).expect("version"),
            requested_by: "tests".into(),
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: Some(SystemTime::UNIX_EPOCH),
            outcome,
            error: None,
            hosts,
            retry_of: None,
            rollback_of: None,
            promoted_from: None,
        }
    }

    use HostOutcome::{Cancelled, Failed, Skipped, Succeeded, Unreachable};

    fn version(v: &str) -> Version {
        Version::new(v).expect("version")
    }

    /// Newest first: 3.0.0 stopped after web-02 failed; 2.0.0 finished by a retry of web-02;
    /// 1.0.0 everywhere.
    fn history() -> Vec<HistoryRecord> {
        vec![
            record(
                "4",
                "3.0.0",
                HistoryOutcome::Stopped,
                vec![host("web-01", Succeeded), host("web-02", Failed), host("web-03", Skipped)],
            ),
            HistoryRecord {
                retry_of: Some("2".into()),
                ..record("3", "2.0.0", HistoryOutcome::Succeeded, vec![host("web-02", Succeeded)])
            },
            record(
                "2",
                "2.0.0",
                HistoryOutcome::CompletedWithFailures,
                vec![host("web-01", Succeeded), host("web-02", Failed), host("web-03", Succeeded)],
            ),
            record(
                "1",
                "1.0.0",
                HistoryOutcome::Succeeded,
                vec![host("web-01", Succeeded), host("web-02", Succeeded), host("web-03", Succeeded)],
            ),
        ]
    }

    #[test]
    fn each_host_shows_the_version_it_last_succeeded_with() {
        let last = last_succeeded(&history());
        let shown: Vec<(String, String, String)> =
            last.iter().map(|(h, v)| (h.to_string(), v.version.to_string(), v.deployment.clone())).collect();
        assert_eq!(
            shown,
            [
                ("web-01".into(), "3.0.0".into(), "4".into()),
                ("web-02".into(), "2.0.0".into(), "3".into()),
                ("web-03".into(), "2.0.0".into(), "2".into()),
            ]
        );
    }

    #[test]
    fn a_retry_takes_every_host_that_did_not_succeed() {
        let parent = record(
            "9",
            "2.0.0",
            HistoryOutcome::Stopped,
            vec![
                host("a", Succeeded),
                host("b", Failed),
                host("c", Unreachable),
                host("d", Skipped),
                host("e", Cancelled),
            ],
        );
        let names: Vec<String> = parent.to_retry().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["b", "c", "d", "e"]);
        let touched: Vec<String> = parent.touched().iter().map(ToString::to_string).collect();
        assert_eq!(touched, ["a", "b"], "unreachable, skipped and cancelled hosts were not changed");
    }

    #[test]
    fn a_rollback_returns_to_the_newest_other_version_that_succeeded_everywhere() {
        let target = rollback_target(&history(), None).expect("a target");
        assert_eq!(target.version, version("2.0.0"), "2.0.0 succeeded on web-02 through its retry");
        assert_eq!(target.source, "3");
        assert_eq!(target.rollback_of, "4");
        // Without the retry, 2.0.0 never reached web-02: back to 1.0.0.
        let without_retry: Vec<HistoryRecord> = history().into_iter().filter(|r| r.id != "3").collect();
        assert_eq!(rollback_target(&without_retry, None).expect("a target").version, version("1.0.0"));
        // A rollback of a rollback goes forward again, like `kubectl rollout undo`.
        let mut undone = history();
        undone.insert(0, record("5", "2.0.0", HistoryOutcome::Succeeded, undone[2].hosts.clone()));
        undone[0].hosts[1] = host("web-02", Succeeded);
        assert_eq!(
            rollback_target(&undone, None).expect("a target").version,
            version("1.0.0"),
            "3.0.0 never succeeded on every host"
        );
    }

    #[test]
    fn a_rollback_names_why_it_cannot_run() {
        assert_eq!(rollback_target(&[], None), Err(NoRollback::NoHistory));
        let only = vec![history().remove(3)];
        let refused = rollback_target(&only, None).expect_err("nothing before 1.0.0");
        assert_eq!(
            refused.to_string(),
            "no version before 1.0.0 succeeded on every host (web-01, web-02, web-03) in the recorded history: give one with --to VERSION"
        );
        let mut running = history();
        running[0].outcome = HistoryOutcome::Running;
        assert_eq!(rollback_target(&running, None), Err(NoRollback::Running("4".into())));
        assert_eq!(
            rollback_target(&history(), Some(&version("0.9.0"))),
            Err(NoRollback::UnknownVersion(version("0.9.0")))
        );
        let to = rollback_target(&history(), Some(&version("1.0.0"))).expect("an explicit target");
        assert_eq!((to.version, to.source.as_str()), (version("1.0.0"), "1"));
    }
}
