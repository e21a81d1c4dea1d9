//! The rollout: a deterministic, sans-IO state machine that walks every host of a [`Plan`]
//! through drain, wait for sessions, maintenance, the changeset steps, the health gate and the
//! weight ramp, within a sliding window of `concurrency` slots (a host that ends frees its slot
//! for the next at once) or in strict batches, as the plan cut them.
//!
//! # Calling order
//!
//! 1. [`Rollout::new`] with the plan, the [`RolloutConfig`] and `now`.
//! 2. Loop until [`Rollout::is_finished`]:
//!    - take every [`Rollout::poll_action`] and start it; report each one's result with
//!      [`Rollout::handle_result`] (a host has at most one action outstanding);
//!    - take every [`Rollout::poll_event`] and hand it to the sinks;
//!    - sleep until [`Rollout::poll_timeout`] (if any) and call [`Rollout::handle_timeout`];
//!    - forward command output with [`Rollout::handle_output`], and the operator's
//!      [`Rollout::handle_cancel`], [`Rollout::handle_confirm`], [`Rollout::handle_abort`],
//!      [`Rollout::handle_pause`], [`Rollout::handle_resume`].
//! 3. [`Rollout::report`].
//!
//! Every input carries `now`; the machine reads no clock, sleeps never and spawns nothing.
//!
//! # Invariants (checked by property tests)
//!
//! - Never more than `concurrency` hosts out of rotation at once, and no take-out that would put
//!   more than `concurrency` servers of the whole backend out of rotation, counting servers it
//!   did not take out (read before each take-out: `budget.rs`). A host that failed and stays
//!   out of rotation keeps using its slot, so failures shrink the room for new hosts rather than
//!   take capacity below what the operator allowed.
//! - A host goes back into rotation only after its steps and health gate passed, except a host
//!   whose changeset never started (drain timed out, a load balancer call failed before
//!   maintenance), which is put back as it was found. Every host ends at its server's original
//!   admin state and weight on every box (the plan's `original`), or out of rotation if it
//!   failed; a server found out of rotation is never put in; hosts the plan skips are never
//!   touched.
//! - A failed host is reported with its phase and error, and its rotation state.
//! - Once failures exceed `max_failures`, or on cancel, no new host starts; hosts in flight
//!   finish.
//! - A sliding window (the plan's canary batch, then one batch of every other host) starts a
//!   host whenever fewer than `concurrency` are in flight or ended out of rotation; with strict
//!   batches no host of a batch starts before every host of the batch before ended.
//! - While paused no new host starts; hosts in flight finish, gates keep waiting, and cancel
//!   still ends the deployment.
//! - With `retry_unreachable`, hosts that ended unreachable are started once more after the
//!   last batch (`retry.rs`), under every rule above; never a third time.
//! - Every host ends in exactly one [`HostOutcome`]; events are numbered 1, 2, 3... without gaps.

mod batches;
mod budget;
mod changeset;
mod config;
mod host;
mod input;
mod probe;
mod put_back;
mod retry;
mod take_out;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use budget::{BUDGET_RECHECK, BUDGET_WAIT_LIMIT};
pub use config::{HealthRetry, RolloutConfig, StepLimit};
pub use input::{Action, ActionResult, ErrorKind, HostError, HostId};

use batches::{Gate, TimerKey};
use host::{Failure, HostRun, Stage};
use retry::RetryRound;

use crate::event::{DeploymentOutcome, Event, EventKind, HostOutcome, Phase, StopReason, Totals};
use crate::plan::Plan;
use crate::ports::OutputLine;
use crate::report::{DeploymentReport, HostReport};

/// Lines of output kept per host for the report.
pub const OUTPUT_TAIL_LINES: usize = 20;

/// The rollout state machine. See the [module documentation](self) for the calling order.
#[derive(Debug)]
pub struct Rollout {
    plan: Arc<Plan>,
    config: RolloutConfig,
    start: Instant,
    hosts: Vec<HostRun>,
    /// The current batch (index into `plan.batches`).
    batch: usize,
    /// The next host of the batch to start.
    next_host: usize,
    /// Hosts of the current batch not ended yet.
    batch_open: usize,
    gate: Gate,
    /// Set once no new host may start.
    stop: Option<StopReason>,
    /// Set by the operator's pause: no new host starts until resumed.
    paused: bool,
    /// Hosts started and not ended.
    in_flight: usize,
    /// Ended hosts left out of rotation (or unknown): they keep their concurrency slot.
    finished_out: usize,
    /// Hosts out of rotation now, and the most at one moment.
    out_now: usize,
    max_out: usize,
    /// Hosts failed or unreachable so far.
    failures: usize,
    totals: Totals,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    seq: u64,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    /// The host whose [`Action::ReadBackend`] is outstanding.
    read_by: Option<usize>,
    /// When the backend is read again for hosts waiting for room in its budget.
    budget_timer: Option<Instant>,
    /// The last budget wait told of (servers out, concurrency), so it is told once.
    budget_waiting: Option<(usize, usize)>,
    /// Since when hosts wait for the budget with none of this rollout's in flight.
    budget_blocked_since: Option<Instant>,
    /// Which host each server is, and where it was in the last listing of the backend.
    budget_index: budget::BudgetIndex,
    finished_at: Option<Duration>,
    outcome: Option<DeploymentOutcome>,
    /// The retry round of hosts that ended unreachable (`retry.rs`).
    retry: RetryRound,
}

impl Rollout {
    /// A rollout of `plan`, starting now: the first batch's hosts are ready in
    /// [`poll_action`](Self::poll_action).
    pub fn new(plan: Arc<Plan>, config: RolloutConfig, now: Instant) -> Self {
        let hosts = plan.hosts.iter().map(|h| HostRun::new(h.host.name.clone(), &h.original)).collect();
        let budget_index = budget::BudgetIndex::new(plan.hosts.iter().map(|h| &h.server));
        let mut rollout = Self {
            plan,
            config,
            start: now,
            hosts,
            batch: 0,
            next_host: 0,
            batch_open: 0,
            gate: Gate::Running,
            stop: None,
            paused: false,
            in_flight: 0,
            finished_out: 0,
            out_now: 0,
            max_out: 0,
            failures: 0,
            totals: Totals::default(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            seq: 0,
            timers: BinaryHeap::new(),
            read_by: None,
            budget_timer: None,
            budget_waiting: None,
            budget_blocked_since: None,
            budget_index,
            finished_at: None,
            outcome: None,
            retry: RetryRound::NotYet,
        };
        let (hosts, batches, concurrency, max_failures) = (
            rollout.plan.hosts.len(),
            rollout.plan.batches.len(),
            rollout.plan.concurrency,
            rollout.plan.max_failures,
        );
        rollout.emit(now, EventKind::DeploymentStarted { hosts, batches, concurrency, max_failures });
        if max_failures >= concurrency && max_failures > 0 {
            let message = format!(
                "max_failures ({max_failures}) is not below concurrency ({concurrency}): failed hosts stay out of rotation and keep their slot, so the rollout stops once {concurrency} hosts have failed"
            );
            rollout.emit(now, EventKind::Warning { host: None, message });
        }
        rollout.skip_hosts_not_in_rotation(now);
        rollout.open_batch(now);
        rollout.pump(now);
        rollout
    }

    /// Ends the hosts the plan skips (their servers were not in rotation): left as found.
    fn skip_hosts_not_in_rotation(&mut self, now: Instant) {
        for h in 0..self.hosts.len() {
            let planned = &self.plan.hosts[h];
            if planned.skip {
                let error = format!(
                    "its server was not in rotation when the deployment was prepared ({}): left exactly as found (servers_not_in_rotation = \"skip\")",
                    planned.original_state().describe()
                );
                self.conclude(
                    h,
                    Failure { outcome: HostOutcome::Skipped, phase: Phase::Pending, error },
                    now,
                );
            }
        }
    }

    /// The plan being rolled out.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The next thing to do, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if a timer runs.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if self.timer_is_live(at, key) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Whether every host has ended and the deployment is over.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// The most hosts that were out of rotation at one moment so far.
    pub fn max_out_of_rotation(&self) -> usize {
        self.max_out
    }

    /// Hosts out of rotation now (because of this rollout).
    pub fn out_of_rotation(&self) -> usize {
        self.out_now
    }

    /// The result of `host`'s outstanding action. A result for a host with no outstanding
    /// action is ignored.
    pub fn handle_result(&mut self, host: HostId, result: ActionResult, now: Instant) {
        let h = host.0;
        if h >= self.hosts.len() || !self.hosts[h].awaiting {
            return;
        }
        self.hosts[h].awaiting = false;
        if self.hosts[h].outcome.is_some() {
            // Aborted while the action ran: its result changes nothing now.
            return;
        }
        self.advance(h, result, now);
        self.pump(now);
    }

    /// A line of output from `host`'s running command.
    pub fn handle_output(&mut self, host: HostId, line: OutputLine, now: Instant) {
        let Some(run) = self.hosts.get_mut(host.0) else { return };
        let step = match run.stage {
            Stage::Step(i) => self.config.steps.get(i).map(|s| s.name.clone()).unwrap_or_default(),
            Stage::Health => "health".to_owned(),
            _ => return,
        };
        if run.tail.len() == OUTPUT_TAIL_LINES {
            run.tail.pop_front();
        }
        run.tail.push_back(line.clone());
        let host = run.name.clone();
        self.emit(now, EventKind::HostOutput { host, step, stream: line.stream, line: line.text });
    }

    /// Time has reached `now`: fires every timer due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.timer_is_live(at, key) {
                continue;
            }
            match key {
                TimerKey::Gate => {
                    self.gate = Gate::Running;
                    self.open_batch(now);
                }
                TimerKey::Budget => self.budget_recheck(now),
                TimerKey::Host(h) => {
                    self.hosts[h].timer = None;
                    match self.hosts[h].stage {
                        Stage::HealthWait => {
                            self.hosts[h].health_attempt += 1;
                            self.enter(h, Stage::Health, now);
                        }
                        Stage::StepWait(i) => self.retry_step(h, i, now),
                        Stage::ProbeWait => {
                            self.hosts[h].health_attempt += 1;
                            self.enter(h, Stage::Probe, now);
                        }
                        Stage::Hold(i) => self.after_hold(h, i, now),
                        _ => {}
                    }
                }
            }
        }
        self.pump(now);
    }

    /// The operator confirms the canary: the next batch starts.
    pub fn handle_confirm(&mut self, now: Instant) {
        if self.gate == Gate::Confirm {
            self.gate = Gate::Running;
            self.open_batch(now);
            self.pump(now);
        }
    }

    /// Pause: no new host starts until [`handle_resume`](Self::handle_resume); hosts in flight
    /// go on to their end, and a gate (canary confirmation, hold, pause between batches) keeps
    /// running. Ignored once the deployment finished or while already paused.
    pub fn handle_pause(&mut self, now: Instant) {
        if self.outcome.is_some() || self.paused {
            return;
        }
        self.paused = true;
        let in_flight = self.in_flight;
        self.emit(now, EventKind::Paused { in_flight });
    }

    /// Resume a paused deployment: hosts start again as the gates allow. Ignored unless paused.
    pub fn handle_resume(&mut self, now: Instant) {
        if self.outcome.is_some() || !self.paused {
            return;
        }
        self.paused = false;
        self.emit(now, EventKind::Resumed);
        self.pump(now);
    }

    /// Whether the operator paused the deployment (and has not resumed it).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Cancel: no new host starts; hosts in flight finish. Hosts not started end cancelled.
    pub fn handle_cancel(&mut self, now: Instant) {
        if self.outcome.is_some() || self.stop == Some(StopReason::Cancelled) {
            return;
        }
        self.stop = Some(StopReason::Cancelled);
        self.gate = Gate::Running;
        self.emit(now, EventKind::stopping(StopReason::Cancelled));
        self.pump(now);
    }

    /// Abort: stop at once. Hosts in flight end cancelled where they are; those that may be out
    /// of rotation are reported so (their outstanding actions' results are ignored).
    pub fn handle_abort(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        self.stop = Some(StopReason::Cancelled);
        for h in 0..self.hosts.len() {
            let run = &mut self.hosts[h];
            if run.outcome.is_some() || run.stage == Stage::Pending {
                continue;
            }
            if run.awaiting
                && !matches!(
                    run.stage,
                    Stage::Connect
                        | Stage::Admit
                        | Stage::Step(_)
                        | Stage::Health
                        | Stage::Probe
                        | Stage::Close
                )
            {
                // A load balancer call was in flight: its effect is unknown.
                run.admin_unknown = true;
            }
            let phase = run.phase.clone();
            let error = format!("aborted during {phase}");
            self.conclude(h, Failure { outcome: HostOutcome::Cancelled, phase, error }, now);
        }
        self.pump(now);
    }

    /// The report of the rollout so far (complete once [`is_finished`](Self::is_finished)).
    pub fn report(&self) -> DeploymentReport {
        let hosts = self
            .hosts
            .iter()
            .zip(&self.plan.hosts)
            .map(|(run, planned)| HostReport {
                name: run.name.clone(),
                address: planned.host.address.clone(),
                server: planned.server.clone(),
                outcome: run.outcome,
                phase: run.failure.as_ref().map(|f| f.phase.clone()).unwrap_or_else(|| run.phase.clone()),
                error: run.failure.as_ref().map(|f| f.error.clone()),
                rotation: run.rotation(),
                started: run.started,
                finished: run.finished,
                last_output: run.tail.iter().cloned().collect(),
                // Complete once the host ended (`conclude` adds the time it stays out).
                out_of_rotation: run.was_out.then_some(run.out_for),
                attempts: run.attempts.max(1),
            })
            .collect();
        DeploymentReport {
            outcome: self.outcome,
            totals: self.totals,
            hosts,
            elapsed: self.finished_at.unwrap_or_default(),
            max_out_of_rotation: self.max_out,
        }
    }

    fn emit(&mut self, now: Instant, kind: EventKind) {
        self.seq += 1;
        let elapsed = now.saturating_duration_since(self.start);
        self.events.push_back(Event { seq: self.seq, elapsed, kind });
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    fn timer_is_live(&self, at: Instant, key: TimerKey) -> bool {
        match key {
            TimerKey::Gate => self.gate == Gate::Hold(at),
            TimerKey::Budget => self.budget_timer == Some(at),
            TimerKey::Host(h) => self.hosts[h].timer == Some(at),
        }
    }

    fn set_host_timer(&mut self, h: usize, at: Instant) {
        self.hosts[h].timer = Some(at);
        self.timers.push(Reverse((at, TimerKey::Host(h))));
    }
}
