//! The API's JSON bodies, converted explicitly from stored records: the wire shape is chosen
//! here, not inherited from internals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vesemir_core::event::{HostOutcome, Phase, Rotation};

use crate::runner::LiveState;
use crate::store::{DeploymentRecord, HostRecord, Status};

/// Links to a deployment's resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// The deployment's own URL path.
    #[serde(rename = "self")]
    pub self_: String,
    /// Its server-sent events.
    pub events: String,
    /// Where to POST to cancel it.
    pub cancel: String,
    /// Where to POST to pause it: while it is queued or running and not paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<String>,
    /// Where to POST to resume it: while it is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Where to POST to confirm its canary: while the canary waits for confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// Where to POST to retry the hosts it did not finish: once it ended with some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Where to POST to put back the servers it left out of rotation: once it ended with some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Where to POST to roll its application and environment back to the previous version:
    /// once it ended having changed some host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

impl Links {
    /// The links of deployment `id` (without the ones that depend on its live state).
    pub fn of(id: i64) -> Self {
        Self {
            self_: format!("/v1/deployments/{id}"),
            events: format!("/v1/deployments/{id}/events"),
            cancel: format!("/v1/deployments/{id}/cancel"),
            pause: None,
            resume: None,
            confirm: None,
            retry: None,
            restore: None,
            rollback: None,
        }
    }

    /// Adds the links that apply to an ended deployment: retry (some host did not succeed),
    /// restore (some host is out of rotation), rollback (some host was changed).
    pub fn with_follow_ups(mut self, d: &DeploymentRecord, hosts: &[HostRecord]) -> Self {
        if !d.status.is_finished() {
            return self;
        }
        let id = d.id;
        if hosts.iter().any(|h| h.state.outcome != Some(HostOutcome::Succeeded)) {
            self.retry = Some(format!("/v1/deployments/{id}/retry"));
        }
        if !d.out_of_rotation.is_empty() || hosts.iter().any(|h| h.state.rotation != Rotation::InRotation) {
            self.restore = Some(format!("/v1/deployments/{id}/restore"));
        }
        if hosts.iter().any(|h| matches!(h.state.outcome, Some(HostOutcome::Succeeded | HostOutcome::Failed)))
        {
            self.rollback =
                Some(format!("/v1/applications/{}/environments/{}/rollback", d.application, d.environment));
        }
        self
    }

    /// Adds the links that apply to a queued or running deployment in `live` state.
    pub fn with_live(mut self, id: i64, live: LiveState) -> Self {
        let link = |order: &str| Some(format!("/v1/deployments/{id}/{order}"));
        if live.paused {
            self.resume = link("resume");
        } else {
            self.pause = link("pause");
        }
        if live.waiting_for_confirmation {
            self.confirm = link("confirm");
        }
        self
    }
}

/// Answer to an accepted deployment (202), or to a repeated `Idempotency-Key` (200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// The deployment's id: read it at `links.self`.
    pub id: i64,
    /// Its status now (`queued` for a new one).
    pub status: Status,
    /// Who asked: the token's configured name.
    pub requested_by: String,
    /// Where to read, follow and cancel it.
    pub links: Links,
}

/// Host counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Deployed and back in rotation.
    pub succeeded: u64,
    /// Hosts whose deployment failed (left out of rotation when the changeset had started).
    pub failed: u64,
    /// Hosts that could not be reached; nothing was changed on them.
    pub unreachable: u64,
    /// Not started: the rollout stopped.
    pub skipped: u64,
    /// Not started: cancelled.
    pub cancelled: u64,
}

/// When things happened (RFC 3339, UTC) and how long they took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// When the deployment was accepted.
    pub created_at: String,
    /// Started running (left the queue).
    pub started_at: Option<String>,
    /// When it ended (null while queued or running).
    pub finished_at: Option<String>,
    /// Seconds spent queued.
    pub queued_seconds: Option<f64>,
    /// Seconds from start to end (or to now, while running).
    pub duration_seconds: Option<f64>,
}

/// One host's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostResult {
    /// The host's name.
    pub name: String,
    /// The address SSH and the load balancer know the host by.
    pub address: String,
    /// The host's server in the load balancer backend.
    pub server: String,
    /// How the host ended; null while it runs.
    #[schema(value_type = Option<HostOutcomeSchema>)]
    pub outcome: Option<HostOutcome>,
    /// Where it is, or where it failed, as people read it: `draining`, `step 1 (install)`...
    #[serde(with = "crate::phase_text")]
    #[schema(value_type = String)]
    pub phase: Phase,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether the host takes traffic, as far as Vesemir knows.
    #[schema(value_type = RotationSchema)]
    pub rotation: Rotation,
    /// Seconds from the deployment's start to this host's start.
    pub started_seconds: Option<f64>,
    /// Seconds from the deployment's start to this host's end.
    pub finished_seconds: Option<f64>,
}

/// A deployment, in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The deployment's id, increasing with each accepted deployment.
    pub id: i64,
    /// The application deployed, as named in the request.
    pub application: String,
    /// The environment deployed to (`production`, `staging`...).
    pub environment: String,
    /// The team owning the application.
    pub team: String,
    /// The version deployed, as the request gave it.
    pub version: String,
    /// Who asked (the token's name).
    pub requested_by: String,
    /// The server-configured playbook the request picked.
    pub playbook: Option<String>,
    /// How the hosts were found.
    pub query: String,
    /// Where the deployment is in its life (`queued`, `running`, `succeeded`...).
    pub status: Status,
    /// Whether an operator paused it (queued or running, no new host starts until resumed).
    #[serde(default)]
    pub paused: bool,
    /// Why it failed to start, or was interrupted.
    pub error: Option<String>,
    /// Whether a cancel was asked for.
    pub cancel_requested: bool,
    /// Hosts in the plan (null until planned).
    pub host_count: Option<i64>,
    /// Host counts by outcome, once finished.
    pub totals: Option<Totals>,
    /// After an interruption: hosts that may be out of rotation, to check by hand.
    pub out_of_rotation: Vec<String>,
    /// When it was accepted, started and ended, and how long it queued and ran.
    pub timings: Timings,
    /// Every host, in plan order (empty in lists).
    pub hosts: Vec<HostResult>,
    /// Where to read, follow and cancel it.
    pub links: Links,
    /// Its promotion to the next unit (`promote_to`), once it has one: in a single
    /// deployment's answer, not in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
}

/// A page of deployments, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentList {
    /// The deployments (without their hosts).
    pub deployments: Vec<Deployment>,
    /// The next page, if there may be one.
    pub next: Option<String>,
}

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// Where, e.g. `strategy.concurrency`, or `(document)`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Every error answer: RFC 9457 problem details (`application/problem+json`), with the
/// per-field problems and, on a 409 for a second deployment, the one running as extension
/// members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProblemDetails, example = json!({
    "type": "about:blank",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "strategy.concurrency: 0 is below the minimum of 1",
    "instance": "/v1/deployments",
    "problems": [{ "field": "strategy.concurrency", "message": "0 is below the minimum of 1" }]
}))]
pub struct ErrorBody {
    /// The problem type: `about:blank` (the status says it all; `title` is its phrase).
    #[serde(rename = "type", default = "about_blank")]
    pub type_: String,
    /// The HTTP status's phrase, e.g. `Unprocessable Entity`.
    pub title: String,
    /// The HTTP status code, as answered.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong and what to do.
    pub detail: String,
    /// The request's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Problems by field (validation errors), each with where and what: an extension member.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// On 409 for a second deployment of an application and environment: the one queued or
    /// running (an extension member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Accepted>,
}

/// The problem type of every error answer.
pub const ABOUT_BLANK: &str = "about:blank";

fn about_blank() -> String {
    ABOUT_BLANK.to_owned()
}

impl ErrorBody {
    /// A problem of `status` saying `detail`, with no per-field problems.
    pub fn new(status: axum::http::StatusCode, detail: impl Into<String>) -> Self {
        Self {
            type_: about_blank(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            problems: Vec::new(),
            running: None,
        }
    }
}

/// Health and readiness answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn seconds(ms: i64) -> f64 {
    // Millisecond counts of deployments fit f64 exactly.
    #[allow(clippy::cast_precision_loss)]
    let s = ms as f64 / 1000.0;
    s
}

/// Seconds of a duration counted in whole milliseconds, as stored.
fn duration_seconds(d: std::time::Duration) -> f64 {
    seconds(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Deployment {
    /// Converts a stored deployment and its hosts; `now_ms` bounds a running deployment's
    /// duration.
    pub fn from_record(d: &DeploymentRecord, hosts: &[HostRecord], now_ms: i64) -> Self {
        let totals = d.totals.map(Totals::from);
        let end = d.finished_ms.unwrap_or(now_ms);
        Self {
            id: d.id,
            application: d.application.clone(),
            environment: d.environment.clone(),
            team: d.team.clone(),
            version: d.version.clone(),
            requested_by: d.requested_by.clone(),
            playbook: d.playbook.clone(),
            query: d.query.clone(),
            status: d.status,
            paused: false,
            error: d.error.as_deref().map(crate::server_paths::hidden),
            cancel_requested: d.cancel_requested,
            host_count: d.host_count,
            totals,
            out_of_rotation: d.out_of_rotation.clone(),
            timings: Timings {
                created_at: rfc3339(d.created_ms),
                started_at: d.started_ms.map(rfc3339),
                finished_at: d.finished_ms.map(rfc3339),
                queued_seconds: d.started_ms.map(|s| seconds(s - d.created_ms)),
                duration_seconds: d.started_ms.map(|s| seconds((end - s).max(0))),
            },
            hosts: hosts.iter().map(HostResult::from_record).collect(),
            links: Links::of(d.id).with_follow_ups(d, hosts),
            promotion: None,
        }
    }

    /// Adds what only the running server knows of a queued or running deployment: whether it is
    /// paused, and the links to pause, resume or confirm it that apply. `None` (ended) changes
    /// nothing.
    pub fn with_live(mut self, live: Option<LiveState>) -> Self {
        if let Some(live) = live {
            self.paused = live.paused;
            self.links = self.links.with_live(self.id, live);
        }
        self
    }
}

impl HostResult {
    /// Converts a stored host.
    pub fn from_record(h: &HostRecord) -> Self {
        let state = &h.state;
        Self {
            name: state.name.to_string(),
            address: h.address.clone(),
            server: h.server.clone(),
            outcome: state.outcome,
            phase: state.phase.clone(),
            error: state.error.as_deref().map(crate::server_paths::hidden),
            rotation: state.rotation,
            started_seconds: state.started.map(duration_seconds),
            finished_seconds: state.finished.map(duration_seconds),
        }
    }
}

impl From<vesemir_core::event::Totals> for Totals {
    fn from(t: vesemir_core::event::Totals) -> Self {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            succeeded: count(t.succeeded),
            failed: count(t.failed),
            unreachable: count(t.unreachable),
            skipped: count(t.skipped),
            cancelled: count(t.cancelled),
        }
    }
}

impl Accepted {
    /// The short form of a stored deployment.
    pub fn from_record(d: &DeploymentRecord) -> Self {
        Self { id: d.id, status: d.status, requested_by: d.requested_by.clone(), links: Links::of(d.id) }
    }
}

/// What a recovery did for one server: `already_restored` (nothing to change), `restored`
/// (put back to its original state on every load balancer instance), `left_out` (it failed its
/// health gate, or a load balancer call failed: it is left as found, `reason` says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryResult {
    /// It already was in its original state everywhere: nothing was changed.
    AlreadyRestored,
    /// It was put back to its original admin state and weight on every instance.
    Restored,
    /// It is left out of rotation, as found.
    LeftOut,
}

/// One server a deployment's journal had left out, and what the recovery did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRecoveryResult {
    /// The server's host.
    pub host: String,
    /// The server in the load balancer backend.
    pub server: String,
    /// What was done.
    pub result: RecoveryResult,
    /// For `restored`: whether it passed the health gate first (it went back into rotation);
    /// false when its original state takes no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gated: Option<bool>,
    /// For `left_out`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ServerRecoveryResult {
    /// The wire form of one server's recovery.
    pub fn from_recovery(server: &crate::journal::ServerRecovery) -> Self {
        use vesemir_core::journal::RecoveryOutcome;
        let (result, gated, reason) = match &server.outcome {
            RecoveryOutcome::AlreadyRestored => (RecoveryResult::AlreadyRestored, None, None),
            RecoveryOutcome::Restored { gated } => (RecoveryResult::Restored, Some(*gated), None),
            RecoveryOutcome::LeftOut { reason } => {
                (RecoveryResult::LeftOut, None, Some(crate::server_paths::hidden(reason)))
            }
        };
        Self { host: server.host.clone(), server: server.server.clone(), result, gated, reason }
    }
}

/// Answer to `POST /v1/deployments/{id}/recover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryReport {
    /// The deployment.
    pub id: i64,
    /// Each server its journal had left out, in the order the deployment first changed them.
    pub servers: Vec<ServerRecoveryResult>,
    /// Hosts still out of rotation after it (the deployment's `out_of_rotation` now).
    pub out_of_rotation: Vec<String>,
    /// Whether nothing is left to put back.
    pub finished: bool,
}

impl RecoveryReport {
    /// The wire form of deployment `id`'s recovery.
    pub fn from_recovery(id: i64, recovery: &crate::journal::DeploymentRecovery) -> Self {
        Self {
            id,
            servers: recovery.servers.iter().map(ServerRecoveryResult::from_recovery).collect(),
            out_of_rotation: recovery.out_of_rotation.clone(),
            finished: recovery.finished,
        }
    }
}

/// How a host ended: the JSON of the core's [`HostOutcome`], for the OpenAPI document only (the
/// core has no utoipa; a test keeps the two equal).
#[derive(ToSchema)]
#[schema(as = HostOutcome, rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the wire types hold the core's HostOutcome")]
pub(crate) enum HostOutcomeSchema {
    /// Deployed, healthy, back at full weight.
    Succeeded,
    /// Something failed; the error says what, the phase says where.
    Failed,
    /// Could not be reached; nothing was changed on it.
    Unreachable,
    /// Not started because the rollout stopped (too many failures, or no capacity left).
    Skipped,
    /// Not started, or stopped, because the deployment was cancelled.
    Cancelled,
}

/// Whether a host takes traffic: the JSON of the core's [`Rotation`], for the OpenAPI document
/// only (the core has no utoipa; a test keeps the two equal).
#[derive(ToSchema)]
#[schema(as = Rotation, rename_all = "snake_case")]
#[expect(dead_code, reason = "a schema only: the wire types hold the core's Rotation")]
pub(crate) enum RotationSchema {
    /// Ready with a weight above 0 on every load balancer (as far as Vesemir changed it).
    InRotation,
    /// Drained, in maintenance, or at weight 0.
    OutOfRotation,
    /// A load balancer call did not answer: check the host by hand.
    Unknown,
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// The `enum` values of a schema.
    fn values<S: PartialSchema>() -> serde_json::Value {
        serde_json::to_value(S::schema()).expect("a schema serializes")["enum"].clone()
    }

    #[test]
    fn the_schema_enums_list_the_core_enums_json() {
        // Fails to compile when the core adds a variant: add it here and to the schema enum.
        let outcomes = |o: HostOutcome| match o {
            HostOutcome::Succeeded
            | HostOutcome::Failed
            | HostOutcome::Unreachable
            | HostOutcome::Skipped
            | HostOutcome::Cancelled => o,
        };
        let rotations = |r: Rotation| match r {
            Rotation::InRotation | Rotation::OutOfRotation | Rotation::Unknown => r,
        };
        let every_outcome = [
            HostOutcome::Succeeded,
            HostOutcome::Failed,
            HostOutcome::Unreachable,
            HostOutcome::Skipped,
            HostOutcome::Cancelled,
        ]
        .map(outcomes);
        let every_rotation =
            [Rotation::InRotation, Rotation::OutOfRotation, Rotation::Unknown].map(rotations);
        assert_eq!(values::<HostOutcomeSchema>(), serde_json::to_value(every_outcome).expect("json"));
        assert_eq!(values::<RotationSchema>(), serde_json::to_value(every_rotation).expect("json"));
    }
}

/// The history of an application in an environment: its deployments newest first, each host's
/// result, and the version each host last succeeded with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// The application.
    pub application: String,
    /// The environment.
    pub environment: String,
    /// Newest first: `id`, `version`, `requested_by`, `started_at`, `finished_at`, `outcome`
    /// (`running`, `succeeded`, `completed_with_failures`, `stopped`, `cancelled`, `failed`,
    /// `interrupted`), `error`, `hosts` (each `host`, `outcome`, `phase`, `error`, `rotation`),
    /// `retry_of`, `rollback_of`, `promoted_from` (the core's `HistoryRecord`).
    #[schema(value_type = Vec<Object>)]
    pub deployments: Vec<vesemir_core::history::HistoryRecord>,
    /// Each host's last successful version: `{ "web-01": { "version": "2.0.0", "deployment": "12" } }`.
    #[schema(value_type = Object)]
    pub hosts: BTreeMap<String, vesemir_core::history::HostVersion>,
    /// The promotions of its deployments to the next unit, by deployment id (issue 18): where
    /// each stands (`waiting_confirmation`, `started`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub promotions: BTreeMap<String, Promotion>,
}

impl History {
    /// The history of `records` (newest first).
    pub fn of(
        application: &str,
        environment: &str,
        records: Vec<vesemir_core::history::HistoryRecord>,
    ) -> Self {
        let hosts = vesemir_core::history::last_succeeded(&records)
            .into_iter()
            .map(|(h, v)| (h.to_string(), v))
            .collect();
        Self {
            application: application.into(),
            environment: environment.into(),
            deployments: records,
            hosts,
            promotions: BTreeMap::new(),
        }
    }

    /// The history as API callers see it: deployments' and hosts' errors without server file
    /// paths ([`crate::server_paths`]).
    #[must_use]
    pub fn without_server_paths(mut self) -> Self {
        for record in &mut self.deployments {
            record.error = record.error.as_deref().map(crate::server_paths::hidden);
            for host in &mut record.hosts {
                host.error = host.error.as_deref().map(crate::server_paths::hidden);
            }
        }
        self
    }
}

/// What a retry changes of its parent's request (`POST /v1/deployments/{id}/retry`); an empty
/// body changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// `strategy.concurrency`: a count or a percentage (`"25%"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub concurrency: Option<serde_json::Value>,
    /// Values of the playbook's `{variables}` to change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

/// Which servers to put back (`POST /v1/deployments/{id}/restore`); an empty body: every one
/// the deployment left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// Only these hosts' servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = host_names)]
    pub hosts: Vec<String>,
}

/// The schema of a list of host names (each 1 to 64 letters, digits, `-`, `_` or `.`, starting
/// with a letter or digit).
fn host_names() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(vesemir_core::name::pattern::IDENTIFIER))
                .examples([serde_json::Value::from("web-01")]),
        )
        .build()
}

/// Where to roll back to (`POST /v1/applications/{app}/environments/{env}/rollback`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version; default: the newest one before the current one that succeeded on every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// One server-sent event of `GET /v1/deployments/{id}/events`, as a client reads it from the
/// `text/event-stream` lines (the document's schema of the stream; it is written as lines).
#[derive(Debug, Clone, ToSchema)]
pub struct StreamEvent {
    /// The event's sequence number: send the last one as `Last-Event-ID` to resume after it.
    pub id: String,
    /// The event's type, e.g. `host_phase`.
    pub event: String,
    /// The event as JSON (its `type`, `seq`, `elapsed` and the type's own fields).
    pub data: String,
}

// ---- Issue 18: promotion by confirmation and the notification delivery log (own block) ----

/// Where a deployment's promotion to the next unit stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The next unit: `APPLICATION/ENVIRONMENT`.
    pub to: String,
    /// `waiting_confirmation` (a person of the team may confirm or decline it), `confirmed`
    /// (its deployment is being started), `started`, `declined`, `expired` or `superseded`
    /// (a newer success of the unit waits in its place).
    pub status: crate::store::PromotionStatus,
    /// The deployment of the next unit it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<i64>,
    /// While it waits: until when it may be confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Who confirmed or declined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was confirmed, declined, superseded or found expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// While it waits: where to POST to confirm it (its deployment starts at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// While it waits: where to POST to decline it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<String>,
}

/// One attempt to deliver a notification about a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationDelivery {
    /// The target's name in its unit's `notify` list (its URL and secret are never shown).
    pub target: String,
    /// The event: `started`, `waiting_for_confirmation`, `paused`, `succeeded`, `failed`,
    /// `cancelled`.
    pub event: String,
    /// Which try, from 1.
    pub attempt: i64,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// The receiver's HTTP status, when it answered.
    pub http_status: Option<i64>,
    /// What went wrong, when it was not delivered.
    pub error: Option<String>,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// Answer to `GET /v1/deployments/{id}/notifications`: the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationLog {
    /// The deployment.
    pub id: i64,
    /// Every attempt, in the order made.
    pub deliveries: Vec<NotificationDelivery>,
}

impl NotificationLog {
    /// The wire form of deployment `id`'s stored attempts.
    pub fn of(id: i64, attempts: &[crate::store::NotificationAttempt]) -> Self {
        let deliveries = attempts
            .iter()
            .map(|a| NotificationDelivery {
                target: a.target.clone(),
                event: a.event.clone(),
                attempt: a.attempt,
                delivered: a.delivered,
                http_status: a.http_status,
                error: a.error.as_deref().map(crate::server_paths::hidden),
                at: rfc3339(a.at_ms),
            })
            .collect();
        Self { id, deliveries }
    }
}
