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
        }
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

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
    /// Problems by field (validation errors).
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// On 409: the deployment already running for this application and environment.
    #[serde(default)]
    pub running: Option<Accepted>,
}

/// Health and readiness answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

fn rfc3339(ms: i64) -> String {
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
            error: d.error.clone(),
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
            links: Links::of(d.id),
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
            error: state.error.clone(),
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

/// The body of `POST /v1/deployments`, for the OpenAPI document only: the server parses the body
/// as the core's `vesemir_core::request::spec::RequestSpec` (refusing unknown fields), which
/// cannot derive a schema without a core dependency on utoipa. Never built.
#[derive(ToSchema)]
#[expect(dead_code, reason = "a schema only: the body is read as the core's RequestSpec")]
pub(crate) struct DeploymentRequestBody {
    /// The application deployed, as named in the request.
    pub application: String,
    /// The environment deployed to.
    pub environment: String,
    /// The team owning the application: must be the token's team.
    pub team: String,
    /// The version deployed, as the request gave it.
    pub version: String,
    /// Which hosts: `tags`, `roles`, `recipes` (escaped), optionally `chef_environment`; or `hosts`.
    #[schema(value_type = Object)]
    pub targets: serde_json::Value,
    /// The load balancer: `backend`, `instances` or `discover`, `server_name`, `drain_timeout`, `ramp`...
    #[schema(value_type = Object)]
    pub load_balancer: serde_json::Value,
    /// `concurrency`, `max_failures`, `window` (`sliding` or `batches`), `pause_between_batches`, `canary`.
    #[schema(value_type = Option<Object>)]
    pub strategy: Option<serde_json::Value>,
    /// A playbook configured on the server.
    pub playbook: String,
    /// Values of the playbook's `{variables}`.
    pub variables: Option<BTreeMap<String, String>>,
    /// Set by the server from the token's name: leave it out.
    pub requested_by: Option<String>,
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
            RecoveryOutcome::LeftOut { reason } => (RecoveryResult::LeftOut, None, Some(reason.clone())),
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
