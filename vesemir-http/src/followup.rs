//! After something went wrong, on the server: the history of an application in an environment
//! (the core's fold over stored deployments), and the follow-up deployments: a retry of the
//! hosts a deployment did not finish, a rollback to the previous version (asked for, or after a
//! deployment with `strategy.on_failure = "rollback"` stopped on its failures).
//!
//! A follow-up is an ordinary deployment (admission, queue, journal, events) whose [`Origin`]
//! says what it follows: the hosts it is limited to, and the deployment whose left-out servers it
//! takes as they are (`servers_not_in_rotation = "include"`) and puts back once deployed.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use vesemir_core::event::HostOutcome;
use vesemir_core::history::{rollback_target, HistoryOutcome, HistoryRecord, HostResult, NoRollback};
use vesemir_core::name::{AppName, EnvironmentName, HostName, Version};
use vesemir_core::request::spec::RequestSpec;
use vesemir_core::request::{InlineChangesets, RawQueries, RequestPolicy, ValidationErrors};
use vesemir_core::PrepareError;

use crate::api::App;
use crate::catalog::MASK;
use crate::clock::now_ms;
use crate::runner::{SubmitError, Submitted};
use crate::store::{
    DeploymentRecord, HostRecord, ListFilter, NewDeployment, Origin, Status, Store, StoreError,
};

/// How many deployments the history reads at most.
pub const HISTORY_LIMIT: i64 = 200;

/// Why a follow-up was not started.
#[derive(Debug, thiserror::Error)]
pub enum FollowUpError {
    /// The deployment followed up on has not ended.
    #[error("deployment {0} is {1}: wait for it to end, or cancel it, first")]
    NotFinished(i64, Status),
    /// Every host of the deployment succeeded.
    #[error("every host of deployment {0} succeeded: nothing to retry")]
    NothingToRetry(i64),
    /// The history gives no version to roll back to.
    #[error("{0}")]
    NoRollback(#[from] NoRollback),
    /// The recorded request, edited, does not validate on this server any more.
    #[error("the request of deployment {0}, edited, does not validate on this server: {1}")]
    Invalid(i64, ValidationErrors),
    /// The ports for it could not be made.
    #[error("{0}")]
    Ports(String),
    /// A secret variable of the deployment is not stored (`***`) and the follow-up does not
    /// give its value: it is not run with `***`.
    #[error(
        "deployment {0}'s value of the secret variable {1} is not stored (only ***): give it in the body's variables to run it again"
    )]
    SecretNotStored(i64, String),
    /// The fleet's real state refuses it.
    #[error(transparent)]
    Refused(PrepareError),
    /// Admission refused it (another deployment running, the queue full).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored deployment as the history shows it (`None` for a record whose names no longer
/// parse, which validation at admission rules out).
pub fn history_record(
    d: &DeploymentRecord,
    hosts: &[HostRecord],
    origin: Option<&Origin>,
) -> Option<HistoryRecord> {
    let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let outcome = match d.status {
        Status::Queued | Status::Running => HistoryOutcome::Running,
        Status::Succeeded => HistoryOutcome::Succeeded,
        Status::CompletedWithFailures => HistoryOutcome::CompletedWithFailures,
        Status::Stopped => HistoryOutcome::Stopped,
        Status::Cancelled => HistoryOutcome::Cancelled,
        Status::Failed => HistoryOutcome::Failed,
        Status::Interrupted => HistoryOutcome::Interrupted,
    };
    Some(HistoryRecord {
        id: d.id.to_string(),
        application: AppName::new(&d.application).ok()?,
        environment: EnvironmentName::new(&d.environment).ok()?,
        version: Version::new(&d.version).ok()?,
        requested_by: d.requested_by.clone(),
        started_at: at(d.started_ms.unwrap_or(d.created_ms)),
        finished_at: d.finished_ms.map(at),
        outcome,
        error: d.error.clone(),
        hosts: hosts
            .iter()
            .map(|h| HostResult {
                host: h.state.name.clone(),
                outcome: h.state.outcome,
                phase: h.state.phase.clone(),
                error: h.state.error.clone(),
                rotation: h.state.rotation,
            })
            .collect(),
        retry_of: origin.and_then(|o| o.retry_of).map(|id| id.to_string()),
        rollback_of: origin.and_then(|o| o.rollback_of).map(|id| id.to_string()),
        promoted_from: None,
    })
}

/// The deployments of `application` in `environment`, newest first, with the stored records.
pub async fn history(
    store: &dyn Store,
    application: &str,
    environment: &str,
) -> Result<Vec<(DeploymentRecord, HistoryRecord)>, StoreError> {
    let filter = ListFilter {
        application: Some(application.to_owned()),
        environment: Some(environment.to_owned()),
        limit: HISTORY_LIMIT,
        ..ListFilter::default()
    };
    let mut records = Vec::new();
    for d in store.list(&filter).await? {
        let hosts = store.hosts(d.id).await?;
        let origin = store.origin(d.id).await?;
        if let Some(mut record) = history_record(&d, &hosts, origin.as_ref()) {
            record.promoted_from = store.promoted_from(d.id).await?.map(|id| id.to_string());
            records.push((d, record));
        }
    }
    Ok(records)
}

/// Edits of a recorded request for a follow-up.
#[derive(Debug, Default)]
pub struct Edits {
    /// A new version.
    pub version: Option<String>,
    /// A new `strategy.concurrency`.
    pub concurrency: Option<serde_json::Value>,
    /// Variables to change.
    pub variables: std::collections::BTreeMap<String, String>,
    /// Take servers left out as they are.
    pub include_not_in_rotation: bool,
}

/// The hosts whose servers deployment `id`'s journal left out.
async fn left_out_hosts(store: &dyn Store, id: i64) -> Result<BTreeSet<String>, StoreError> {
    let unfinished = vesemir_core::journal::replay(store.journal(id).await?);
    Ok(unfinished.servers.into_iter().map(|s| s.host.to_string()).collect())
}

/// How a follow-up of `candidates` runs when its parent left `left` out: first the hosts it left
/// out (taken as they are, then put back: they count against no budget after that), then, once
/// that succeeded, the others. Answers the first deployment's hosts, whether it resumes the
/// parent's servers, and the second deployment's hosts.
fn phases(candidates: &[String], left: &BTreeSet<String>) -> (Vec<String>, bool, Option<Vec<String>>) {
    let (first, rest): (Vec<String>, Vec<String>) =
        candidates.iter().cloned().partition(|h| left.contains(h));
    if first.is_empty() {
        (rest, false, None)
    } else {
        (first, true, (!rest.is_empty()).then_some(rest))
    }
}

/// Starts a follow-up of `parent` (whose request it runs, edited), asked by `requested_by`.
pub async fn submit(
    app: &App,
    parent: &DeploymentRecord,
    edits: Edits,
    requested_by: &str,
    origin: Origin,
) -> Result<i64, FollowUpError> {
    let unit = app
        .catalog
        .follow_up_variables(&parent.team, &parent.application, &parent.environment, &edits.variables)
        .map_err(|e| FollowUpError::Invalid(parent.id, e))?;
    let mut json: serde_json::Value = serde_json::from_str(&parent.request).map_err(|e| {
        FollowUpError::Ports(format!("the request of deployment {} cannot be read: {e}", parent.id))
    })?;
    if let Some(object) = json.as_object_mut() {
        if let Some(version) = edits.version {
            object.insert("version".into(), version.into());
        }
        object.insert("requested_by".into(), requested_by.into());
        let strategy = object.entry("strategy").or_insert_with(|| serde_json::json!({}));
        if let (Some(concurrency), Some(strategy)) = (edits.concurrency, strategy.as_object_mut()) {
            strategy.insert("concurrency".into(), concurrency);
        }
        if !edits.variables.is_empty() {
            let variables = object.entry("variables").or_insert_with(|| serde_json::json!({}));
            if let Some(variables) = variables.as_object_mut() {
                for (k, v) in edits.variables {
                    variables.insert(k, v.into());
                }
            }
        }
        if edits.include_not_in_rotation {
            if let Some(lb) = object.get_mut("load_balancer").and_then(|lb| lb.as_object_mut()) {
                lb.insert("servers_not_in_rotation".into(), "include".into());
            }
        }
    }
    let text = json.to_string();
    let spec = RequestSpec::from_json(&text).map_err(|e| FollowUpError::Invalid(parent.id, e))?;
    // Secret variables run with their values (given in the edits), and are stored masked again.
    let mut stored = spec.clone();
    let mut secrets = Vec::new();
    for (name, value) in &mut stored.variables {
        if !unit.secret.contains(name) {
            continue;
        }
        if value == MASK {
            return Err(FollowUpError::SecretNotStored(parent.id, name.clone()));
        }
        secrets.push(std::mem::replace(value, MASK.to_owned()));
    }
    secrets.retain(|s| !s.is_empty());
    let policy = RequestPolicy {
        playbooks: &app.playbooks,
        inline_changesets: InlineChangesets::Refused,
        raw_queries: RawQueries::Refused,
    };
    let request = spec.validate(&policy).map_err(|e| FollowUpError::Invalid(parent.id, e))?;
    let ports = app.factory.ports(&request).map_err(|e| FollowUpError::Ports(e.to_string()))?;
    let only =
        origin.only_hosts.as_ref().map(|hosts| hosts.iter().filter_map(|h| HostName::new(h).ok()).collect());
    app.runner.precheck_hosts(&request, &ports, only).await.map_err(FollowUpError::Refused)?;
    let new = NewDeployment {
        application: request.application.to_string(),
        environment: request.environment.to_string(),
        team: request.team.to_string(),
        version: request.version.to_string(),
        requested_by: requested_by.to_owned(),
        playbook: request.playbook.as_ref().map(ToString::to_string),
        query: parent.query.clone(),
        request: serde_json::to_string(&stored).unwrap_or_default(),
        idempotency_key: None,
        body_sha256: crate::auth::sha256_hex(text.as_bytes()),
        created_ms: now_ms(),
    };
    match app.runner.submit_with(request, ports, new, origin, secrets).await? {
        Submitted::New(id) => Ok(id),
        Submitted::Existing(record) => Ok(record.id),
    }
}

/// A retry of `parent`'s hosts that did not succeed.
pub async fn retry(
    app: &App,
    parent: &DeploymentRecord,
    concurrency: Option<serde_json::Value>,
    variables: std::collections::BTreeMap<String, String>,
    requested_by: &str,
) -> Result<i64, FollowUpError> {
    if !parent.status.is_finished() {
        return Err(FollowUpError::NotFinished(parent.id, parent.status));
    }
    let hosts = app.store.hosts(parent.id).await?;
    let retry: Vec<String> = hosts
        .iter()
        .filter(|h| h.state.outcome != Some(HostOutcome::Succeeded))
        .map(|h| h.state.name.to_string())
        .collect();
    if retry.is_empty() {
        return Err(FollowUpError::NothingToRetry(parent.id));
    }
    let left = left_out_hosts(&*app.store, parent.id).await?;
    let (first, resume, then) = phases(&retry, &left);
    let edits = Edits { concurrency, variables, include_not_in_rotation: resume, ..Edits::default() };
    let origin = Origin {
        retry_of: Some(parent.id),
        only_hosts: Some(first),
        resume: resume.then_some(parent.id),
        then_hosts: then,
        ..Origin::default()
    };
    submit(app, parent, edits, requested_by, origin).await
}

/// A rollback of `application` in `environment` to `to` (or the history's choice), of `only`
/// hosts (all when `None`).
pub async fn rollback(
    app: &App,
    history: &[(DeploymentRecord, HistoryRecord)],
    to: Option<&Version>,
    only: Option<Vec<String>>,
    requested_by: &str,
) -> Result<i64, FollowUpError> {
    let records: Vec<HistoryRecord> = history.iter().map(|(_, r)| r.clone()).collect();
    let target = rollback_target(&records, to)?;
    let by_id = |id: &str| history.iter().find(|(d, _)| d.id.to_string() == id).map(|(d, _)| d);
    let (Some(source), Some(newest)) = (by_id(&target.source), by_id(&target.rollback_of)) else {
        return Err(FollowUpError::NoRollback(NoRollback::NoHistory));
    };
    let left = left_out_hosts(&*app.store, newest.id).await?;
    let (only, resume, then) = if left.is_empty() {
        (only, false, None)
    } else {
        let candidates = match only {
            Some(only) => only,
            None => app.store.hosts(newest.id).await?.iter().map(|h| h.state.name.to_string()).collect(),
        };
        let (first, resume, then) = phases(&candidates, &left);
        (Some(first), resume, then)
    };
    let edits = Edits {
        version: Some(target.version.to_string()),
        include_not_in_rotation: resume,
        ..Edits::default()
    };
    let origin = Origin {
        rollback_of: Some(newest.id),
        only_hosts: only,
        resume: resume.then_some(newest.id),
        then_hosts: then,
        ..Origin::default()
    };
    submit(app, source, edits, requested_by, origin).await
}

/// After deployment `id` ended: with `strategy.on_failure = "rollback"` and stopped on its
/// failures, the hosts it changed go back to the previous version (a follow-up linked to it,
/// asked by its requester). When there is none, the deployment's `error` says why.
pub async fn after_end(app: std::sync::Arc<App>, id: i64) {
    let Ok(Some(record)) = app.store.get(id).await else { return };
    let origin = app.store.origin(id).await.ok().flatten();
    if let Some(then) = origin.as_ref().and_then(|o| o.then_hosts.clone()) {
        return second_phase(&app, &record, origin.unwrap_or_default(), then).await;
    }
    if record.status != Status::Stopped {
        return;
    }
    let wants_rollback = RequestSpec::from_json(&record.request)
        .ok()
        .and_then(|spec| spec.strategy.on_failure)
        .is_some_and(|on| on == "rollback");
    if !wants_rollback || origin.as_ref().is_some_and(|o| o.rollback_of.is_some()) {
        return;
    }
    let hosts = app.store.hosts(id).await.unwrap_or_default();
    let touched: BTreeSet<String> = hosts
        .iter()
        .filter(|h| matches!(h.state.outcome, Some(HostOutcome::Succeeded | HostOutcome::Failed)))
        .map(|h| h.state.name.to_string())
        .collect();
    let outcome = if touched.is_empty() {
        Err("the deployment changed no host".to_owned())
    } else {
        match history(&*app.store, &record.application, &record.environment).await {
            Ok(history) => {
                rollback(&app, &history, None, Some(touched.into_iter().collect()), &record.requested_by)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    let note = match outcome {
        Ok(follow_up) => {
            tracing::info!(deployment = id, rollback = follow_up, "on_failure = rollback: rolling back");
            format!(
                "stopped on its failures; on_failure = \"rollback\": rolled back by deployment {follow_up}"
            )
        }
        Err(reason) => {
            tracing::warn!(deployment = id, %reason, "on_failure = rollback: no rollback");
            format!("stopped on its failures; on_failure = \"rollback\": no rollback: {reason}; the failure is left as it is")
        }
    };
    note_on(&app, &record, &note).await;
}

/// Adds `note` to an ended deployment's `error`.
async fn note_on(app: &App, record: &DeploymentRecord, note: &str) {
    let error = match &record.error {
        Some(error) => format!("{error}; {note}"),
        None => note.to_owned(),
    };
    if let Err(e) = app.store.set_error(record.id, &error).await {
        tracing::error!(deployment = record.id, error = %e, "could not record what followed the deployment");
    }
}

/// The second deployment of a follow-up whose first one (`first`, the servers its parent had
/// left out) ended: the other hosts, once it succeeded.
async fn second_phase(app: &App, first: &DeploymentRecord, origin: Origin, then: Vec<String>) {
    let hosts = then.join(", ");
    if first.status != Status::Succeeded {
        let note =
            format!("the other hosts ({hosts}) were not started: retry this deployment once it is fixed");
        return note_on(app, first, &note).await;
    }
    let origin = Origin { only_hosts: Some(then), resume: None, then_hosts: None, ..origin };
    let note = match submit(app, first, Edits::default(), &first.requested_by, origin).await {
        Ok(next) => format!("the other hosts ({hosts}) go on in deployment {next}"),
        Err(e) => format!("the other hosts ({hosts}) were not started: {e}"),
    };
    note_on(app, first, &note).await;
}
