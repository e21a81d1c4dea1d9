//! Deployments in flight: admission (idempotency, one per application and environment, the
//! queue), the driver task of each, its events to the database and then to live followers,
//! cancel and timeouts. Rollout decisions stay in the core's driver.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tracing::{debug, error, info, info_span, warn, Instrument, Span};
use vesemir_core::event::{DeploymentOutcome, EventKind, HostOutcome, WaitReason};
use vesemir_core::host_locks::LockPolicy;
use vesemir_core::lock::LockHolder;
use vesemir_core::request::DeploymentRequest;
use vesemir_core::{
    render, Backoff, Control, Crash, DeploymentReport, DriverConfig, Event, EventSink, Ports, PrepareError,
    Prepared, Progress,
};

// Takeover of another instance's deployment (issue 16): a child module, it drives with the
// runner's own machinery.
#[path = "takeover.rs"]
pub(crate) mod takeover;
// Pause, resume, confirm given to another instance (issue 16).
#[path = "orders.rs"]
mod orders;

use crate::clock::now_ms;
use crate::config::Limits;
use crate::journal::{DeploymentJournal, StoreFailure};
use crate::metrics::Metrics;
use crate::ports::LockSettings;
use crate::store::{
    DeploymentRecord, Finish, HostRecord, Inserted, ListFilter, NewDeployment, Origin, Status, Store,
    StoreError,
};

/// Live events of one deployment, broadcast after they are stored.
pub type LiveEvents = broadcast::Receiver<Arc<Event>>;

/// Capacity of a deployment's live event channel; a follower further behind re-reads the database.
const LIVE_CAPACITY: usize = 1024;

/// What happened to a submission.
#[derive(Debug)]
pub enum Submitted {
    /// A new deployment, queued, with this id.
    New(i64),
    /// The idempotency key was used before with the same body: that deployment.
    Existing(Box<DeploymentRecord>),
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Another deployment of the same application and environment is queued or running.
    #[error("deployment {} of {} in {} is {} (asked by {}): wait for it to end or cancel it", .0.id, .0.application, .0.environment, .0.status, .0.requested_by)]
    Conflict(Box<DeploymentRecord>),
    /// The idempotency key was used before with another body.
    #[error("Idempotency-Key was already used for deployment {} with a different body: use a new key", .0.id)]
    KeyReused(Box<DeploymentRecord>),
    /// The queue is full.
    #[error("{0} deployments are queued already: try again later")]
    QueueFull(usize),
    /// The team has its quota of deployments queued already (`limits.max_queued_per_team`).
    #[error("team {team} has {queued} deployments queued, its quota (limits.max_queued_per_team = {quota}): try again when some have started")]
    TeamQuota {
        /// The team.
        team: String,
        /// Its deployments queued now.
        queued: usize,
        /// The quota.
        quota: usize,
    },
    /// The server is shutting down: it admits nothing more ([`Runner::close_admissions`]).
    #[error("the server is shutting down and admits no new deployment: retry in a moment")]
    ShuttingDown,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
struct Active {
    control: Control,
    /// Whether the canary waits for confirmation now (set from the deployment's events).
    waiting_for_confirmation: Arc<AtomicBool>,
    cancel: Arc<Notify>,
    events: broadcast::Sender<Arc<Event>>,
    target: (String, String),
    /// Values of the request's secret variables: masked in every event before it is stored,
    /// logged or streamed.
    secrets: Arc<Vec<String>>,
    /// Set when shutdown aborts it past the grace: it then ends `interrupted`, naming the
    /// servers that may be out of rotation.
    aborted_at_shutdown: Arc<AtomicBool>,
}

#[derive(Default)]
struct ActiveSet {
    by_id: HashMap<i64, Active>,
    by_target: HashMap<(String, String), i64>,
}

/// Runs deployments in the background.
pub struct Runner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    limits: Limits,
    driver: DriverConfig,
    locks: Option<LockSettings>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Deployments each team has queued (`limits.max_queued_per_team`).
    team_queue: crate::limits::TeamQueue,
    admission: tokio::sync::Mutex<()>,
    /// Set (under `admission`) once shutdown began: nothing is admitted after it.
    closing: AtomicBool,
    active: Mutex<ActiveSet>,
    after_end: std::sync::OnceLock<AfterEnd>,
    /// Issue 18 (notifications): called with each admitted deployment's id and its live events
    /// before its task starts.
    on_admitted: std::sync::OnceLock<OnAdmitted>,
}

/// Called with an admitted deployment's id and a receiver of its live events (secrets masked),
/// before its task starts, so the receiver misses none. It must not block: the rollout never
/// waits for it (a receiver that falls behind loses events, never slows the sender).
pub type OnAdmitted = Arc<dyn Fn(i64, LiveEvents) + Send + Sync>;

/// Called with a deployment's id once it has ended and left the active set (the server's
/// `on_failure = "rollback"`).
pub type AfterEnd = Arc<dyn Fn(i64) + Send + Sync>;

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("queued", &self.queued.load(Ordering::Relaxed)).finish()
    }
}

/// The events to the writer, secrets masked; also keeps the deployment's "waiting for
/// confirmation" flag.
struct ChannelSink(mpsc::UnboundedSender<Event>, Arc<AtomicBool>, Arc<Vec<String>>);

/// `event` with every occurrence of a secret value (in output lines, errors, warnings...)
/// replaced by [`crate::catalog::MASK`]: through its JSON form, so no field is missed. An event
/// that would not read back is replaced by a warning saying so.
fn redact(event: &Event, secrets: &[String]) -> Event {
    let Ok(mut text) = serde_json::to_string(event) else { return event.clone() };
    let mut changed = false;
    for secret in secrets {
        let Ok(quoted) = serde_json::to_string(secret) else { continue };
        let inner = &quoted[1..quoted.len() - 1];
        if !inner.is_empty() && text.contains(inner) {
            text = text.replace(inner, crate::catalog::MASK);
            changed = true;
        }
    }
    if !changed {
        return event.clone();
    }
    serde_json::from_str(&text).unwrap_or_else(|_| Event {
        seq: event.seq,
        elapsed: event.elapsed,
        kind: EventKind::Warning {
            host: None,
            message: "an event carrying a secret was withheld".to_owned(),
        },
    })
}

impl EventSink for ChannelSink {
    fn emit(&self, event: &Event) {
        let redacted;
        let event = if self.2.is_empty() {
            event
        } else {
            redacted = redact(event, &self.2);
            &redacted
        };
        match &event.kind {
            EventKind::Waiting { reason: WaitReason::CanaryConfirmation } => {
                self.1.store(true, Ordering::SeqCst)
            }
            EventKind::BatchStarted { .. }
            | EventKind::Stopping { .. }
            | EventKind::DeploymentFinished { .. } => {
                self.1.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
        // The writer only stops once this sink is dropped: a send cannot fail before.
        let _ = self.0.send(event.clone());
    }
}

/// Removes a deployment from the active set when its task ends (also on panic), which closes
/// its live channel.
struct ActiveGuard {
    runner: Arc<Runner>,
    id: i64,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // Ended: its end is written (the lease went with it) or could not be, and then the lease
        // must expire so that the record is ended as interrupted.
        self.runner.store.release_lease(self.id);
        let mut set = self.runner.lock_active();
        if let Some(active) = set.by_id.remove(&self.id) {
            if set.by_target.get(&active.target) == Some(&self.id) {
                set.by_target.remove(&active.target);
            }
        }
        drop(set);
        self.runner.count_paused();
    }
}

/// What a queued or running deployment's view shows beyond its stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveState {
    /// Paused by an operator (no new host starts until resumed).
    pub paused: bool,
    /// Its canary waits for confirmation.
    pub waiting_for_confirmation: bool,
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRefused {
    /// The deployment is not queued or running.
    NotActive,
    /// It runs, but is not paused.
    NotPaused,
}

struct GaugeGuard<'a>(&'a Metrics);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight(-1.0);
    }
}

impl Runner {
    /// A runner over `store`.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        let driver = DriverConfig { call_timeout: limits.call_timeout, ..DriverConfig::default() };
        Self {
            store,
            metrics,
            slots: Arc::new(Semaphore::new(
                limits.max_concurrent_deployments.clamp(1, Semaphore::MAX_PERMITS),
            )),
            limits,
            driver,
            locks: None,
            queued: AtomicUsize::new(0),
            team_queue: crate::limits::TeamQueue::default(),
            admission: tokio::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
            active: Mutex::new(ActiveSet::default()),
            after_end: std::sync::OnceLock::new(),
            on_admitted: std::sync::OnceLock::new(),
        }
    }

    /// Deployments take host locks with `locks` (none with `None`): a host another deployment
    /// holds makes the deployment wait up to `locks.wait` (as `running`), then end `failed`
    /// naming the holder, with nothing changed.
    #[must_use]
    pub fn with_locks(mut self, locks: Option<LockSettings>) -> Self {
        self.locks = locks;
        self
    }

    /// Sets what is called with each deployment's id once it has ended (set once; later calls
    /// change nothing).
    pub fn set_after_end(&self, after_end: AfterEnd) {
        let _ = self.after_end.set(after_end);
    }

    /// Sets what is told of each admitted deployment (once; later calls are ignored).
    pub fn set_on_admitted(&self, on_admitted: OnAdmitted) {
        let _ = self.on_admitted.set(on_admitted);
    }

    /// Deployments whose request has `health.http` make the check through `probe`.
    #[must_use]
    pub fn with_health_probe(mut self, probe: Option<Arc<dyn vesemir_core::ports::HealthProbe>>) -> Self {
        self.driver.health_probe = probe;
        self
    }

    /// Deployments keep HAProxy's checks running while their hosts are out (the operator's
    /// `[driver] checks_while_out`: [`DriverConfig::checks_while_out`]).
    #[must_use]
    pub fn with_checks_while_out(mut self, on: bool) -> Self {
        self.driver.checks_while_out = on;
        self
    }

    /// The store deployments are kept in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn lock_active(&self) -> MutexGuard<'_, ActiveSet> {
        // Only plain map updates happen under this lock; a poisoned lock still holds a usable map.
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks deployments left queued or running by a previous server `interrupted` (call once
    /// at startup, before serving).
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let interrupted = self.store.interrupt_unfinished(now_ms()).await?;
        for d in &interrupted {
            let labels = labels(&d.application, &d.environment, &d.team);
            warn!(
                deployment = d.id,
                application = %d.application,
                environment = %d.environment,
                out_of_rotation = ?d.out_of_rotation,
                "deployment was interrupted by a server stop: check the hosts that may be out of rotation"
            );
            self.metrics.deployment_ended(&labels, Status::Interrupted, None);
            self.metrics.interrupted_out_of_rotation(&labels, d.out_of_rotation.len() as u64);
        }
        Ok(interrupted.len())
    }

    /// Checks the fleet's real state before admission, as `prepare` will when the deployment
    /// runs: target servers not in rotation (with `servers_not_in_rotation = "refuse"`), a
    /// backend whose out-of-rotation budget is used up, a server found by name with another
    /// address. Only those refusals are returned, so the API answers 422 and stores nothing;
    /// anything else (an inventory down, a lookup that fails) is left for the run to report, as
    /// before. Skipped while any deployment is queued or running on this server or on another
    /// instance sharing its database (before the check, and again after a refusal): its hosts are
    /// out of rotation by its own doing, and this one may be queued behind it (or refused with
    /// 409); `prepare` makes the same check when it starts, and a refusal then ends it failed
    /// with the same message.
    pub async fn precheck(&self, request: &DeploymentRequest, ports: &Ports) -> Result<(), PrepareError> {
        self.precheck_hosts(request, ports, None).await
    }

    /// The plan a deployment of `request` would run now (issue 17, the web page's preview):
    /// its hosts found through the inventory, their servers and states read, the batches or
    /// window planned, as `prepare` does when it starts; no host lock is taken and nothing is
    /// changed. In a task of its own (a port that panics is a refusal here), bounded like
    /// [`precheck`](Self::precheck).
    pub async fn preview(&self, request: &DeploymentRequest, ports: &Ports) -> Result<Prepared, String> {
        let bound = self.driver.call_timeout.saturating_mul(3);
        let driver = DriverConfig { locks: None, only_hosts: None, ..self.driver.clone() };
        let (request, ports) = (Arc::new(request.clone()), ports.clone());
        let preview = tokio::spawn(async move {
            tokio::time::timeout(bound, vesemir_core::prepare(request, &ports, &driver)).await
        });
        match preview.await {
            Ok(Ok(Ok(prepared))) => Ok(prepared),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => {
                Err(format!("finding the hosts took longer than {}", humantime::format_duration(bound)))
            }
            Err(e) => Err(format!("finding the hosts failed unexpectedly: {e}")),
        }
    }

    /// [`precheck`](Self::precheck) of a follow-up limited to `only_hosts`.
    pub async fn precheck_hosts(
        &self,
        request: &DeploymentRequest,
        ports: &Ports,
        only_hosts: Option<std::collections::BTreeSet<vesemir_core::name::HostName>>,
    ) -> Result<(), PrepareError> {
        if self.active_count() > 0 || self.active_in_database().await {
            return Ok(());
        }
        let bound = self.driver.call_timeout.saturating_mul(3);
        let driver = DriverConfig { only_hosts, ..self.driver.clone() };
        let (request, ports) = (Arc::new(request.clone()), ports.clone());
        // In a task of its own: a port that panics must not take the handler down; the
        // deployment is then admitted and its own run records the panic as a failure.
        let check = tokio::spawn(async move {
            tokio::time::timeout(bound, vesemir_core::prepare(request, &ports, &driver)).await
        });
        match check.await {
            Ok(Ok(Err(
                e @ (PrepareError::NotInRotation { .. }
                | PrepareError::Budget { .. }
                | PrepareError::AddressMismatch { .. }),
            ))) => {
                // A deployment admitted meanwhile (here or on another instance) may be what took
                // the servers out: the rule above applies, judged again now.
                if self.active_count() > 0 || self.active_in_database().await {
                    return Ok(());
                }
                Err(e)
            }
            Err(panicked) => {
                error!(error = %panicked, "the check before admission panicked: admitting, the run records it");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether any deployment is queued or running on any instance sharing the database (true
    /// when the database cannot tell: the run makes the check anyway).
    async fn active_in_database(&self) -> bool {
        for status in [Status::Running, Status::Queued] {
            let filter = ListFilter { status: Some(status), limit: 1, ..ListFilter::default() };
            match self.store.list(&filter).await {
                Ok(found) if found.is_empty() => {}
                _ => return true,
            }
        }
        false
    }

    /// Admits a validated deployment and starts it in the background.
    pub async fn submit(
        self: &Arc<Self>,
        request: DeploymentRequest,
        ports: Ports,
        new: NewDeployment,
    ) -> Result<Submitted, SubmitError> {
        self.submit_with(request, ports, new, Origin::default(), Vec::new()).await
    }

    /// [`submit`](Self::submit) of a follow-up or of a request with secret variables: `origin`
    /// (what it retries or rolls back, the hosts it is limited to) is stored before it starts,
    /// and each of `secrets` (the values of the request's secret variables) is masked in every
    /// event before it is stored, logged or streamed.
    pub async fn submit_with(
        self: &Arc<Self>,
        request: DeploymentRequest,
        ports: Ports,
        new: NewDeployment,
        origin: Origin,
        secrets: Vec<String>,
    ) -> Result<Submitted, SubmitError> {
        let _admission = self.admission.lock().await;
        if self.closing.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = self.store.by_idempotency_key(&new.requested_by, key).await? {
                if existing.body_sha256 != new.body_sha256 {
                    return Err(SubmitError::KeyReused(Box::new(existing)));
                }
                return Ok(Submitted::Existing(Box::new(existing)));
            }
        }
        let target = (new.application.clone(), new.environment.clone());
        let running = self.lock_active().by_target.get(&target).copied();
        if let Some(running) = running {
            if let Some(record) = self.store.get(running).await? {
                return Err(SubmitError::Conflict(Box::new(record)));
            }
        }
        let queued = self.queued.load(Ordering::SeqCst);
        if queued >= self.limits.max_queued_deployments {
            return Err(SubmitError::QueueFull(queued));
        }
        let quota = self.limits.max_queued_per_team;
        let team_queued = self.team_queue.queued(&new.team);
        if team_queued >= quota {
            return Err(SubmitError::TeamQuota { team: new.team.clone(), queued: team_queued, quota });
        }
        // The database decides across instances: the key, and one active deployment per target.
        let id = match self.store.insert(&new).await? {
            Inserted::New(id) => id,
            Inserted::Existing(record) if record.body_sha256 != new.body_sha256 => {
                return Err(SubmitError::KeyReused(record))
            }
            Inserted::Existing(record) => return Ok(Submitted::Existing(record)),
            Inserted::Conflict(record) => return Err(SubmitError::Conflict(record)),
        };
        if origin != Origin::default() {
            self.store.set_origin(id, &origin).await?;
        }
        let active = Active {
            control: Control::new(),
            waiting_for_confirmation: Arc::new(AtomicBool::new(false)),
            cancel: Arc::new(Notify::new()),
            events: broadcast::channel(LIVE_CAPACITY).0,
            target: target.clone(),
            secrets: Arc::new(secrets),
            aborted_at_shutdown: Arc::new(AtomicBool::new(false)),
        };
        {
            let mut set = self.lock_active();
            set.by_id.insert(id, active.clone());
            set.by_target.insert(target, id);
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        // Checked above under the same admission lock: the quota holds.
        let _ = self.team_queue.enter(&new.team, usize::MAX, &self.metrics);
        self.metrics.queued(1.0);
        if let Some(on_admitted) = self.on_admitted.get() {
            on_admitted(id, active.events.subscribe());
        }
        tokio::spawn(self.clone().drive(id, Arc::new(request), ports, active));
        Ok(Submitted::New(id))
    }

    /// Live events of a deployment that has not ended, if it has not.
    pub fn subscribe(&self, id: i64) -> Option<LiveEvents> {
        self.lock_active().by_id.get(&id).map(|a| a.events.subscribe())
    }

    /// Asks a queued or running deployment to cancel. False if it is not active. One that
    /// another instance runs gets the request through the database: that instance cancels it
    /// at its next lease renewal ([`crate::lease`]).
    pub async fn cancel(&self, id: i64) -> Result<bool, StoreError> {
        let active = self.lock_active().by_id.get(&id).cloned();
        let Some(active) = active else {
            let running_elsewhere = self.store.get(id).await?.is_some_and(|d| !d.status.is_finished());
            if running_elsewhere {
                self.store.mark_cancel_requested(id).await?;
            }
            return Ok(running_elsewhere);
        };
        active.control.cancel();
        active.cancel.notify_one();
        self.store.mark_cancel_requested(id).await?;
        Ok(true)
    }

    /// Acts on a lease renewal: stops (aborts) each deployment whose lease was lost, so that
    /// it makes no further change, and cancels each one cancelled on another instance.
    pub(crate) fn apply_renewal(&self, renewal: &crate::store::Renewal) {
        let set = self.lock_active();
        for id in &renewal.lost {
            if let Some(active) = set.by_id.get(id) {
                error!(deployment = id, "this instance lost the deployment's lease: stopping it at once");
                active.control.abort();
                active.cancel.notify_one();
            }
        }
        for (id, cancel_requested) in &renewal.held {
            if let Some(active) = set.by_id.get(id).filter(|a| *cancel_requested && !a.control.is_cancelled())
            {
                info!(deployment = id, "cancelled on another instance: cancelling");
                active.control.cancel();
                active.cancel.notify_one();
            }
        }
    }

    /// Stops every deployment of this instance at once: its leases may have expired (the
    /// database could not be reached for a whole lease), and another instance may end them.
    pub(crate) fn abort_all(&self) {
        for (id, active) in &self.lock_active().by_id {
            error!(deployment = id, "leases could not be renewed: stopping the deployment at once");
            active.control.abort();
            active.cancel.notify_one();
        }
    }

    /// Confirms a running deployment's canary (for `strategy.canary.confirm`). False if it is
    /// not active.
    pub fn confirm(&self, id: i64) -> bool {
        let active = self.lock_active().by_id.get(&id).cloned();
        match active {
            Some(active) => {
                active.control.confirm();
                // A rollout taken over while its canary waited waits on this flag
                // (`takeover.rs`); a running one clears it at its next batch anyway.
                active.waiting_for_confirmation.store(false, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Pauses a queued or running deployment: no new host starts until [`resume`](Self::resume);
    /// hosts in flight finish. Pausing a paused deployment changes nothing. False if it is not
    /// active.
    pub fn pause(&self, id: i64) -> bool {
        let active = self.lock_active().by_id.get(&id).cloned();
        let Some(active) = active else { return false };
        active.control.pause();
        self.count_paused();
        true
    }

    /// Resumes a paused deployment: hosts start again.
    pub fn resume(&self, id: i64) -> Result<(), ResumeRefused> {
        let active = self.lock_active().by_id.get(&id).cloned();
        let Some(active) = active else { return Err(ResumeRefused::NotActive) };
        if !active.control.is_paused() {
            return Err(ResumeRefused::NotPaused);
        }
        active.control.resume();
        self.count_paused();
        Ok(())
    }

    /// Whether a queued or running deployment is paused and whether its canary waits for
    /// confirmation; `None` once it has ended.
    pub fn live_state(&self, id: i64) -> Option<LiveState> {
        self.lock_active().by_id.get(&id).map(|a| LiveState {
            paused: a.control.is_paused(),
            waiting_for_confirmation: a.waiting_for_confirmation.load(Ordering::SeqCst),
        })
    }

    /// Sets the paused-deployments gauge from the active set.
    fn count_paused(&self) {
        let paused = self.lock_active().by_id.values().filter(|a| a.control.is_paused()).count();
        self.metrics.paused(paused);
    }

    /// Stops admissions for good: every submission from now on is refused with
    /// [`SubmitError::ShuttingDown`]. Taken under the admission lock, so a submission racing
    /// with it is either refused or admitted (in the active set, so [`cancel_all`](Self::cancel_all)
    /// sees it) before this returns: none is admitted unseen.
    pub async fn close_admissions(&self) {
        let _admission = self.admission.lock().await;
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether admissions are closed ([`close_admissions`](Self::close_admissions)).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Aborts every deployment still queued or running (shutdown, past the grace): it stops at
    /// once, starts nothing more, and ends `interrupted` with the servers its journal (and its
    /// report) say may be out of rotation, in the store and in the log. Waits up to `bound` for
    /// them to record that; returns how many had not ended by then (their records are
    /// `interrupted` by the next start, from the same journal).
    pub async fn abort_at_shutdown(&self, bound: Duration) -> usize {
        for (id, active) in &self.lock_active().by_id {
            warn!(deployment = id, "still running past the shutdown grace: aborting it");
            active.aborted_at_shutdown.store(true, Ordering::SeqCst);
            active.control.abort();
            active.cancel.notify_one();
        }
        self.wait_idle(bound).await
    }

    /// Waits up to `bound` for every deployment to end; returns how many have not.
    async fn wait_idle(&self, bound: Duration) -> usize {
        // A bound past the clock's range (not from a validated config) waits without end.
        let deadline = tokio::time::Instant::now().checked_add(bound);
        while self.active_count() > 0 && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.active_count()
    }

    /// Cancels every queued or running deployment and waits up to `grace` for them to end.
    /// Returns how many were still running after it.
    pub async fn cancel_all(&self, grace: Duration) -> usize {
        let ids: Vec<i64> = self.lock_active().by_id.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.cancel(id).await {
                warn!(deployment = id, error = %e, "recording a cancel at shutdown failed");
            }
        }
        self.wait_idle(grace).await
    }

    /// Deployments queued or running now.
    pub fn active_count(&self) -> usize {
        self.lock_active().by_id.len()
    }

    async fn drive(self: Arc<Self>, id: i64, request: Arc<DeploymentRequest>, ports: Ports, active: Active) {
        let guard = ActiveGuard { runner: self.clone(), id };
        let span = info_span!(
            "deployment",
            deployment = id,
            application = %request.application,
            environment = %request.environment,
            team = %request.team,
            version = %request.version,
            requested_by = %request.requested_by,
        );
        let labels =
            labels(request.application.as_str(), request.environment.as_str(), request.team.as_str());
        let inner = self.drive_inner(id, &request, &ports, &active, &labels).instrument(span.clone());
        // A panic anywhere in this task (a bug) still ends the record: failed, naming the hosts
        // its stored events say may be out of rotation. Never a silent `running` record.
        let outcome = match AssertUnwindSafe(inner).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(payload) => {
                let events = self.store.events_after(id, 0, i64::MAX).await.unwrap_or_default();
                let crash = Crash::from_panic(&*payload, Progress::from_events(&events));
                self.end_crashed(id, &labels, &crash, None).instrument(span.clone()).await
            }
        };
        if let Err(e) = outcome {
            span.in_scope(|| error!(error = %e, "the deployment's record could not be written"));
        }
        drop(guard);
        if let Some(after_end) = self.after_end.get() {
            after_end(id);
        }
    }

    async fn drive_inner(
        &self,
        id: i64,
        request: &Arc<DeploymentRequest>,
        ports: &Ports,
        active: &Active,
        labels: &[(&'static str, String)],
    ) -> Result<(), StoreError> {
        info!("queued");
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            () = active.cancel.notified() => None,
        };
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.team_queue.leave(request.team.as_str(), &self.metrics);
        self.metrics.queued(-1.0);
        let Some(_permit) = permit else {
            info!("cancelled while queued");
            self.end(id, labels, Status::Cancelled, Some("cancelled before it started".into()), None, None)
                .await?;
            return Ok(());
        };
        let started = now_ms();
        self.metrics.in_flight(1.0);
        let _gauge = GaugeGuard(&self.metrics);
        self.store.mark_running(id, started).await?;
        info!("running");

        let prepared = match self.prepare(id, request, ports).await {
            Ok(prepared) => prepared,
            Err(message) => {
                return self.end(id, labels, Status::Failed, Some(message), None, Some(started)).await;
            }
        };
        let hosts: Vec<HostRecord> = prepared
            .plan
            .hosts
            .iter()
            .enumerate()
            .map(|(i, planned)| HostRecord::planned(i, planned))
            .collect();
        self.store.set_plan(id, &hosts).await?;
        let journal =
            match DeploymentJournal::start(self.store.clone(), id, &prepared, ports, &active.control).await {
                Ok(journal) => journal,
                Err(message) => {
                    return self.end(id, labels, Status::Failed, Some(message), None, Some(started)).await;
                }
            };

        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = EventWriter {
            store: self.store.clone(),
            id,
            live: active.events.clone(),
            deployment: Span::current(),
            hosts,
            failure: journal.failure(),
        };
        let writer = tokio::spawn(writer.run(receiver).instrument(Span::current()));
        let sink = journal.sink(ChannelSink(
            sender,
            active.waiting_for_confirmation.clone(),
            active.secrets.clone(),
        ));
        let (report, timed_out) = self.run(&prepared, journal.ports(), &active.control, &sink).await;
        drop(sink);
        if writer.await.is_err() {
            error!("the event writer panicked: some events may be missing from the database");
        }
        let store_failure = journal.close().await;
        let unfinished = report.as_ref().map_or(true, |r| {
            !matches!(
                r.outcome,
                Some(DeploymentOutcome::Succeeded | DeploymentOutcome::CompletedWithFailures)
            )
        });
        if unfinished && active.aborted_at_shutdown.load(Ordering::SeqCst) {
            return self.end_aborted_at_shutdown(id, labels, &report, store_failure, started).await;
        }
        self.record_outcome(id, labels, report, timed_out, store_failure, started).await?;
        if let Some(parent) = self.store.origin(id).await?.and_then(|o| o.resume) {
            self.resume_servers(id, parent, request, ports).await?;
        }
        Ok(())
    }

    /// After follow-up `id` of `parent` (which took the servers `parent` left out as they were):
    /// those whose hosts succeeded go back to the state `parent` found them in, health gate
    /// first, and are marked recovered in both journals; their host records say they are in
    /// rotation again.
    async fn resume_servers(
        &self,
        id: i64,
        parent: i64,
        request: &DeploymentRequest,
        ports: &Ports,
    ) -> Result<(), StoreError> {
        let mut hosts = self.store.hosts(id).await?;
        let succeeded: std::collections::BTreeSet<vesemir_core::name::HostName> = hosts
            .iter()
            .filter(|h| h.state.outcome == Some(HostOutcome::Succeeded))
            .map(|h| h.state.name.clone())
            .collect();
        if succeeded.is_empty() {
            return Ok(());
        }
        let config = vesemir_core::journal::RecoveryConfig {
            up_timeout: request
                .changeset
                .health
                .load_balancer_up
                .unwrap_or(vesemir_core::journal::RecoveryConfig::default().up_timeout),
            call_timeout: self.limits.call_timeout,
        };
        let recovered = crate::journal::recover_hosts(
            &*self.store,
            parent,
            ports,
            request,
            &config,
            self.driver.output_limit,
            Some(&succeeded),
        )
        .await;
        let recovery = match recovered {
            Ok(recovery) => recovery,
            Err(e) => {
                warn!(parent, error = %e, "putting back the servers the parent left out failed");
                return Ok(());
            }
        };
        let mut back = Vec::new();
        for s in &recovery.servers {
            if let vesemir_core::journal::RecoveryOutcome::LeftOut { reason } = &s.outcome {
                warn!(parent, host = %s.host, %reason, "left out: it failed its health gate");
                continue;
            }
            let (Ok(host), Ok(server)) =
                (vesemir_core::name::HostName::new(&s.host), vesemir_core::name::ServerName::new(&s.server))
            else {
                continue;
            };
            let entry = vesemir_core::journal::JournalEntry::Recovered(vesemir_core::journal::Recovered {
                host,
                server,
            });
            self.store.append_journal(id, &entry).await?;
            back.push(s.host.clone());
        }
        for h in hosts.iter_mut().filter(|h| back.contains(&h.state.name.to_string())) {
            h.state.rotation = vesemir_core::event::Rotation::InRotation;
        }
        let changed: Vec<HostRecord> =
            hosts.into_iter().filter(|h| back.contains(&h.state.name.to_string())).collect();
        self.store.append_events(id, &[], &changed).await?;
        info!(parent, restored = ?back, "servers the parent left out are back in rotation");
        Ok(())
    }

    /// Records how a deployment that ran ended: its report's outcome, or the crash of its
    /// rollout task, a timeout, or the store failure that stopped it (with the hosts it may have
    /// left out).
    async fn record_outcome(
        &self,
        id: i64,
        labels: &[(&'static str, String)],
        report: Result<DeploymentReport, Crash>,
        timed_out: bool,
        store_failure: Option<String>,
        started: i64,
    ) -> Result<(), StoreError> {
        let report = match report {
            Ok(report) => report,
            Err(crash) => return self.end_crashed(id, labels, &crash, Some(started)).await,
        };
        for out in report.hosts.iter().filter_map(|h| h.out_of_rotation) {
            self.metrics.host_out_of_rotation(labels, out.as_secs_f64());
        }
        let status = match report.outcome {
            Some(DeploymentOutcome::Succeeded) => Status::Succeeded,
            Some(DeploymentOutcome::CompletedWithFailures) => Status::CompletedWithFailures,
            Some(DeploymentOutcome::Stopped) => Status::Stopped,
            Some(DeploymentOutcome::Cancelled) => Status::Cancelled,
            None => Status::Stopped,
        };
        let mut error =
            timed_out.then(|| "aborted: ran longer than the server's deployment_timeout".to_owned());
        let Some(reason) = store_failure else {
            return self.end(id, labels, status, error, Some(&report), Some(started)).await;
        };
        let (status, out) = crate::journal::stopped_by_store(&reason, &report, status, &mut error);
        self.end(id, labels, status, error, Some(&report), Some(started)).await?;
        self.store.set_out_of_rotation(id, &out).await
    }

    /// Finds and plans the hosts within `deployment_timeout`; on failure, why (nothing changed).
    async fn prepare(
        &self,
        id: i64,
        request: &Arc<DeploymentRequest>,
        ports: &Ports,
    ) -> Result<Prepared, String> {
        let only_hosts = match self.store.origin(id).await {
            Ok(origin) => origin.and_then(|o| o.only_hosts).map(|hosts| {
                hosts.iter().filter_map(|h| vesemir_core::name::HostName::new(h).ok()).collect()
            }),
            Err(e) => return Err(format!("could not start, nothing was changed: {e}")),
        };
        let driver = DriverConfig { locks: self.lock_policy(id, request), only_hosts, ..self.driver.clone() };
        let prepared = tokio::time::timeout(
            self.limits.deployment_timeout,
            vesemir_core::prepare(request.clone(), ports, &driver),
        )
        .await;
        match prepared {
            Ok(Ok(prepared)) => Ok(prepared),
            Ok(Err(e)) => {
                warn!(error = %e, "could not start: nothing was changed");
                Err(format!("could not start, nothing was changed: {e}"))
            }
            Err(_) => {
                Err("could not start: finding and planning the hosts took longer than deployment_timeout"
                    .into())
            }
        }
    }

    /// The host locks deployment `id` takes: held by its id, requester and target, on this
    /// server's machine.
    fn lock_policy(&self, id: i64, request: &DeploymentRequest) -> Option<LockPolicy> {
        let settings = self.locks.as_ref()?;
        let holder = LockHolder {
            deployment: id.to_string(),
            requested_by: request.requested_by.to_string(),
            application: request.application.to_string(),
            environment: request.environment.to_string(),
            machine: settings.machine.clone(),
            since_unix: u64::try_from(now_ms() / 1000).unwrap_or_default(),
        };
        Some(LockPolicy { holder, stale_after: settings.stale_after, wait: settings.wait, on_wait: None })
    }

    /// Runs the rollout to its end, its events into `sink`, aborting it past
    /// `deployment_timeout`. Returns the report (or the crash of a panic in the rollout) and
    /// whether it was aborted so.
    async fn run(
        &self,
        prepared: &Prepared,
        ports: &Ports,
        control: &Control,
        sink: &dyn EventSink,
    ) -> (Result<DeploymentReport, Crash>, bool) {
        let mut timed_out = false;
        let run = vesemir_core::run_catching_panics(prepared, ports, sink, control, &self.driver);
        tokio::pin!(run);
        // A cancel sent before the driver subscribed to its control would be missed: send it
        // again once the driver has been polled.
        let recheck = async {
            tokio::task::yield_now().await;
            if control.is_cancelled() {
                control.cancel();
            }
            std::future::pending::<()>().await;
        };
        tokio::pin!(recheck);
        let deadline = tokio::time::sleep(self.limits.deployment_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                report = &mut run => return (report, timed_out),
                () = &mut recheck => {}
                () = &mut deadline, if !timed_out => {
                    timed_out = true;
                    warn!("ran longer than deployment_timeout: aborting");
                    control.abort();
                }
            }
        }
    }

    async fn end(
        &self,
        id: i64,
        labels: &[(&'static str, String)],
        status: Status,
        error: Option<String>,
        report: Option<&DeploymentReport>,
        started: Option<i64>,
    ) -> Result<(), StoreError> {
        let finished_ms = now_ms();
        let totals = report.map(|r| r.totals);
        let hosts = report
            .map(|r| r.hosts.iter().enumerate().map(|(i, h)| HostRecord::reported(i, h)).collect())
            .unwrap_or_default();
        let finish = Finish { status, error, totals, hosts, out_of_rotation: Vec::new(), finished_ms };
        self.record_end(id, labels, finish, started).await
    }

    /// Ends a deployment whose task panicked: failed, with `internal error: ... (a bug: please
    /// report)` and the hosts that may be out of rotation. Each host keeps the state its events
    /// gave it.
    async fn end_crashed(
        &self,
        id: i64,
        labels: &[(&'static str, String)],
        crash: &Crash,
        started: Option<i64>,
    ) -> Result<(), StoreError> {
        let out_of_rotation: Vec<String> = crash.out_of_rotation().iter().map(ToString::to_string).collect();
        error!(error = %crash, out_of_rotation = ?out_of_rotation, "the deployment's task panicked: check the hosts that may be out of rotation");
        let finish = Finish {
            status: Status::Failed,
            error: Some(crash.to_string()),
            totals: Some(crash.progress.totals()),
            hosts: Vec::new(),
            out_of_rotation,
            finished_ms: now_ms(),
        };
        self.record_end(id, labels, finish, started).await
    }

    /// Ends a deployment that shutdown aborted past its grace: `interrupted`, like a deployment
    /// the server's stop interrupted, with `out_of_rotation` the servers its journal leaves
    /// unfinished (what `POST .../recover` puts back) together with those its report or crash
    /// says may be out; the list is logged too.
    async fn end_aborted_at_shutdown(
        &self,
        id: i64,
        labels: &[(&'static str, String)],
        report: &Result<DeploymentReport, Crash>,
        store_failure: Option<String>,
        started: i64,
    ) -> Result<(), StoreError> {
        let mut out: std::collections::BTreeSet<String> = match self.store.journal(id).await {
            Ok(entries) => {
                crate::store::hosts_left_by_journal(&entries).unwrap_or_default().into_iter().collect()
            }
            Err(e) => {
                warn!(error = %e, "reading the journal at shutdown failed: the report's hosts are recorded");
                std::collections::BTreeSet::new()
            }
        };
        let (totals, hosts) = match report {
            Ok(report) => {
                out.extend(report.out_of_rotation().map(|h| h.name.to_string()));
                let hosts =
                    report.hosts.iter().enumerate().map(|(i, h)| HostRecord::reported(i, h)).collect();
                (Some(report.totals), hosts)
            }
            Err(crash) => {
                out.extend(crash.out_of_rotation().iter().map(ToString::to_string));
                (Some(crash.progress.totals()), Vec::new())
            }
        };
        let out_of_rotation: Vec<String> = out.into_iter().collect();
        let listed = if out_of_rotation.is_empty() { "none".to_owned() } else { out_of_rotation.join(", ") };
        let mut error = format!(
            "{} (aborted: still running past the server's shutdown_grace). Hosts that may be out of rotation: {listed}",
            crate::store::STOPPED
        );
        if let Some(reason) = store_failure {
            error.push_str(&format!("; before that: {reason}"));
        }
        error!(
            out_of_rotation = ?out_of_rotation,
            "aborted at shutdown past the grace: check the hosts that may be out of rotation (POST .../recover puts back what the journal recorded)"
        );
        self.metrics.interrupted_out_of_rotation(labels, out_of_rotation.len() as u64);
        let finish = Finish {
            status: Status::Interrupted,
            error: Some(error),
            totals,
            hosts,
            out_of_rotation,
            finished_ms: now_ms(),
        };
        self.record_end(id, labels, finish, Some(started)).await
    }

    /// Writes how a deployment ended and counts it in the metrics.
    async fn record_end(
        &self,
        id: i64,
        labels: &[(&'static str, String)],
        finish: Finish,
        started: Option<i64>,
    ) -> Result<(), StoreError> {
        let (status, totals, finished_ms) = (finish.status, finish.totals, finish.finished_ms);
        self.store.finish(id, &finish).await?;
        #[allow(clippy::cast_precision_loss)]
        let duration = started.map(|s| (finished_ms - s).max(0) as f64 / 1000.0);
        self.metrics.deployment_ended(labels, status, duration);
        if let Some(t) = totals {
            for (outcome, count) in [
                (HostOutcome::Succeeded, t.succeeded),
                (HostOutcome::Failed, t.failed),
                (HostOutcome::Unreachable, t.unreachable),
                (HostOutcome::Skipped, t.skipped),
                (HostOutcome::Cancelled, t.cancelled),
            ] {
                if count > 0 {
                    self.metrics.hosts(labels, outcome, count as u64);
                }
            }
        }
        info!(status = %status, "ended");
        Ok(())
    }
}

fn labels(application: &str, environment: &str, team: &str) -> Vec<(&'static str, String)> {
    vec![
        ("application", application.to_owned()),
        ("environment", environment.to_owned()),
        ("team", team.to_owned()),
    ]
}

/// How the event writer retries a batch the database refused: four attempts, 100 ms doubling,
/// with jitter so that several deployments do not retry in step.
const STORE_RETRY: Backoff = Backoff {
    attempts: 4,
    initial: Duration::from_millis(100),
    max: Duration::from_millis(400),
    jitter: 0.2,
};

/// Stores a deployment's events in batches, with the hosts they changed, then broadcasts them:
/// an event is in the database before any live follower sees it, so a follower that subscribes
/// and then replays misses nothing. Hosts' states come from the core's fold of the events
/// ([`Progress`]), written only when they changed.
struct EventWriter {
    store: Arc<dyn Store>,
    id: i64,
    live: broadcast::Sender<Arc<Event>>,
    deployment: Span,
    /// The plan's hosts as last written, in plan order.
    hosts: Vec<HostRecord>,
    /// Stops the deployment when events cannot be stored.
    failure: StoreFailure,
}

impl EventWriter {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Event>) {
        let mut progress = Progress::with_hosts(self.hosts.iter().map(|h| h.state.name.clone()));
        let mut spans: HashMap<String, Span> = HashMap::new();
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            for event in &batch {
                log_event(&self.deployment, &mut spans, event);
            }
            progress.apply_all(&batch);
            let changed = self.changed_hosts(&progress);
            self.store_batch(&batch, &changed).await;
            for event in batch {
                // No follower is not an error.
                let _ = self.live.send(Arc::new(event));
            }
        }
    }

    /// The hosts whose state `progress` changed since they were last written, now updated.
    fn changed_hosts(&mut self, progress: &Progress) -> Vec<HostRecord> {
        let mut changed = Vec::new();
        for record in &mut self.hosts {
            if let Some(state) = progress.host(&record.state.name) {
                if *state != record.state {
                    record.state = state.clone();
                    changed.push(record.clone());
                }
            }
        }
        changed
    }

    async fn store_batch(&self, batch: &[Event], hosts: &[HostRecord]) {
        let seed = batch.first().map_or(0, |e| e.seq) ^ self.id.unsigned_abs();
        let mut retries = STORE_RETRY.retries(seed);
        loop {
            match self.store.append_events(self.id, batch, hosts).await {
                Ok(()) => return,
                Err(e) => match retries.after_failure() {
                    Some(delay) => {
                        let attempt = retries.failures();
                        warn!(parent: &self.deployment, error = %e, attempt, "storing events failed: retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        error!(parent: &self.deployment, error = %e, "storing events failed: they are missing from the history");
                        self.failure.failed(format!("the deployment's events could not be stored: {e}"));
                        return;
                    }
                },
            }
        }
    }
}

/// Logs an event in its deployment's span, or in its host's span (one per host).
fn log_event(deployment: &Span, hosts: &mut HashMap<String, Span>, event: &Event) {
    let host_span = |hosts: &mut HashMap<String, Span>, host: &str| {
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| info_span!(parent: deployment, "host", host = %host))
            .clone()
    };
    match &event.kind {
        EventKind::HostPhase { host, phase } => {
            let span = host_span(hosts, host.as_str());
            span.in_scope(|| info!(seq = event.seq, phase = %phase, "host phase"));
        }
        EventKind::HostOutput { host, step, stream, line } => {
            let span = host_span(hosts, host.as_str());
            span.in_scope(|| debug!(seq = event.seq, step = %step, stream = ?stream, line = %line, "output"));
        }
        EventKind::HostFinished { host, outcome, phase, error, rotation, .. } => {
            let span = host_span(hosts, host.as_str());
            hosts.remove(host.as_str());
            span.in_scope(|| {
                info!(seq = event.seq, outcome = %outcome, phase = %phase, error = error.as_deref().unwrap_or(""), rotation = %rotation, "host finished");
            });
        }
        _ => {
            if let Some(line) = render::describe(event) {
                deployment.in_scope(|| info!(seq = event.seq, "{line}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vesemir_core::event::{Event, EventKind};
    use vesemir_core::name::HostName;
    use vesemir_core::ports::OutputStream;

    use super::redact;

    #[test]
    fn secrets_are_masked_in_output_lines_and_messages_and_other_events_pass_unchanged() {
        let host = HostName::new("web-01").expect("name");
        let line = Event {
            seq: 3,
            elapsed: Duration::from_secs(1),
            kind: EventKind::HostOutput {
                host: host.clone(),
                step: "install".into(),
                stream: OutputStream::Stdout,
                line: "connecting with \"hunter2\" to db".into(),
            },
        };
        let masked = redact(&line, &["hunter2".to_owned()]);
        let text = serde_json::to_string(&masked).expect("json");
        assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
        assert_eq!(masked.seq, 3);
        assert_eq!(redact(&line, &["absent".to_owned()]), line);
    }
}
