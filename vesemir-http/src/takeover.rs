//! Takeover: a deployment whose instance stopped renewing its lease (it died, or lost the
//! database) is taken by another instance sharing the database, under a new lease epoch
//! ([`Store::take_over_unheld`]), and finished there.
//!
//! 1. A `handover` event (from, to, epoch, what it does) goes into the deployment's record:
//!    every event after it is the new instance's.
//! 2. The deployment's record (each host's state) and its journal are checked against the load
//!    balancers' real state (the backend's listing) by the core's
//!    [`plan_takeover`](vesemir_core::journal::takeover::plan_takeover): hosts that ended stay
//!    as they ended; hosts in flight are checked with the journal's recovery (health gate, then
//!    their original state on every load balancer instance; one that fails stays out, reported
//!    as failed).
//! 3. With `strategy.on_takeover = "resume"` (the default) the rollout goes on over the hosts
//!    not started and those in flight that went back (the dead instance may have stopped in
//!    their steps): the same record, events numbered on, one journal. With `"restore"` no other
//!    host starts and the deployment ends `interrupted`, with the hosts left out.
//! 4. The rest keeps what the rollout had used up or passed (the core's
//!    [`plan_resumption`](vesemir_core::journal::takeover::plan_resumption) over its events):
//!    it tolerates only the failures left of the whole deployment's `max_failures` (none left:
//!    it starts no host and ends `stopped`, as the rollout would have); a canary confirmed is not
//!    asked for again, one waiting keeps waiting (a confirmation given to any instance opens it),
//!    a canary batch in flight stays the canary; a pause ordered on any instance holds until a
//!    resume; a cancel asked before ends it `cancelled`. Nothing starts before those gates open.
//!
//! The resumed rollout runs like any deployment of this instance: pause, resume, confirm,
//! cancel and live events reach it, and the lease keeper fences it. A deployment taken over
//! while still queued simply starts here. A child module of the runner: it drives deployments
//! with the runner's own machinery.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, Notify};
use tracing::{error, info, info_span, warn, Instrument, Span};
use vesemir_core::event::{
    DeploymentOutcome, EventKind, HostOutcome, Phase, Rotation, StopReason, Totals, WaitReason,
};
use vesemir_core::journal::takeover::{
    plan_resumption, plan_takeover, rollout_so_far, CanaryProgress, PendingGate, RecordedHost, RolloutSoFar,
    TakeoverPlan,
};
use vesemir_core::journal::{RecoveryConfig, RecoveryOutcome, Unfinished};
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::request::spec::RequestSpec;
use vesemir_core::request::{DeploymentRequest, InlineChangesets, OnTakeover, RawQueries, RequestPolicy};
use vesemir_core::{Control, DeploymentReport, DriverConfig, Event, EventSink, Ports};

use super::{labels, Active, ActiveGuard, ChannelSink, EventWriter, Runner, LIVE_CAPACITY};
use crate::api::AppState;
use crate::clock::now_ms;
use crate::journal::{DeploymentJournal, RecoverError};
use crate::store::{DeploymentRecord, Finish, HostRecord, Status, StoreError, TakenOver};

/// Takes over every deployment no live instance holds and finishes each in its own task; then
/// ends as `interrupted` whatever is left unheld (a store that takes nothing over, SQLite: one
/// server per database). Returns how many were taken over and how many interrupted.
pub(crate) async fn sweep(app: &AppState) -> Result<(usize, usize), StoreError> {
    let taken = app.store.take_over_unheld().await?;
    let count = taken.len();
    for t in taken {
        let app = app.clone();
        let span = info_span!(
            "takeover",
            deployment = t.id,
            from = t.from.as_deref().unwrap_or("none"),
            epoch = t.epoch
        );
        tokio::spawn(async move { take_over(app, t).await }.instrument(span));
    }
    let interrupted = app.runner.recover().await?;
    Ok((count, interrupted))
}

/// Deployment `record`'s request as validated on this server now, with why it cannot be resumed
/// (restored instead) when its secret variables are stored masked; on failure, why it cannot run here.
fn validated_request(
    record: &DeploymentRecord,
    app: &AppState,
) -> Result<(DeploymentRequest, Option<String>), String> {
    let policy = RequestPolicy {
        playbooks: &app.playbooks,
        inline_changesets: InlineChangesets::Refused,
        raw_queries: RawQueries::Refused,
    };
    let spec = RequestSpec::from_json(&record.request)
        .map_err(|e| format!("its request does not read on this server: {e}"))?;
    let masked: Vec<String> =
        spec.variables.iter().filter(|(_, v)| *v == crate::catalog::MASK).map(|(k, _)| k.clone()).collect();
    let request =
        spec.validate(&policy).map_err(|e| format!("its request no longer validates on this server: {e}"))?;
    let no_resume = (!masked.is_empty()).then(|| {
        format!(
            "its secret variables ({}) are stored as *** only, so its steps cannot run here: restored instead of resumed",
            masked.join(", ")
        )
    });
    Ok((request, no_resume))
}

async fn take_over(app: AppState, t: TakenOver) {
    let from = t.from.clone().unwrap_or_else(|| "no instance".to_owned());
    warn!(from = %from, "taking over a deployment whose instance stopped renewing its lease");
    app.metrics.taken_over();
    let outcome = take_over_inner(&app, &t).await;
    if let Err(e) = outcome {
        // Without its end written, its lease lapses and the next sweep (here or elsewhere)
        // takes it again.
        error!(error = %e, "the takeover failed: the deployment is left to the next sweep");
        app.store.release_lease(t.id);
    }
}

async fn take_over_inner(app: &AppState, t: &TakenOver) -> Result<(), StoreError> {
    let id = t.id;
    let store = &app.store;
    let Some(record) = store.get(id).await? else { return Ok(()) };
    let from = t.from.clone().unwrap_or_else(|| "no instance".to_owned());
    let to = store.instance().to_string();
    let (request, no_resume, ports) = match validated_request(&record, app) {
        Ok((request, no_resume)) => match app.factory.ports(&request) {
            Ok(ports) => (request, no_resume, ports),
            Err(e) => {
                return end_unrun(app, &record, &from, &format!("its ports could not be made: {e}")).await
            }
        },
        Err(why) => return end_unrun(app, &record, &from, &why).await,
    };
    let on_takeover = if no_resume.is_some() { OnTakeover::Restore } else { request.strategy.on_takeover };
    let events = store.events_after(id, 0, i64::MAX).await?;
    let so_far = rollout_so_far(&events, request.strategy.canary.is_some());
    let last = events.last().map_or(0, |e| e.seq);
    let started_ms = record.started_ms.unwrap_or(record.created_ms);
    let offset = elapsed_since(started_ms);
    let mut notes = vec![Event {
        seq: last + 1,
        elapsed: offset,
        kind: EventKind::Handover {
            from: t.from.clone(),
            to: to.clone(),
            epoch: u64::try_from(t.epoch).unwrap_or_default(),
            action: on_takeover.as_str().to_owned(),
        },
    }];
    if let Some(why) = &no_resume {
        notes.push(Event {
            seq: last + 2,
            elapsed: offset,
            kind: EventKind::Warning { host: None, message: why.clone() },
        });
    }
    store.append_events(id, &notes, &[]).await?;
    let runner = app.runner.clone();
    let request = Arc::new(request);
    // Orders given on any instance hold across the takeover: a pause, a cancel, a canary
    // waiting for its confirmation.
    let adopted = Adopted {
        paused: record.pause_requested,
        cancelled: record.cancel_requested,
        waiting_for_confirmation: waited_for_confirmation(&so_far),
    };
    if t.status == Status::Queued {
        info!("it had not started: starting it here");
        runner.start_taken_over(id, request, ports, adopted);
        return Ok(());
    }
    let resumed = Resumed {
        id,
        from,
        on_takeover,
        seq: last + u64::try_from(notes.len()).unwrap_or_default(),
        started_ms,
        so_far,
    };
    runner.resume_taken_over(resumed, request, ports, adopted).await
}

/// Whether the canary waited for its confirmation when the deployment was taken over.
fn waited_for_confirmation(so_far: &RolloutSoFar) -> bool {
    matches!(so_far.canary, CanaryProgress::Gated { reason: WaitReason::CanaryConfirmation, .. })
}

/// Ends a deployment taken over that cannot be run here (`why`), as `interrupted`, with the
/// hosts its journal left out, for `POST .../recover` (which says why it cannot either).
async fn end_unrun(
    app: &AppState,
    record: &DeploymentRecord,
    from: &str,
    why: &str,
) -> Result<(), StoreError> {
    error!(reason = %why, "the deployment taken over cannot be run here: ending it interrupted");
    let out = match crate::journal::unfinished(&*app.store, record.id).await {
        Ok(u) => u.servers.iter().map(|s| s.host.to_string()).collect(),
        Err(_) => record.out_of_rotation.clone(),
    };
    let finish = Finish {
        status: Status::Interrupted,
        error: Some(format!(
            "instance {from} stopped renewing its lease; {} took it over and could not go on: {why}",
            app.store.instance()
        )),
        totals: None,
        hosts: Vec::new(),
        out_of_rotation: out,
        finished_ms: now_ms(),
    };
    let labels = labels(&record.application, &record.environment, &record.team);
    app.runner.record_end(record.id, &labels, finish, record.started_ms).await
}

fn elapsed_since(started_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms() - started_ms).unwrap_or_default())
}

/// A running deployment taken over, and where its record is.
#[derive(Debug, Clone)]
struct Resumed {
    id: i64,
    /// The instance that ran it.
    from: String,
    on_takeover: OnTakeover,
    /// The last event number stored.
    seq: u64,
    started_ms: i64,
    /// What its events say the rollout had used up or passed.
    so_far: RolloutSoFar,
}

/// What a deployment taken over carries from its record into this instance's active set.
#[derive(Debug, Clone, Copy)]
struct Adopted {
    /// A pause was the last pause or resume ordered.
    paused: bool,
    /// Someone asked to cancel it.
    cancelled: bool,
    /// Its canary waited for confirmation.
    waiting_for_confirmation: bool,
}

/// How often the wait before the rest of a rollout taken over looks at its orders.
const GATE_POLL: Duration = Duration::from_millis(50);

/// Why the rest of a rollout taken over starts no host (`None`: it goes on).
#[derive(Debug, Clone, Copy)]
enum Halt {
    /// `strategy.on_takeover = "restore"`.
    Restore,
    /// The rollout had stopped starting hosts, or its failures are past `max_failures`.
    Stopped(StopReason),
    /// Someone asked to cancel it.
    Cancelled,
}

impl Halt {
    /// How a host it leaves unstarted ends.
    fn not_started(self) -> HostOutcome {
        match self {
            Halt::Restore | Halt::Cancelled => HostOutcome::Cancelled,
            Halt::Stopped(_) => HostOutcome::Skipped,
        }
    }

    /// Why a host was not deployed, for its record.
    fn why(self) -> String {
        match self {
            Halt::Restore => "on_takeover = restore".to_owned(),
            Halt::Stopped(reason) => format!("the rollout stopped: {reason}"),
            Halt::Cancelled => "the deployment was cancelled".to_owned(),
        }
    }
}

/// How the wait before the rest of a rollout taken over ended, with the record's place.
enum BeforeRest {
    /// The rest starts.
    Go(Resumed),
    /// Someone cancelled it.
    Cancelled(Resumed),
    /// It was aborted (its lease lost, or the server stopping).
    Aborted(Resumed),
}

/// What the rest of a rollout taken over carries from before it, for its events.
#[derive(Debug, Clone, Copy)]
struct Carried {
    /// How the hosts that ended before it ended (the takeover's checks included).
    before: Totals,
    /// Of those, the hosts that failed or were unreachable.
    failed: usize,
    /// The failures the whole deployment tolerates.
    max_failures: usize,
}

/// Renumbers the resumed rollout's events after the record's (`seq`), counts their time from
/// the deployment's start (`offset`), drops its `deployment_started` (the `handover` says what
/// goes on), and makes its `deployment_finished` count every host of the deployment and its
/// stop on failures count the whole deployment's failures against its whole `max_failures`.
struct Continued<S> {
    inner: S,
    seq: u64,
    /// Time from the deployment's start to the resumed rollout's.
    offset: Duration,
    /// What it carries from before it: the hosts that ended, the failure budget.
    carried: Carried,
    dropped: std::sync::atomic::AtomicU64,
}

impl<S: EventSink> EventSink for Continued<S> {
    fn emit(&self, event: &Event) {
        let kind = match &event.kind {
            EventKind::DeploymentStarted { .. } => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            EventKind::DeploymentFinished { outcome, totals } => {
                let totals = add(*totals, self.carried.before);
                EventKind::DeploymentFinished { outcome: merged_outcome(*outcome, &totals), totals }
            }
            // The whole deployment's failures against its whole budget, as without a takeover.
            EventKind::Stopping { cause: Some(StopReason::TooManyFailures { failed, .. }), .. } => {
                EventKind::stopping(StopReason::TooManyFailures {
                    failed: failed + self.carried.failed,
                    max_failures: self.carried.max_failures,
                })
            }
            other => other.clone(),
        };
        let seq = self.seq + event.seq - self.dropped.load(Ordering::SeqCst);
        self.inner.emit(&Event { seq, elapsed: self.offset + event.elapsed, kind });
    }
}

fn add(a: Totals, b: Totals) -> Totals {
    Totals {
        succeeded: a.succeeded + b.succeeded,
        failed: a.failed + b.failed,
        unreachable: a.unreachable + b.unreachable,
        skipped: a.skipped + b.skipped,
        cancelled: a.cancelled + b.cancelled,
    }
}

/// The whole deployment's outcome from the resumed rollout's and every host's totals: a
/// rollout that succeeded on its hosts completed with failures when hosts before it failed.
fn merged_outcome(resumed: DeploymentOutcome, totals: &Totals) -> DeploymentOutcome {
    match resumed {
        DeploymentOutcome::Succeeded if totals.failed + totals.unreachable > 0 => {
            DeploymentOutcome::CompletedWithFailures
        }
        other => other,
    }
}

fn status_of(outcome: DeploymentOutcome) -> Status {
    match outcome {
        DeploymentOutcome::Succeeded => Status::Succeeded,
        DeploymentOutcome::CompletedWithFailures => Status::CompletedWithFailures,
        DeploymentOutcome::Stopped => Status::Stopped,
        DeploymentOutcome::Cancelled => Status::Cancelled,
    }
}

fn totals_of(hosts: &[HostRecord]) -> Totals {
    let mut totals = Totals::default();
    for outcome in hosts.iter().filter_map(|h| h.state.outcome) {
        totals.count(outcome);
    }
    totals
}

impl Runner {
    /// Registers deployment `id` (taken over) in the active set, so pause, resume, confirm,
    /// cancel, live events and the lease keeper reach it, with the orders its record carries.
    /// `None` when it is active here already.
    fn adopt(&self, id: i64, request: &DeploymentRequest, adopted: Adopted) -> Option<Active> {
        let target = (request.application.to_string(), request.environment.to_string());
        let control = Control::new();
        if adopted.paused {
            control.pause();
        }
        if adopted.cancelled {
            control.cancel();
        }
        let active = Active {
            control,
            waiting_for_confirmation: Arc::new(AtomicBool::new(adopted.waiting_for_confirmation)),
            cancel: Arc::new(Notify::new()),
            events: broadcast::channel(LIVE_CAPACITY).0,
            target: target.clone(),
            // A deployment with secret variables is never resumed (their values are not stored).
            secrets: Arc::new(Vec::new()),
            aborted_at_shutdown: Arc::new(AtomicBool::new(false)),
        };
        let mut set = self.lock_active();
        if set.by_id.contains_key(&id) {
            return None;
        }
        set.by_id.insert(id, active.clone());
        set.by_target.insert(target, id);
        drop(set);
        self.count_paused();
        Some(active)
    }

    /// Starts deployment `id`, taken over while still queued, like a new one.
    fn start_taken_over(
        self: &Arc<Self>,
        id: i64,
        request: Arc<DeploymentRequest>,
        ports: Ports,
        adopted: Adopted,
    ) {
        let Some(active) = self.adopt(id, &request, adopted) else { return };
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.metrics.queued(1.0);
        tokio::spawn(self.clone().drive(id, request, ports, active));
    }

    /// Finishes deployment `id`, taken over while running: checks, then resumes or restores.
    async fn resume_taken_over(
        self: &Arc<Self>,
        resumed: Resumed,
        request: Arc<DeploymentRequest>,
        ports: Ports,
        adopted: Adopted,
    ) -> Result<(), StoreError> {
        let id = resumed.id;
        let Some(active) = self.adopt(id, &request, adopted) else { return Ok(()) };
        let guard = ActiveGuard { runner: self.clone(), id };
        let labels =
            labels(request.application.as_str(), request.environment.as_str(), request.team.as_str());
        self.metrics.in_flight(1.0);
        let _gauge = super::GaugeGuard(&self.metrics);
        let ended = self.resume_inner(&resumed, &request, &ports, &active, &labels).await;
        drop(guard);
        if let Some(after_end) = self.after_end.get() {
            after_end(id);
        }
        ended
    }

    async fn resume_inner(
        &self,
        r: &Resumed,
        request: &Arc<DeploymentRequest>,
        ports: &Ports,
        active: &Active,
        labels: &[(&'static str, String)],
    ) -> Result<(), StoreError> {
        let id = r.id;
        let mut records = self.store.hosts(id).await?;
        let unfinished = match crate::journal::unfinished(&*self.store, id).await {
            Ok(unfinished) => unfinished,
            Err(RecoverError::NoJournal(_)) => {
                Unfinished { header: None, finished: None, servers: Vec::new() }
            }
            Err(RecoverError::Store(e)) => return Err(e),
        };
        // The load balancers' real state of every server of the backend.
        let found = match &unfinished.header {
            Some(header) => {
                let read = tokio::time::timeout(
                    self.limits.call_timeout,
                    ports.load_balancer.servers(&header.backend),
                )
                .await;
                match read {
                    Ok(Ok(found)) => found,
                    Ok(Err(e)) => {
                        warn!(error = %e, "reading the backend failed: the journal alone says what was in flight");
                        Vec::new()
                    }
                    Err(_) => {
                        warn!("reading the backend took longer than call_timeout: the journal alone says what was in flight");
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let recorded: Vec<RecordedHost> = records
            .iter()
            .filter_map(|h| {
                Some(RecordedHost { state: h.state.clone(), server: ServerName::new(&h.server).ok()? })
            })
            .collect();
        let plan = plan_takeover(&unfinished, &recorded, &found);
        info!(
            in_flight = ?plan.in_flight_hosts(),
            not_started = plan.not_started().len(),
            warnings = ?plan.warnings,
            "taken over: checking the hosts that were in flight"
        );
        let (put_back, left_out) = self.check_in_flight(id, request, ports, &plan).await?;
        self.take_over_host_locks(id, ports, &records).await;

        // What the rest keeps of the rollout so far: its failures, its canary, its stop.
        let candidates = plan.to_deploy(r.on_takeover, &put_back);
        let before = totals_before(&plan, &left_out);
        let failed = before.failed + before.unreachable;
        let (halt, resumption) = match r.on_takeover {
            OnTakeover::Restore => (Some(Halt::Restore), None),
            OnTakeover::Resume if active.control.is_cancelled() => (Some(Halt::Cancelled), None),
            OnTakeover::Resume => {
                match plan_resumption(&r.so_far, &request.strategy, records.len(), failed, &candidates) {
                    Ok(resumption) => (None, Some(resumption)),
                    Err(StopReason::Cancelled) => (Some(Halt::Cancelled), None),
                    Err(reason) => (Some(Halt::Stopped(reason)), None),
                }
            }
        };
        let deploy = if halt.is_some() { BTreeSet::new() } else { candidates };
        // Hosts in flight as the checks leave them; hosts not deployed when halting.
        let mut changed = Vec::new();
        let mut notes = Vec::new();
        for record in &mut records {
            let name = &record.state.name;
            let before = record.state.clone();
            if let Some(reason) = left_out.iter().find(|(h, _)| h == name).map(|(_, why)| why) {
                record.state.outcome = Some(HostOutcome::Failed);
                record.state.rotation = Rotation::OutOfRotation;
                record.state.error = Some(format!(
                    "in flight when instance {} stopped renewing its lease; left out of rotation on takeover: {reason}",
                    r.from
                ));
                notes.push(EventKind::Warning {
                    host: Some(name.clone()),
                    message: record.state.error.clone().unwrap_or_default(),
                });
            } else if deploy.contains(name) {
                record.state = vesemir_core::HostProgress::pending(name.clone());
            } else if let (None, Some(halt)) = (record.state.outcome, &halt) {
                let was_in_flight = put_back.contains(name);
                record.state.outcome = Some(halt.not_started());
                record.state.rotation = Rotation::InRotation;
                record.state.phase = if was_in_flight { Phase::Restoring } else { Phase::Pending };
                record.state.error = Some(if was_in_flight {
                    format!(
                        "in flight when instance {} stopped renewing its lease; put back at its original state on takeover, not deployed ({})",
                        r.from,
                        halt.why()
                    )
                } else {
                    format!("not started: {}", halt.why())
                });
            }
            if record.state != before {
                changed.push(record.clone());
            }
        }
        for warning in &plan.warnings {
            notes.push(EventKind::Warning { host: None, message: warning.clone() });
        }
        match &halt {
            Some(Halt::Stopped(reason)) => notes.push(EventKind::stopping(*reason)),
            Some(Halt::Cancelled) => notes.push(EventKind::stopping(StopReason::Cancelled)),
            _ => {}
        }
        let mut seq = r.seq;
        self.append_notes(r, active, &mut seq, notes, &changed).await?;

        let Some(resumption) = resumption.filter(|_| !deploy.is_empty()) else {
            return self.end_without_rollout(r, labels, &records, &left_out, halt.as_ref()).await;
        };
        let resumed = Resumed { seq, ..r.clone() };
        let resumed = match self.wait_before_rest(&resumed, active, resumption.gate).await? {
            BeforeRest::Go(resumed) => resumed,
            BeforeRest::Cancelled(resumed) => {
                return self
                    .end_unresumed(
                        &resumed,
                        labels,
                        &records,
                        "it was cancelled before its rest started",
                        Status::Cancelled,
                    )
                    .await
            }
            BeforeRest::Aborted(resumed) => {
                return self
                    .end_unresumed(
                        &resumed,
                        labels,
                        &records,
                        "it was stopped before its rest started",
                        Status::Stopped,
                    )
                    .await
            }
        };
        info!(hosts = ?deploy, max_failures = ?resumption.strategy.max_failures, canary = ?resumption.strategy.canary, "resuming the rollout");
        let rest = Arc::new(DeploymentRequest { strategy: resumption.strategy, ..(**request).clone() });
        let carried = Carried { before, failed, max_failures: resumption.max_failures };
        self.run_rest(&resumed, &rest, ports, active, labels, records, deploy, carried).await
    }

    /// Stores `notes` as the deployment's next events (after `seq`, which moves on) with the
    /// hosts `changed`, and sends them live.
    async fn append_notes(
        &self,
        r: &Resumed,
        active: &Active,
        seq: &mut u64,
        notes: Vec<EventKind>,
        changed: &[HostRecord],
    ) -> Result<(), StoreError> {
        let elapsed = elapsed_since(r.started_ms);
        let events: Vec<Event> = notes
            .into_iter()
            .map(|kind| {
                *seq += 1;
                Event { seq: *seq, elapsed, kind }
            })
            .collect();
        if events.is_empty() && changed.is_empty() {
            return Ok(());
        }
        self.store.append_events(r.id, &events, changed).await?;
        for e in &events {
            let _ = active.events.send(Arc::new(e.clone()));
        }
        Ok(())
    }

    /// Holds the rest of a rollout taken over, before any host starts, while it is paused (a
    /// pause ordered on any instance holds across the takeover) and until the canary's pending
    /// `gate` opens: a confirmation given to any instance, or the end of the hold. A cancel
    /// or an abort (the lease lost, the server stopping) ends the wait.
    async fn wait_before_rest(
        &self,
        r: &Resumed,
        active: &Active,
        gate: Option<PendingGate>,
    ) -> Result<BeforeRest, StoreError> {
        let mut r = r.clone();
        let hold_until = match gate {
            Some(PendingGate::Hold { duration, since }) => {
                let left = match since {
                    Some(since) => since.saturating_add(duration).saturating_sub(elapsed_since(r.started_ms)),
                    None => duration,
                };
                // A hold past the clock's range (not from a validated request) never ends.
                Some(tokio::time::Instant::now().checked_add(left))
            }
            _ => None,
        };
        if gate == Some(PendingGate::Confirm) {
            // A canary that waited already was adopted waiting (`Adopted`), so a confirmation
            // that came since is not lost here; one whose batch ended at the takeover waits now.
            if !waited_for_confirmation(&r.so_far) {
                active.waiting_for_confirmation.store(true, Ordering::SeqCst);
            }
            info!("its canary waits for confirmation: the rest waits for it (given to any instance)");
        }
        let mut was_paused = false;
        loop {
            if active.control.is_cancelled() {
                return Ok(BeforeRest::Cancelled(r));
            }
            let paused = active.control.is_paused();
            if was_paused && !paused {
                info!("resumed: the rest goes on");
                let mut seq = r.seq;
                self.append_notes(&r, active, &mut seq, vec![EventKind::Resumed], &[]).await?;
                r.seq = seq;
            } else if paused && !was_paused {
                info!("paused before the takeover: the rest waits for a resume (given to any instance)");
            }
            was_paused = paused;
            let waiting = active.waiting_for_confirmation.load(Ordering::SeqCst);
            let holding = hold_until.is_some_and(|at| at.is_none_or(|at| tokio::time::Instant::now() < at));
            if !paused && !waiting && !holding {
                return Ok(BeforeRest::Go(r));
            }
            tokio::select! {
                () = tokio::time::sleep(GATE_POLL) => {}
                () = active.cancel.notified() => {
                    if !active.control.is_cancelled() {
                        active.waiting_for_confirmation.store(false, Ordering::SeqCst);
                        return Ok(BeforeRest::Aborted(r));
                    }
                }
            }
        }
    }

    /// Checks the hosts in flight: health gate, then their original state on every instance
    /// (the journal's recovery). Returns those put back and those left out with why.
    async fn check_in_flight(
        &self,
        id: i64,
        request: &DeploymentRequest,
        ports: &Ports,
        plan: &TakeoverPlan,
    ) -> Result<(BTreeSet<HostName>, Vec<(HostName, String)>), StoreError> {
        let in_flight = plan.in_flight_hosts();
        let mut put_back = BTreeSet::new();
        let mut left_out = Vec::new();
        if in_flight.is_empty() {
            return Ok((put_back, left_out));
        }
        let config = RecoveryConfig {
            up_timeout: request
                .changeset
                .health
                .load_balancer_up
                .unwrap_or(RecoveryConfig::default().up_timeout),
            call_timeout: self.limits.call_timeout,
        };
        let recovered = crate::journal::recover_hosts(
            &*self.store,
            id,
            ports,
            request,
            &config,
            self.driver.output_limit,
            Some(&in_flight),
        )
        .await;
        let recovery = match recovered {
            Ok(recovery) => recovery,
            Err(RecoverError::Store(e)) => return Err(e),
            Err(e @ RecoverError::NoJournal(_)) => {
                for host in in_flight {
                    left_out.push((host, e.to_string()));
                }
                return Ok((put_back, left_out));
            }
        };
        for s in recovery.servers {
            let Ok(host) = HostName::new(&s.host) else { continue };
            match s.outcome {
                RecoveryOutcome::LeftOut { reason } => {
                    warn!(host = %host, %reason, "in flight, left out: it failed its check");
                    left_out.push((host, reason));
                }
                RecoveryOutcome::AlreadyRestored | RecoveryOutcome::Restored { .. } => {
                    info!(host = %host, "in flight: healthy, back at its original state");
                    put_back.insert(host);
                }
            }
        }
        Ok((put_back, left_out))
    }

    /// Breaks the host locks that the instance that died held for this deployment on the hosts
    /// that had not ended (they name the deployment: the lease fences that instance, so they
    /// are this one's now), so that the resumed rollout takes them at once instead of waiting
    /// for them to go stale. A lock held by anyone else is left alone.
    async fn take_over_host_locks(&self, id: i64, ports: &Ports, records: &[HostRecord]) {
        if self.locks.is_none() {
            return;
        }
        let ours = id.to_string();
        for record in records.iter().filter(|r| r.state.outcome.is_none()) {
            let Ok(host) = vesemir_core::Host::new(record.state.name.clone(), record.address.clone()) else {
                continue;
            };
            let held = tokio::time::timeout(self.limits.call_timeout, ports.executor.read_lock(&host)).await;
            match held {
                Ok(Ok(Some(held))) if held.holder.deployment == ours => {
                    let broken =
                        tokio::time::timeout(self.limits.call_timeout, ports.executor.break_lock(&host))
                            .await;
                    match broken {
                        Ok(Ok(_)) => {
                            info!(host = %host.name, "took over the host lock the instance that died held")
                        }
                        Ok(Err(e)) => {
                            warn!(host = %host.name, error = %e, "taking over the host lock failed")
                        }
                        Err(_) => {
                            warn!(host = %host.name, "taking over the host lock took longer than call_timeout")
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(host = %host.name, error = %e, "reading the host lock failed"),
                Err(_) => warn!(host = %host.name, "reading the host lock took longer than call_timeout"),
            }
        }
    }

    /// Ends a deployment taken over with no host left to deploy, or none to start (`halt`).
    async fn end_without_rollout(
        &self,
        r: &Resumed,
        labels: &[(&'static str, String)],
        records: &[HostRecord],
        left_out: &[(HostName, String)],
        halt: Option<&Halt>,
    ) -> Result<(), StoreError> {
        let totals = totals_of(records);
        let out: Vec<String> = left_out.iter().map(|(h, _)| h.to_string()).collect();
        let (status, error) = match halt {
            Some(Halt::Restore) => (
                Status::Interrupted,
                Some(format!(
                    "instance {} stopped renewing its lease; {} took it over and restored it (on_takeover = restore): hosts in flight checked, no other host started{}",
                    r.from,
                    self.store.instance(),
                    if out.is_empty() { String::new() } else { format!("; left out of rotation: {}", out.join(", ")) }
                )),
            ),
            Some(Halt::Stopped(reason)) => (
                Status::Stopped,
                Some(format!(
                    "instance {} stopped renewing its lease; {} took it over, checked the hosts in flight and started no other host: {reason}",
                    r.from,
                    self.store.instance(),
                )),
            ),
            Some(Halt::Cancelled) => (Status::Cancelled, None),
            None => {
                let outcome = merged_outcome(DeploymentOutcome::Succeeded, &totals);
                (status_of(outcome), None)
            }
        };
        let finish = Finish {
            status,
            error,
            totals: Some(totals),
            hosts: Vec::new(),
            out_of_rotation: out,
            finished_ms: now_ms(),
        };
        self.record_end(r.id, labels, finish, Some(r.started_ms)).await
    }

    /// Runs the rollout over `deploy` (the rest of the deployment) and writes how the whole
    /// deployment ended.
    #[allow(clippy::too_many_arguments)]
    async fn run_rest(
        &self,
        r: &Resumed,
        request: &Arc<DeploymentRequest>,
        ports: &Ports,
        active: &Active,
        labels: &[(&'static str, String)],
        records: Vec<HostRecord>,
        deploy: BTreeSet<HostName>,
        carried: Carried,
    ) -> Result<(), StoreError> {
        let id = r.id;
        let driver = DriverConfig {
            locks: self.lock_policy(id, request),
            only_hosts: Some(deploy),
            ..self.driver.clone()
        };
        let prepared = tokio::time::timeout(
            self.limits.deployment_timeout,
            vesemir_core::prepare(request.clone(), ports, &driver),
        )
        .await;
        let prepared =
            match prepared {
                Ok(Ok(prepared)) => prepared,
                Ok(Err(e)) => {
                    return self
                        .end_unresumed(r, labels, &records, &format!("could not go on: {e}"), Status::Stopped)
                        .await
                }
                Err(_) => return self
                    .end_unresumed(
                        r,
                        labels,
                        &records,
                        "could not go on: finding and planning the hosts took longer than deployment_timeout",
                        Status::Stopped,
                    )
                    .await,
            };
        let subset: Vec<HostRecord> = records
            .iter()
            .filter(|h| prepared.plan.hosts.iter().any(|p| p.host.name == h.state.name))
            .cloned()
            .collect();
        let journal =
            match DeploymentJournal::start(self.store.clone(), id, &prepared, ports, &active.control).await {
                Ok(journal) => journal,
                Err(message) => {
                    return self.end_unresumed(r, labels, &records, &message, Status::Stopped).await
                }
            };
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = EventWriter {
            store: self.store.clone(),
            id,
            live: active.events.clone(),
            deployment: Span::current(),
            hosts: subset,
            failure: journal.failure(),
        };
        let writer = tokio::spawn(writer.run(receiver).instrument(Span::current()));
        let continued = Continued {
            inner: ChannelSink(sender, active.waiting_for_confirmation.clone(), active.secrets.clone()),
            seq: r.seq,
            offset: elapsed_since(r.started_ms),
            carried,
            dropped: std::sync::atomic::AtomicU64::new(0),
        };
        let sink = journal.sink(continued);
        let (report, timed_out) = self.run(&prepared, journal.ports(), &active.control, &sink).await;
        drop(sink);
        if writer.await.is_err() {
            error!("the event writer panicked: some events may be missing from the database");
        }
        let store_failure = journal.close().await;
        let report = match report {
            Ok(report) => report,
            Err(crash) => return self.end_crashed(id, labels, &crash, Some(r.started_ms)).await,
        };
        self.end_resumed(r, labels, records, &report, timed_out, store_failure).await
    }

    /// Writes how a resumed deployment ended: every host's record (those the rollout ran from
    /// its report, the others as they were), the whole deployment's totals and status.
    async fn end_resumed(
        &self,
        r: &Resumed,
        labels: &[(&'static str, String)],
        mut records: Vec<HostRecord>,
        report: &DeploymentReport,
        timed_out: bool,
        store_failure: Option<String>,
    ) -> Result<(), StoreError> {
        for host in &report.hosts {
            if let Some(record) = records.iter_mut().find(|h| h.state.name == host.name) {
                let position = record.position;
                *record = HostRecord::reported(0, host);
                record.position = position;
            }
        }
        for out in report.hosts.iter().filter_map(|h| h.out_of_rotation) {
            self.metrics.host_out_of_rotation(labels, out.as_secs_f64());
        }
        let totals = totals_of(&records);
        let mut status = report.outcome.map_or(Status::Stopped, |o| status_of(merged_outcome(o, &totals)));
        let mut error =
            timed_out.then(|| "aborted: ran longer than the server's deployment_timeout".to_owned());
        let mut out = Vec::new();
        if let Some(reason) = store_failure {
            (status, out) = crate::journal::stopped_by_store(&reason, report, status, &mut error);
        }
        let finish = Finish {
            status,
            error,
            totals: Some(totals),
            hosts: records,
            out_of_rotation: out,
            finished_ms: now_ms(),
        };
        self.record_end(r.id, labels, finish, Some(r.started_ms)).await
    }

    /// Ends a deployment taken over whose rest could not start (`why`): the hosts in flight
    /// were checked already; the others did not start (cancelled).
    async fn end_unresumed(
        &self,
        r: &Resumed,
        labels: &[(&'static str, String)],
        records: &[HostRecord],
        why: &str,
        status: Status,
    ) -> Result<(), StoreError> {
        warn!(reason = %why, "the rest of the deployment taken over could not start");
        let mut hosts = records.to_vec();
        for h in hosts.iter_mut().filter(|h| h.state.outcome.is_none()) {
            h.state.outcome = Some(HostOutcome::Cancelled);
            h.state.error =
                Some("not started: the rest of the deployment could not start after the takeover".into());
        }
        let out = hosts
            .iter()
            .filter(|h| h.state.rotation != Rotation::InRotation)
            .map(|h| h.state.name.to_string())
            .collect();
        let finish = Finish {
            status,
            error: Some(format!(
                "instance {} stopped renewing its lease; {} took it over and {why}; hosts not deployed were not started",
                r.from,
                self.store.instance()
            )),
            totals: Some(totals_of(&hosts)),
            hosts,
            out_of_rotation: out,
            finished_ms: now_ms(),
        };
        self.record_end(r.id, labels, finish, Some(r.started_ms)).await
    }
}

/// The totals of the hosts that ended before the resumed rollout: those done before the
/// takeover and those in flight that were left out (failed).
fn totals_before(plan: &TakeoverPlan, left_out: &[(HostName, String)]) -> Totals {
    let mut totals = plan.done_totals();
    for _ in left_out {
        totals.count(HostOutcome::Failed);
    }
    totals
}
