//! Persistence behind a trait: deployments, per-host results, every event, and each
//! deployment's write-ahead journal of load balancer changes. SQLite is the default
//! ([`SqliteStore`], one server per file); PostgreSQL ([`PostgresStore`]) lets several servers
//! share one database. Both pass the same conformance suite (`tests/store_conformance.rs`).
//!
//! **Admission** is the database's: a partial unique index allows one queued or running
//! deployment per application and environment, and one per requester's idempotency key, so
//! [`Store::insert`] answers [`Inserted::Conflict`] or [`Inserted::Existing`] whichever server
//! asked first.
//!
//! **Leases** (fencing): each store is one server instance ([`InstanceId`]). A deployment it
//! inserts is leased to it (`lease_owner`, `lease_epoch`, `lease_expires_ms`) for the store's
//! lease time, renewed by [`Store::renew_leases`]. Every write about a deployment it holds
//! checks in the same statement or transaction that the lease is still its own, same epoch, not
//! expired; a write about a deployment it does not hold requires that no live lease exists. A
//! lost lease makes the write fail with [`StoreError::is_lease_lost`], so an instance that lost a
//! deployment cannot journal (and therefore cannot make) another load balancer change for it.
//! [`Store::interrupt_unfinished`] ends deployments no live instance holds.

mod codec;
mod postgres;
mod sqlite;
mod vm_codec;
pub mod vms;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vesemir_core::event::Totals;
use vesemir_core::journal::JournalEntry;
use vesemir_core::plan::PlannedHost;
use vesemir_core::report::HostReport;
use vesemir_core::{Event, HostProgress};

/// For shutdown's abort (`runner`): what the interrupted path records, computed the same way.
pub(crate) use codec::{hosts_left_by_journal, STOPPED};
pub use postgres::{PostgresStore, PostgresUrl};
pub use sqlite::SqliteStore;

/// How long a lease lasts unless renewed, when the store is opened without a choice.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Why the store failed. The message says what to check.
#[derive(Debug, thiserror::Error)]
#[error("database: {context}: {source}")]
pub struct StoreError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    lease_lost: bool,
    unavailable: bool,
}

impl StoreError {
    /// A failure while doing `context`.
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self { context: context.into(), source: source.into(), lease_lost: false, unavailable: false }
    }

    /// The database could not be reached, or did not answer in time, while doing `context`:
    /// this instance cannot use it now (another instance may).
    pub fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self { unavailable: true, ..Self::new(context, source) }
    }

    /// Whether the database could not be reached or did not answer in time
    /// ([`unavailable`](Self::unavailable)), rather than refusing or failing the statement.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// A write about deployment `id` refused because this instance no longer holds its lease
    /// (expired, or taken by another instance), or another instance holds it.
    pub fn lease_lost(context: impl Into<String>, id: i64) -> Self {
        Self {
            context: context.into(),
            source: format!(
                "deployment {id} is not leased to this instance (its lease expired or another \
                 instance holds it): refused"
            )
            .into(),
            lease_lost: true,
            unavailable: false,
        }
    }

    /// Whether the write was refused for a lease this instance does not hold.
    pub fn is_lease_lost(&self) -> bool {
        self.lease_lost
    }
}

/// One `vesemir serve` process as the database knows it: the holder of the leases its store
/// takes. Unique per process start (`<name>/<pid>-<start ms>`), so a restarted server never
/// takes its previous life's leases for its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// An id for this process, named `name` (the configured instance name, else the host name).
    pub fn for_process(name: &str) -> Self {
        let started = crate::clock::now_ms();
        Self(format!("{name}/{}-{started}", std::process::id()))
    }

    /// An id named after this machine's host name.
    pub fn this_host() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "vesemir".to_owned());
        Self::for_process(&host)
    }

    /// The id as stored in `lease_owner`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a store is and how long its leases last.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This server instance.
    pub instance: InstanceId,
    /// How long a lease lasts unless renewed ([`Store::renew_leases`], every third of it).
    pub lease: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { instance: InstanceId::this_host(), lease: DEFAULT_LEASE }
    }
}

/// What a lease renewal found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Renewal {
    /// Deployments still held, renewed, with whether someone (on any instance) asked to cancel.
    pub held: Vec<(i64, bool)>,
    /// Deployments this instance held and no longer does: it must stop acting on them.
    pub lost: Vec<i64>,
}

/// Refuses a database whose newest applied migration (`newest`) is past every one of
/// `migrations`: a newer vesemir wrote it, and this one would misread it.
fn refuse_newer_schema(newest: Option<i64>, migrations: &[(i64, &str)]) -> Result<(), StoreError> {
    let known = migrations.iter().map(|(v, _)| *v).max().unwrap_or(0);
    match newest {
        Some(newest) if newest > known => Err(StoreError::new(
            "checking the schema",
            format!(
                "the database has schema version {newest}, newer than this vesemir knows (up to \
                 {known}): run the newer vesemir that migrated it, or point this one at another database"
            ),
        )),
        _ => Ok(()),
    }
}

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, waiting for a free slot.
    Queued,
    /// Running: hosts are being deployed.
    Running,
    /// Every host succeeded.
    Succeeded,
    /// Every host was tried; some failed, within the tolerated failures.
    CompletedWithFailures,
    /// Too many failures: the rest were skipped.
    Stopped,
    /// Cancelled by a person or a server stop: hosts in flight finished, no new host started.
    Cancelled,
    /// Could not start: hosts or load balancers could not be found or planned. Nothing changed.
    Failed,
    /// The server stopped while it ran: see `out_of_rotation` for hosts to check.
    Interrupted,
}

impl Status {
    /// Every status, for parsing and documentation.
    pub const ALL: [Status; 8] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::CompletedWithFailures,
        Status::Stopped,
        Status::Cancelled,
        Status::Failed,
        Status::Interrupted,
    ];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::CompletedWithFailures => "completed_with_failures",
            Status::Stopped => "stopped",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }

    /// Parses a stored or requested status.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the deployment has ended.
    pub fn is_finished(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deployment as first stored, when it is accepted.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// The application deployed, as named in the request.
    pub application: String,
    /// The environment deployed to.
    pub environment: String,
    /// The owning team.
    pub team: String,
    /// The version deployed, as the request gave it.
    pub version: String,
    /// Who asked (the token's name).
    pub requested_by: String,
    /// The server-configured playbook the request picked.
    pub playbook: Option<String>,
    /// How the hosts are found (the inventory query, or the listed hosts).
    pub query: String,
    /// The request body as accepted (JSON).
    pub request: String,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of the body, to tell a reused key with another body.
    pub body_sha256: String,
    /// When it was accepted, Unix milliseconds.
    pub created_ms: i64,
}

/// A stored deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    /// The deployment's id, increasing with each accepted deployment.
    pub id: i64,
    /// The application deployed, as named in the request.
    pub application: String,
    /// The environment deployed to.
    pub environment: String,
    /// The owning team.
    pub team: String,
    /// The version deployed, as the request gave it.
    pub version: String,
    /// Who asked.
    pub requested_by: String,
    /// The server-configured playbook the request picked.
    pub playbook: Option<String>,
    /// How the hosts are found.
    pub query: String,
    /// The request body as accepted (JSON).
    pub request: String,
    /// Where the deployment is in its life.
    pub status: Status,
    /// Why it failed to start, or was interrupted.
    pub error: Option<String>,
    /// Hosts in the plan, once planned.
    pub host_count: Option<i64>,
    /// Host counts by outcome, once finished (stored as their JSON).
    pub totals: Option<Totals>,
    /// Hosts that may be out of rotation after an interruption or an internal error.
    pub out_of_rotation: Vec<String>,
    /// Whether someone asked to cancel it.
    pub cancel_requested: bool,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of the body.
    pub body_sha256: String,
    /// Accepted, Unix ms.
    pub created_ms: i64,
    /// Started running, Unix ms.
    pub started_ms: Option<i64>,
    /// Ended, Unix ms.
    pub finished_ms: Option<i64>,
    /// The server instance that holds (or last held) its lease: the one that runs or ran it.
    pub instance: Option<String>,
    /// Whether the last pause or resume given for it, on any instance, was a pause: the wanted
    /// state recorded for the instance that runs it ([`Store::order`]), which every instance
    /// reads. Always false in a store that is one server's (SQLite): its runner knows it live.
    pub pause_requested: bool,
}

/// One host's result, as stored: where it sits in the plan and what the core's fold of its
/// events ([`vesemir_core::Progress`]) says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    /// Position in the plan, from 0.
    pub position: i64,
    /// The address SSH and the load balancer know the host by.
    pub address: String,
    /// The host's server in the load balancer backend.
    pub server: String,
    /// Its name, phase, outcome, error, rotation, and when it started and ended (from the
    /// deployment's start).
    pub state: HostProgress,
}

impl HostRecord {
    /// Host number `position` of a fresh plan: pending and in rotation.
    pub fn planned(position: usize, planned: &PlannedHost) -> Self {
        Self {
            position: i64::try_from(position).unwrap_or(i64::MAX),
            address: planned.host.address.clone(),
            server: planned.server.to_string(),
            state: HostProgress::pending(planned.host.name.clone()),
        }
    }

    /// Host number `position` of a finished deployment, as its report says.
    pub fn reported(position: usize, host: &HostReport) -> Self {
        Self {
            position: i64::try_from(position).unwrap_or(i64::MAX),
            address: host.address.clone(),
            server: host.server.to_string(),
            state: HostProgress {
                name: host.name.clone(),
                phase: host.phase.clone(),
                outcome: host.outcome,
                error: host.error.clone(),
                rotation: host.rotation,
                started: host.started,
                finished: host.finished,
            },
        }
    }
}

/// How a deployment ended, written once.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The final status.
    pub status: Status,
    /// Why it failed, if it did not run.
    pub error: Option<String>,
    /// Host counts by outcome, when the rollout ran.
    pub totals: Option<Totals>,
    /// Every host's result.
    pub hosts: Vec<HostRecord>,
    /// Hosts that may be out of rotation, when its task ended in an internal error (empty
    /// otherwise: each host's own record says where it is).
    pub out_of_rotation: Vec<String>,
    /// When, Unix ms.
    pub finished_ms: i64,
}

/// Filters of the deployment list. Results are newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this application.
    pub application: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this team.
    pub team: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only ids below this (the page cursor).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// What happened when a deployment was inserted.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new deployment with this id, leased to this instance.
    New(i64),
    /// The idempotency key was already used: this deployment.
    Existing(Box<DeploymentRecord>),
    /// Another deployment of the same application and environment is queued or running (on
    /// any instance): this one. Nothing was stored.
    Conflict(Box<DeploymentRecord>),
}

/// A deployment that was running when the server stopped, now marked interrupted.
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupted {
    /// The deployment's id, increasing with each accepted deployment.
    pub id: i64,
    /// The application deployed, as named in the request.
    pub application: String,
    /// The environment deployed to.
    pub environment: String,
    /// The team owning the application.
    pub team: String,
    /// Hosts that may be out of rotation.
    pub out_of_rotation: Vec<String>,
}

/// What a deployment follows up on (a retry, a rollback), and how that shapes it. Stored with
/// the deployment before it starts; read by the runner when it prepares and when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The deployment it retries (its hosts that did not succeed).
    pub retry_of: Option<i64>,
    /// The deployment it rolls back.
    pub rollback_of: Option<i64>,
    /// Only these hosts of the ones found (a retry, an automatic rollback); `None`: all.
    pub only_hosts: Option<Vec<String>>,
    /// A deployment whose journal left servers out that this one takes as they are: once this
    /// one ends, those whose hosts succeeded go back to the state that deployment found them in
    /// (health gate first).
    pub resume: Option<i64>,
    /// Hosts of a second deployment started once this one succeeded (same links): a follow-up
    /// first deploys the servers its parent left out, which then count against no budget, and
    /// only then the others.
    pub then_hosts: Option<Vec<String>>,
}

// ---- Issue 18: CI hooks and promotion (own block, for merges) ----

/// Where a CI hook's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookState {
    /// Accepted; its deployment waits for the unit's running one to end.
    Waiting,
    /// Its deployment was admitted (`deployment_id`).
    Started,
    /// Refused (the unit was busy and the hook says so, or the deployment was refused): `error`.
    Refused,
}

impl HookState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            HookState::Waiting => "waiting",
            HookState::Started => "started",
            HookState::Refused => "refused",
        }
    }

    /// Parses a stored state.
    pub fn parse(text: &str) -> Option<Self> {
        [HookState::Waiting, HookState::Started, HookState::Refused].into_iter().find(|s| s.as_str() == text)
    }
}

/// A CI hook's delivery as first recorded: unique per hook by delivery id and by body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHookDelivery {
    /// The hook's name in the catalog.
    pub hook: String,
    /// The delivery id the sender gave in its delivery header.
    pub delivery_id: String,
    /// SHA-256 (hex) of the signed body: the same body is the same delivery, whatever its id.
    pub body_sha256: String,
    /// The version the body names.
    pub version: String,
    /// When it was received, Unix ms.
    pub received_ms: i64,
}

/// A recorded CI hook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDelivery {
    /// The hook's name in the catalog.
    pub hook: String,
    /// The delivery id the sender gave.
    pub delivery_id: String,
    /// SHA-256 (hex) of the signed body.
    pub body_sha256: String,
    /// The version the body names.
    pub version: String,
    /// Where it stands.
    pub state: HookState,
    /// The deployment it started, once started.
    pub deployment_id: Option<i64>,
    /// Why it was refused.
    pub error: Option<String>,
    /// When it was received, Unix ms.
    pub received_ms: i64,
}

/// What recording a delivery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookRecorded {
    /// New: recorded as waiting.
    New,
    /// A delivery of this hook with the same id, or the same body, was recorded before: it.
    Existing(Box<HookDelivery>),
}

/// One attempt to deliver a notification (issue 18), as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationAttempt {
    /// The deployment it was about.
    pub deployment_id: i64,
    /// The target's name in the unit's `notify` list (never its URL).
    pub target: String,
    /// The event (`started`, `succeeded`...).
    pub event: String,
    /// Which try, from 1.
    pub attempt: i64,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// The receiver's status, when it answered.
    pub http_status: Option<i64>,
    /// What went wrong, when it was not delivered.
    pub error: Option<String>,
    /// When, Unix ms.
    pub at_ms: i64,
}

// ---- Issue 18: package repository sources (own block, for merges) ----

/// What the watcher of a unit's package source last found ([`crate::source`]), kept so that a
/// restart neither refetches an unchanged index nor deploys a version again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    /// The unit, as `TEAM/APPLICATION/ENVIRONMENT`.
    pub unit: String,
    /// The index it was read from (the validators belong to it).
    pub index_url: String,
    /// The package watched.
    pub package: String,
    /// The newest version seen (and deployed, or handed to the deliveries' path).
    pub seen_version: Option<String>,
    /// The index's `ETag`, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// The index's `Last-Modified`, sent back as `If-Modified-Since`.
    pub last_modified: Option<String>,
    /// When it was last polled, Unix ms.
    pub checked_ms: i64,
    /// What went wrong at the last poll, if anything.
    pub error: Option<String>,
}

// ---- Issue 18: promotion by confirmation (own block, for merges) ----

/// Where a promotion that waits for a person (`promote_confirm`) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    /// The source deployment succeeded on every host; the next unit waits for a person.
    WaitingConfirmation,
    /// A person confirmed it and its deployment is being started (a server killed at that
    /// moment leaves it here).
    Confirmed,
    /// Its deployment of the next unit was started (`promoted_to`).
    Started,
    /// A person declined it: the chain stops here.
    Declined,
    /// No one confirmed it in time.
    Expired,
    /// A newer success of the same unit waits in its place.
    Superseded,
}

impl PromotionStatus {
    /// Every status.
    pub const ALL: [PromotionStatus; 6] = [
        PromotionStatus::WaitingConfirmation,
        PromotionStatus::Confirmed,
        PromotionStatus::Started,
        PromotionStatus::Declined,
        PromotionStatus::Expired,
        PromotionStatus::Superseded,
    ];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionStatus::WaitingConfirmation => "waiting_confirmation",
            PromotionStatus::Confirmed => "confirmed",
            PromotionStatus::Started => "started",
            PromotionStatus::Declined => "declined",
            PromotionStatus::Expired => "expired",
            PromotionStatus::Superseded => "superseded",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A deployment's promotion that waits, or waited, for a person's confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionWait {
    /// The deployment whose success is to be promoted.
    pub deployment_id: i64,
    /// The next unit's application.
    pub to_application: String,
    /// The next unit's environment.
    pub to_environment: String,
    /// Where it stands (as stored: a `waiting_confirmation` past `expires_ms` has expired).
    pub status: PromotionStatus,
    /// When it began to wait, Unix ms.
    pub created_ms: i64,
    /// Until when a person may confirm it, Unix ms.
    pub expires_ms: i64,
    /// Who confirmed or declined it.
    pub decided_by: Option<String>,
    /// When it was confirmed, declined, superseded or found expired, Unix ms.
    pub decided_ms: Option<i64>,
}

impl PromotionWait {
    /// Its status at `now_ms`: a waiting one past its deadline has expired.
    pub fn status_at(&self, now_ms: i64) -> PromotionStatus {
        match self.status {
            PromotionStatus::WaitingConfirmation if now_ms > self.expires_ms => PromotionStatus::Expired,
            status => status,
        }
    }
}

/// A promotion wait from its columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn promotion_wait_from_columns(
    deployment_id: i64,
    to_application: String,
    to_environment: String,
    status: &str,
    created_ms: i64,
    expires_ms: i64,
    decided_by: Option<String>,
    decided_ms: Option<i64>,
) -> Result<PromotionWait, StoreError> {
    let status = PromotionStatus::parse(status).ok_or_else(|| {
        StoreError::new("reading a promotion", format!("unknown promotion status {status:?}"))
    })?;
    Ok(PromotionWait {
        deployment_id,
        to_application,
        to_environment,
        status,
        created_ms,
        expires_ms,
        decided_by,
        decided_ms,
    })
}

/// Where deployments, host results and events are kept.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores a new deployment as queued, leased to this instance. With an idempotency key
    /// already used by the same requester, returns that deployment instead; with another
    /// deployment of the same application and environment queued or running, returns it as a
    /// conflict. Atomic across every instance sharing the database.
    async fn insert(&self, deployment: &NewDeployment) -> Result<Inserted, StoreError>;
    /// One deployment.
    async fn get(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError>;
    /// A deployment by the requester's idempotency key.
    async fn by_idempotency_key(
        &self,
        requested_by: &str,
        key: &str,
    ) -> Result<Option<DeploymentRecord>, StoreError>;
    /// Its hosts, in plan order.
    async fn hosts(&self, id: i64) -> Result<Vec<HostRecord>, StoreError>;
    /// Deployments matching `filter`, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeploymentRecord>, StoreError>;
    /// Marks it running.
    async fn mark_running(&self, id: i64, started_ms: i64) -> Result<(), StoreError>;
    /// Records the plan's hosts (all pending).
    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError>;
    /// Records that someone asked to cancel it.
    async fn mark_cancel_requested(&self, id: i64) -> Result<(), StoreError>;
    /// Appends events (in seq order) and writes `hosts`, the hosts those events changed as the
    /// core's fold of every event so far leaves them, in one transaction.
    async fn append_events(&self, id: i64, events: &[Event], hosts: &[HostRecord]) -> Result<(), StoreError>;
    /// Events with seq above `after`, in order, at most `limit`.
    async fn events_after(&self, id: i64, after: u64, limit: i64) -> Result<Vec<Event>, StoreError>;
    /// Writes how it ended.
    async fn finish(&self, id: i64, finish: &Finish) -> Result<(), StoreError>;
    /// Marks every queued or running deployment that no live instance holds interrupted (at
    /// startup, and periodically): its lease expired (its instance died or lost the database),
    /// or it has none. The error names the instance that ran it. The hosts that may be out of
    /// rotation are what its journal leaves unfinished (the core's
    /// [`replay`](vesemir_core::journal::replay)); a deployment without a journal (one that never
    /// started, or ran on a server that kept none) falls back to its stored events.
    async fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Interrupted>, StoreError>;
    /// Appends one entry to deployment `id`'s journal and returns only once it is committed and
    /// on stable storage: a load balancer change follows it at once.
    async fn append_journal(&self, id: i64, entry: &JournalEntry) -> Result<(), StoreError>;
    /// Deployment `id`'s journal, in the order written.
    async fn journal(&self, id: i64) -> Result<Vec<JournalEntry>, StoreError>;
    /// Records the hosts that may be out of rotation (after a recovery put some back, or a
    /// deployment stopped by a failing store).
    async fn set_out_of_rotation(&self, id: i64, hosts: &[String]) -> Result<(), StoreError>;
    /// Records what deployment `id` follows up on (before it starts).
    async fn set_origin(&self, id: i64, origin: &Origin) -> Result<(), StoreError>;
    /// What deployment `id` follows up on; `None` for a plain deployment.
    async fn origin(&self, id: i64) -> Result<Option<Origin>, StoreError>;
    /// Replaces an ended deployment's `error` (what happened after it ended: an automatic
    /// rollback, or why there was none).
    async fn set_error(&self, id: i64, error: &str) -> Result<(), StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// This store's instance: the holder of the leases it takes.
    fn instance(&self) -> &InstanceId;
    /// How long a lease lasts unless renewed.
    fn lease(&self) -> Duration;
    /// Renews the lease of every deployment this instance holds; one it no longer holds is
    /// dropped and reported `lost`.
    async fn renew_leases(&self) -> Result<Renewal, StoreError>;
    /// Stops renewing deployment `id`'s lease (its task ended without writing its end): the
    /// lease expires and [`Store::interrupt_unfinished`] ends the record. Nothing when it was
    /// not held.
    fn release_lease(&self, id: i64);
    /// Ids of deployments whose new events were just stored, by any instance, as the database
    /// announces them (PostgreSQL's `NOTIFY`); `None` when the store announces nothing (one
    /// server per database: its followers get events live from its runner).
    fn event_announcements(&self) -> Option<tokio::sync::broadcast::Receiver<i64>> {
        None
    }

    // Event retention (issue 13, item 6: `limits.event_retention`, `crate::retention`).

    /// Deletes the events of every deployment that ended before `ended_before_ms` (queued and
    /// running ones are never touched); the deployment rows, hosts, journals and summaries stay.
    /// Returns how many events were deleted.
    async fn prune_events(&self, ended_before_ms: i64) -> Result<u64, StoreError>;
    // --- Takeover (issue 16, item 3): another instance resumes a dead instance's deployment ---

    /// Takes the lease of every queued or running deployment that no live instance holds (its
    /// holder died or lost the database; see [`Store::interrupt_unfinished`]): this instance
    /// holds it from now on, under a new epoch, so a write by the previous holder is refused.
    /// Atomic across instances: each such deployment is taken by one instance only. A store
    /// with one server per database (SQLite) takes none: its server ends them at startup.
    async fn take_over_unheld(&self) -> Result<Vec<TakenOver>, StoreError> {
        Ok(Vec::new())
    }

    // --- Orders across instances (issue 16, item 3): pause, resume, confirm sent to any ---

    /// Records `order` for queued or running deployment `id`, whichever instance runs it: that
    /// instance applies it at its next lease renewal ([`Store::take_orders`]). A pause or resume
    /// is kept as the deployment's wanted state, so the last one given wins on every instance.
    async fn order(&self, _id: i64, _order: Order) -> Result<OrderTaken, StoreError> {
        Ok(OrderTaken::NotShared)
    }

    /// The orders recorded for the deployments this instance holds: each one's wanted pause
    /// state, and the confirmations ordered since the last call (taken: reported once).
    async fn take_orders(&self) -> Result<Vec<Orders>, StoreError> {
        Ok(Vec::new())
    }

    // --- Database-wide counts for metrics (issue 16, item 4) ---

    /// How many deployments the database holds in each status (those of every instance
    /// sharing it); statuses with none are left out. A store that cannot count (a test's
    /// wrapper) answers none.
    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        Ok(Vec::new())
    }
    // ---- Web sessions (issue 17: directory sign-in). Stores that keep none (test doubles)
    // refuse them; SQLite and PostgreSQL keep them, so every instance sees every session. ----

    /// Stores a new sign-in session.
    async fn create_session(&self, session: &WebSession) -> Result<(), StoreError> {
        let _ = session;
        Err(StoreError::new("creating a session", "this store keeps no sessions"))
    }
    /// The session whose id hashes to `id_sha256`, if it exists, is not revoked and expires
    /// after `now_ms`.
    async fn session(&self, id_sha256: &str, now_ms: i64) -> Result<Option<WebSession>, StoreError> {
        let _ = (id_sha256, now_ms);
        Err(StoreError::new("reading a session", "this store keeps no sessions"))
    }
    /// Revokes a session (sign-out) at `now_ms`; an unknown or revoked one is no error.
    async fn revoke_session(&self, id_sha256: &str, now_ms: i64) -> Result<(), StoreError> {
        let _ = (id_sha256, now_ms);
        Err(StoreError::new("revoking a session", "this store keeps no sessions"))
    }
    /// Deletes the sessions that expired or were revoked before `before_ms`; how many.
    async fn prune_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let _ = before_ms;
        Err(StoreError::new("pruning sessions", "this store keeps no sessions"))
    }
    // ---- Failed sign-ins (issue 17: attempt limits shared by every instance on one database).
    // One row per failure and key; stores that keep none (test doubles) refuse them. ----

    /// Takes one sign-in attempt at `at_ms`: if every key of `limits` has fewer failures than
    /// its limit counted at or after `since_ms`, counts the attempt as a failure under each key
    /// (until [`forgive_sign_in_attempt`](Store::forgive_sign_in_attempt) takes it back) and
    /// answers its rows; else counts nothing and answers the failures of the keys at their
    /// limit. One transaction per call, serialized per key across instances, so racing
    /// attempts never pass a limit together.
    async fn take_sign_in_attempt(
        &self,
        limits: &[(SignInKey, u32)],
        since_ms: i64,
        at_ms: i64,
    ) -> Result<SignInAttempt, StoreError> {
        let _ = (limits, since_ms, at_ms);
        Err(StoreError::new("counting a sign-in attempt", "this store keeps no sign-in failures"))
    }
    /// Takes back an attempt that was no failure (the person signed in, or the directory could
    /// not be asked): deletes its rows.
    async fn forgive_sign_in_attempt(&self, rows: &[i64]) -> Result<(), StoreError> {
        let _ = rows;
        Err(StoreError::new("forgiving a sign-in attempt", "this store keeps no sign-in failures"))
    }
    /// The failures counted under `key` at or after `since_ms`: how many, and the oldest.
    async fn sign_in_failures(&self, key: &SignInKey, since_ms: i64) -> Result<SignInFailures, StoreError> {
        let _ = (key, since_ms);
        Err(StoreError::new("reading failed sign-ins", "this store keeps no sign-in failures"))
    }
    /// Forgets every failure counted under `key` (a successful sign-in forgets its user's).
    async fn clear_sign_in_failures(&self, key: &SignInKey) -> Result<(), StoreError> {
        let _ = key;
        Err(StoreError::new("forgetting failed sign-ins", "this store keeps no sign-in failures"))
    }
    /// Deletes the failures counted before `before_ms` (out of every window); how many.
    async fn prune_sign_in_failures(&self, before_ms: i64) -> Result<u64, StoreError> {
        let _ = before_ms;
        Err(StoreError::new("pruning failed sign-ins", "this store keeps no sign-in failures"))
    }
    // ---- Issue 18: CI hooks and promotion ----

    /// Records a CI hook's delivery as waiting, unless a delivery of the same hook with the
    /// same id or the same body was recorded before (on any instance): then returns that one
    /// and records nothing.
    async fn record_hook_delivery(&self, delivery: &NewHookDelivery) -> Result<HookRecorded, StoreError>;
    /// Sets where a delivery stands: its state, the deployment it started, why it was refused.
    async fn set_hook_delivery(
        &self,
        hook: &str,
        delivery_id: &str,
        state: HookState,
        deployment_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The deliveries of `hook` still waiting, oldest first.
    async fn waiting_hook_deliveries(&self, hook: &str) -> Result<Vec<HookDelivery>, StoreError>;
    /// Records that deployment `id` was started by promoting deployment `from` (before `id`
    /// starts).
    async fn set_promoted_from(&self, id: i64, from: i64) -> Result<(), StoreError>;
    /// The deployment whose success promoted deployment `id`, if one did.
    async fn promoted_from(&self, id: i64) -> Result<Option<i64>, StoreError>;
    /// The deployment that deployment `id`'s success promoted, if one was started.
    async fn promoted_to(&self, id: i64) -> Result<Option<i64>, StoreError>;
    /// Appends one notification attempt to the delivery log.
    async fn record_notification(&self, attempt: &NotificationAttempt) -> Result<(), StoreError>;
    /// Deployment `id`'s notification attempts, in the order made.
    async fn notifications(&self, id: i64) -> Result<Vec<NotificationAttempt>, StoreError>;

    // ---- Issue 18: package repository sources ----

    /// What the watcher of `unit` (`TEAM/APPLICATION/ENVIRONMENT`) last found.
    async fn source_state(&self, unit: &str) -> Result<Option<SourceState>, StoreError> {
        let _ = unit;
        Err(StoreError::new("reading a source's state", "this store keeps no sources"))
    }
    /// Records what the watcher of `state.unit` found (replacing what it found before).
    async fn set_source_state(&self, state: &SourceState) -> Result<(), StoreError> {
        let _ = state;
        Err(StoreError::new("recording a source's state", "this store keeps no sources"))
    }

    // ---- Issue 18: promotion by confirmation (stores without it refuse) ----

    /// Records that deployment `wait.deployment_id`'s promotion waits for a person, unless one
    /// was recorded for it before (then nothing changes: false). Older promotions of the same
    /// application and environment still waiting become `superseded`, in the same transaction.
    async fn record_promotion_wait(&self, wait: &PromotionWait) -> Result<bool, StoreError> {
        let _ = wait;
        Err(StoreError::new("recording a promotion", "this store keeps no promotions"))
    }
    /// Deployment `id`'s promotion that waits or waited for a person, if it has one.
    async fn promotion_wait(&self, id: i64) -> Result<Option<PromotionWait>, StoreError> {
        let _ = id;
        Ok(None)
    }
    /// Moves deployment `id`'s promotion from `from` to `to`, decided by `by` at `at_ms`, only
    /// if it is still `from` (on any instance): whether it moved.
    async fn set_promotion_status(
        &self,
        id: i64,
        from: PromotionStatus,
        to: PromotionStatus,
        by: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let _ = (id, from, to, by, at_ms);
        Err(StoreError::new("deciding a promotion", "this store keeps no promotions"))
    }

    // ---- VMs (issue 19: provisioning). Stores that keep none (test doubles) refuse them;
    // SQLite and PostgreSQL keep them. See [`vms`]. ----

    /// Records a new VM as `creating`, held by this instance, unless another VM holding
    /// resources has its name or its owner already holds `max_per_owner` such VMs (checked in
    /// the same transaction, so concurrent requests on any instances cannot pass the limit).
    async fn insert_vm(
        &self,
        vm: &vms::NewVm,
        max_per_owner: Option<u32>,
    ) -> Result<vms::VmInserted, StoreError> {
        let _ = (vm, max_per_owner);
        Err(vms::keeps_no_vms("recording a VM"))
    }
    /// The VM named `name`: the one holding resources if there is one, else the newest.
    async fn vm(&self, name: &vesemir_core::provision::VmName) -> Result<Option<vms::VmRow>, StoreError> {
        let _ = name;
        Err(vms::keeps_no_vms("reading a VM"))
    }
    /// The VMs `filter` selects, newest first.
    async fn list_vms(&self, filter: &vms::VmFilter) -> Result<Vec<vms::VmRow>, StoreError> {
        let _ = filter;
        Err(vms::keeps_no_vms("listing VMs"))
    }
    /// Changes VM `id`'s row as `update` says and makes this instance its holder.
    async fn update_vm(&self, id: i64, update: &vms::VmUpdate) -> Result<(), StoreError> {
        let _ = (id, update);
        Err(vms::keeps_no_vms("updating a VM"))
    }
    /// Like [`Store::update_vm`], only while VM `id` is still `from` (on any instance, in one
    /// statement): whether it changed. Two orders racing for one VM (two destroys sent to two
    /// instances) start one run.
    async fn update_vm_from(
        &self,
        id: i64,
        from: vms::VmStatus,
        update: &vms::VmUpdate,
    ) -> Result<bool, StoreError> {
        let _ = (id, from, update);
        Err(vms::keeps_no_vms("updating a VM"))
    }
    /// Appends events to VM `id`'s stream; their `seq` is kept as given (the server numbers a
    /// destroy's events after its create's). A `seq` already stored is an error.
    async fn append_vm_events(
        &self,
        id: i64,
        events: &[vesemir_core::provision::ProvisionEvent],
    ) -> Result<(), StoreError> {
        let _ = (id, events);
        Err(vms::keeps_no_vms("recording a VM's events"))
    }
    /// VM `id`'s events with `seq` above `after`, oldest first, at most `limit`.
    async fn vm_events_after(
        &self,
        id: i64,
        after: u64,
        limit: i64,
    ) -> Result<Vec<vesemir_core::provision::ProvisionEvent>, StoreError> {
        let _ = (id, after, limit);
        Err(vms::keeps_no_vms("reading a VM's events"))
    }
    /// Marks `interrupted` every `creating` or `destroying` VM whose holder is gone: on SQLite
    /// (one server per file) every one another process ran, on PostgreSQL those whose lease
    /// lapsed and those of this instance's earlier lives. Never this process's own runs, so
    /// the server calls it at start and then every lease time. Answers the VMs it marked.
    async fn interrupt_unfinished_vms(&self, now_ms: i64) -> Result<Vec<vms::VmRow>, StoreError> {
        let _ = now_ms;
        Ok(Vec::new())
    }
    /// Chooses and records a reservation with the core's `choose` over `request` and every
    /// reservation held, in one transaction that serialises reservers across instances.
    async fn reserve_vm(
        &self,
        request: &vesemir_core::provision::ReservationRequest,
    ) -> Result<vesemir_core::provision::Reservation, vesemir_core::provision::ReserveError> {
        let _ = request;
        Err(vesemir_core::provision::ReserveError::Store(vesemir_core::error::PortError::Adapter {
            adapter: "store",
            source: Box::new(vms::keeps_no_vms("reserving an address")),
        }))
    }
    /// Gives back `vm`'s reservation; one not held is no error.
    async fn release_vm(&self, vm: &vesemir_core::provision::VmName) -> Result<(), StoreError> {
        let _ = vm;
        Err(vms::keeps_no_vms("releasing an address"))
    }
    /// Every reservation held.
    async fn vm_reservations(&self) -> Result<Vec<vesemir_core::provision::Reservation>, StoreError> {
        Err(vms::keeps_no_vms("reading the reservations"))
    }
}

/// Reads `(status, count)` rows of a `GROUP BY status` query.
fn counts_from(rows: Vec<(String, i64)>) -> Vec<(Status, i64)> {
    rows.into_iter().filter_map(|(status, n)| Some((Status::parse(&status)?, n))).collect()
}

/// An operator's order for a deployment that another instance may run (PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// No new host starts until resumed.
    Pause,
    /// Hosts start again.
    Resume,
    /// The canary's gate opens.
    Confirm,
}

/// What [`Store::order`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderTaken {
    /// Recorded: the instance running the deployment applies it at its next lease renewal.
    Recorded,
    /// The deployment is not queued or running.
    NotActive,
    /// A resume for a deployment no one paused.
    NotPaused,
    /// The store is one server's (SQLite): orders go to its runner only.
    NotShared,
}

/// Orders recorded for a deployment this instance holds ([`Store::take_orders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orders {
    /// The deployment.
    pub id: i64,
    /// Whether it should be paused (`None`: no pause or resume was ever ordered).
    pub paused: Option<bool>,
    /// A confirmation was ordered since the last take.
    pub confirm: bool,
}

/// A deployment this instance took over ([`Store::take_over_unheld`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The deployment.
    pub id: i64,
    /// The instance that held its lease before (`None`: none did).
    pub from: Option<String>,
    /// The lease epoch this instance holds it under.
    pub epoch: i64,
    /// Queued (never started) or running.
    pub status: Status,
}

/// A signed-in person's session (issue 17). The cookie carries a random id; the store keeps
/// only its SHA-256, so a copy of the database opens no session.
#[derive(Clone, PartialEq, Eq)]
pub struct WebSession {
    /// SHA-256 of the session id, 64 hex digits.
    pub id_sha256: String,
    /// The session's CSRF token, sent back by every form that changes something.
    pub csrf: String,
    /// Who signed in (the directory name; recorded as `requested_by`).
    pub name: String,
    /// The teams their directory groups map to.
    pub teams: Vec<String>,
    /// The roles their directory groups map to.
    pub roles: Vec<crate::auth::Role>,
    /// When it was opened, Unix ms.
    pub created_ms: i64,
    /// When it ends, Unix ms.
    pub expires_ms: i64,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSession")
            .field("name", &self.name)
            .field("teams", &self.teams)
            .field("roles", &self.roles)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// What failed sign-ins are counted under (issue 17): a username (as directories compare
/// them: trimmed, lower case) or a client address. Stored as `user:NAME` / `address:IP`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignInKey {
    /// A username, normalized by [`SignInKey::user`].
    User(String),
    /// The address a sign-in came from (the connection's, never a header's).
    Address(std::net::IpAddr),
}

impl SignInKey {
    /// The key of `name`: usernames differing only in case or surrounding spaces are one.
    pub fn user(name: &str) -> Self {
        Self::User(name.trim().to_lowercase())
    }

    /// The key's column text.
    pub fn as_column(&self) -> String {
        match self {
            Self::User(name) => format!("user:{name}"),
            Self::Address(address) => format!("address:{address}"),
        }
    }
}

/// What [`Store::take_sign_in_attempt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInAttempt {
    /// Counted, as these rows (one per key), a failure until forgiven.
    Taken(Vec<i64>),
    /// Not counted: these keys' failures reached their limits.
    Limited(Vec<SignInFailures>),
}

/// The failed sign-ins counted under one key within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignInFailures {
    /// How many.
    pub count: u64,
    /// When the oldest of them was counted, Unix ms (`None` when there is none).
    pub oldest_ms: Option<i64>,
}

/// The columns of `web_sessions`, in [`WebSession`]'s order, with the teams and roles as JSON.
pub(crate) fn session_roles_json(session: &WebSession) -> Result<(String, String), StoreError> {
    let teams = serde_json::to_string(&session.teams).map_err(|e| StoreError::new("encoding teams", e))?;
    let roles = serde_json::to_string(&session.roles).map_err(|e| StoreError::new("encoding roles", e))?;
    Ok((teams, roles))
}

/// A session from its columns.
pub(crate) fn session_from_columns(
    id_sha256: String,
    csrf: String,
    name: String,
    teams: &str,
    roles: &str,
    created_ms: i64,
    expires_ms: i64,
) -> Result<WebSession, StoreError> {
    Ok(WebSession {
        id_sha256,
        csrf,
        name,
        teams: serde_json::from_str(teams).map_err(|e| StoreError::new("decoding a session's teams", e))?,
        roles: serde_json::from_str(roles).map_err(|e| StoreError::new("decoding a session's roles", e))?,
        created_ms,
        expires_ms,
    })
}
