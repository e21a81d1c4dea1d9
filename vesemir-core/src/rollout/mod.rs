//! The rollout: a deterministic, sans-IO state machine that walks every host of a [`Plan`]
//! through drain, wait for sessions, maintenance, the changeset steps, the health gate and the
//! weight ramp, a batch at a time.
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
//!      [`Rollout::handle_cancel`], [`Rollout::handle_confirm`], [`Rollout::handle_abort`].
//! 3. [`Rollout::report`].
//!
//! Every input carries `now`; the machine reads no clock, sleeps never and spawns nothing.
//!
//! # Invariants (checked by property tests)
//!
//! - Never more than `concurrency` hosts out of rotation at once. A host that failed and stays
//!   out of rotation keeps using its slot, so failures shrink the room for new hosts rather than
//!   take capacity below what the operator allowed.
//! - A host goes back into rotation only after its steps and health gate passed, except a host
//!   whose changeset never started (drain timed out, a load balancer call failed before
//!   maintenance), which is put back as it was.
//! - A failed host is reported with its phase and error, and its rotation state.
//! - Once failures exceed `max_failures`, or on cancel, no new host starts; hosts in flight
//!   finish.
//! - Every host ends in exactly one [`HostOutcome`]; events are numbered 1, 2, 3... without gaps.

mod input;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use input::{Action, ActionResult, ErrorKind, HostError, HostId};

use crate::event::{
    DeploymentOutcome, Event, EventKind, HostOutcome, Phase, Rotation, StopReason, Totals, WaitReason,
};
use crate::name::HostName;
use crate::plan::Plan;
use crate::ports::{AdminState, OutputLine, Weight};
use crate::report::{DeploymentReport, HostReport};
use crate::request::{CanaryGate, DeploymentRequest, DrainTimeoutPolicy, RampStep};

/// Lines of output kept per host for the report.
pub const OUTPUT_TAIL_LINES: usize = 20;

/// The parts of a request the rollout needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// The changeset's steps, in order.
    pub steps: Vec<StepLimit>,
    /// How long the health command is retried, if there is one.
    pub health_command: Option<HealthRetry>,
    /// Wait for the load balancers to report UP (at weight 0), for at most this long.
    pub load_balancer_up: Option<Duration>,
    /// How long sessions may take to end after drain.
    pub drain_timeout: Duration,
    /// What to do when they do not.
    pub on_drain_timeout: DrainTimeoutPolicy,
    /// Weights before 100%.
    pub ramp: Vec<RampStep>,
    /// Pause after each batch.
    pub pause_between_batches: Duration,
    /// What to wait for after the canary batch, if the plan has one.
    pub canary_gate: Option<CanaryGate>,
}

/// A changeset step as the rollout sees it: a name for events and a bound for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLimit {
    /// The step's name in phases and output lines.
    pub name: String,
    /// How long one run of it may take.
    pub timeout: Duration,
}

/// How the health command is retried: until it exits 0 or `timeout` has passed since its first
/// attempt, waiting `interval` between attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthRetry {
    /// The time all attempts together may take.
    pub timeout: Duration,
    /// The pause between two attempts.
    pub interval: Duration,
}

impl RolloutConfig {
    /// The rollout configuration of a request.
    pub fn from_request(request: &DeploymentRequest) -> Self {
        let changeset = &request.changeset;
        Self {
            steps: changeset
                .steps
                .iter()
                .map(|s| StepLimit { name: s.name.clone(), timeout: s.timeout })
                .collect(),
            health_command: (changeset.health.command.as_ref())
                .map(|h| HealthRetry { timeout: h.timeout, interval: h.interval }),
            load_balancer_up: changeset.health.load_balancer_up,
            drain_timeout: request.load_balancer.drain_timeout,
            on_drain_timeout: request.load_balancer.on_drain_timeout,
            ramp: request.load_balancer.ramp.clone(),
            pause_between_batches: request.strategy.pause_between_batches,
            canary_gate: request.strategy.canary.map(|c| c.gate),
        }
    }
}

/// Where a host is, in finer steps than its public [`Phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Connect,
    Drain,
    WaitDrain,
    Shutdown,
    Maint,
    Step(usize),
    Health,
    HealthWait,
    /// Set the first weight (0 when waiting for UP, else the first ramp weight or 100%).
    PreWeight,
    Ready,
    WaitUp,
    Ramp(usize),
    Hold(usize),
    Full,
    Restore,
    Unwind,
    Close,
    Finished,
}

#[derive(Debug, Clone)]
struct Failure {
    outcome: HostOutcome,
    phase: Phase,
    error: String,
}

#[derive(Debug)]
struct HostRun {
    name: HostName,
    stage: Stage,
    phase: Phase,
    outcome: Option<HostOutcome>,
    admin: AdminState,
    weight: Weight,
    /// A state change timed out: the state may or may not have changed.
    admin_unknown: bool,
    /// A weight change timed out.
    weight_unknown: bool,
    awaiting: bool,
    connected: bool,
    health_deadline: Option<Instant>,
    health_attempt: u32,
    last_health: Option<String>,
    failure: Option<Failure>,
    started: Option<Duration>,
    finished: Option<Duration>,
    tail: VecDeque<OutputLine>,
    timer: Option<Instant>,
}

impl HostRun {
    fn set_admin(&mut self, admin: AdminState) {
        self.admin = admin;
        self.admin_unknown = false;
    }

    fn set_weight(&mut self, weight: Weight) {
        self.weight = weight;
        self.weight_unknown = false;
    }

    fn in_rotation(&self) -> bool {
        !self.rotation_unknown() && self.admin == AdminState::Ready && self.weight > Weight::ZERO
    }

    fn rotation_unknown(&self) -> bool {
        self.admin_unknown || self.weight_unknown
    }

    fn rotation(&self) -> Rotation {
        if self.rotation_unknown() {
            Rotation::Unknown
        } else if self.in_rotation() {
            Rotation::InRotation
        } else {
            Rotation::OutOfRotation
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Running,
    Hold(Instant),
    Confirm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Host(usize),
    Gate,
}

/// The rollout state machine. See the [module documentation](self) for the calling order.
#[derive(Debug)]
pub struct Rollout {
    plan: Arc<Plan>,
    config: RolloutConfig,
    start: Instant,
    hosts: Vec<HostRun>,
    batch: usize,
    next_host: usize,
    batch_open: usize,
    gate: Gate,
    stop: Option<StopReason>,
    in_flight: usize,
    finished_out: usize,
    out_now: usize,
    max_out: usize,
    failures: usize,
    totals: Totals,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    seq: u64,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    finished_at: Option<Duration>,
    outcome: Option<DeploymentOutcome>,
}

impl Rollout {
    /// A rollout of `plan`, starting now: the first batch's hosts are ready in
    /// [`poll_action`](Self::poll_action).
    pub fn new(plan: Arc<Plan>, config: RolloutConfig, now: Instant) -> Self {
        let hosts = plan
            .hosts
            .iter()
            .map(|h| HostRun {
                name: h.host.name.clone(),
                stage: Stage::Pending,
                phase: Phase::Pending,
                outcome: None,
                admin: AdminState::Ready,
                weight: Weight::FULL,
                admin_unknown: false,
                weight_unknown: false,
                awaiting: false,
                connected: false,
                health_deadline: None,
                health_attempt: 0,
                last_health: None,
                failure: None,
                started: None,
                finished: None,
                tail: VecDeque::new(),
                timer: None,
            })
            .collect();
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
            finished_at: None,
            outcome: None,
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
        rollout.open_batch(now);
        rollout.pump(now);
        rollout
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
                TimerKey::Host(h) => {
                    self.hosts[h].timer = None;
                    match self.hosts[h].stage {
                        Stage::HealthWait => {
                            self.hosts[h].health_attempt += 1;
                            self.enter(h, Stage::Health, now);
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
                && !matches!(run.stage, Stage::Connect | Stage::Step(_) | Stage::Health | Stage::Close)
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

    // ---- internals ----

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
            TimerKey::Host(h) => self.hosts[h].timer == Some(at),
        }
    }

    fn set_host_timer(&mut self, h: usize, at: Instant) {
        self.hosts[h].timer = Some(at);
        self.timers.push(Reverse((at, TimerKey::Host(h))));
    }

    fn open_batch(&mut self, now: Instant) {
        let Some(range) = self.plan.batches.get(self.batch).cloned() else { return };
        self.next_host = range.start;
        self.batch_open = range.len();
        let hosts = self.plan.hosts[range].iter().map(|h| h.host.name.clone()).collect();
        self.emit(now, EventKind::BatchStarted { batch: self.batch + 1, hosts });
    }

    /// Starts hosts while there is room, closes finished batches, stops and finishes.
    fn pump(&mut self, now: Instant) {
        loop {
            if self.outcome.is_some() || self.gate != Gate::Running {
                return;
            }
            if self.stop.is_some() {
                self.end_unstarted(now);
                if self.in_flight == 0 {
                    self.finish(now);
                }
                return;
            }
            let Some(range) = self.plan.batches.get(self.batch).cloned() else {
                self.finish(now);
                return;
            };
            while self.next_host < range.end && self.in_flight + self.finished_out < self.plan.concurrency {
                let h = self.next_host;
                self.next_host += 1;
                self.start_host(h, now);
            }
            if self.next_host < range.end && self.in_flight == 0 {
                let reason = StopReason::NoCapacity {
                    out_of_rotation: self.finished_out,
                    concurrency: self.plan.concurrency,
                };
                self.stop = Some(reason);
                self.emit(now, EventKind::stopping(reason));
                continue;
            }
            if self.batch_open > 0 {
                return;
            }
            // The batch is over.
            let (succeeded, failed) =
                self.plan.batches[self.batch].clone().fold((0, 0), |(s, f), h| match self.hosts[h].outcome {
                    Some(HostOutcome::Succeeded) => (s + 1, f),
                    Some(HostOutcome::Failed | HostOutcome::Unreachable) => (s, f + 1),
                    _ => (s, f),
                });
            self.emit(now, EventKind::BatchFinished { batch: self.batch + 1, succeeded, failed });
            self.batch += 1;
            if self.batch >= self.plan.batches.len() {
                self.finish(now);
                return;
            }
            let gate = match (self.batch == 1 && self.plan.canary, self.config.canary_gate) {
                (true, Some(CanaryGate::Confirm)) => Some(WaitReason::CanaryConfirmation),
                (true, Some(CanaryGate::Hold(d))) if !d.is_zero() => {
                    Some(WaitReason::CanaryHold { duration: d })
                }
                _ if !self.config.pause_between_batches.is_zero() => {
                    Some(WaitReason::Pause { duration: self.config.pause_between_batches })
                }
                _ => None,
            };
            match gate {
                None => self.open_batch(now),
                Some(reason) => {
                    self.gate = match &reason {
                        WaitReason::CanaryConfirmation => Gate::Confirm,
                        WaitReason::CanaryHold { duration } | WaitReason::Pause { duration } => {
                            let at = now + *duration;
                            self.timers.push(Reverse((at, TimerKey::Gate)));
                            Gate::Hold(at)
                        }
                    };
                    self.emit(now, EventKind::Waiting { reason });
                }
            }
        }
    }

    /// Ends every host not started yet: skipped, or cancelled.
    fn end_unstarted(&mut self, now: Instant) {
        let outcome = match self.stop {
            Some(StopReason::Cancelled) => HostOutcome::Cancelled,
            _ => HostOutcome::Skipped,
        };
        let first = self.plan.batches.get(self.batch).map_or(self.hosts.len(), |_| self.next_host);
        for h in first..self.hosts.len() {
            if self.hosts[h].stage == Stage::Pending && self.hosts[h].outcome.is_none() {
                let error = match outcome {
                    HostOutcome::Cancelled => "not started: the deployment was cancelled".to_owned(),
                    _ => "not started: the rollout stopped".to_owned(),
                };
                self.conclude(h, Failure { outcome, phase: Phase::Pending, error }, now);
            }
        }
        self.next_host = self.hosts.len();
    }

    fn start_host(&mut self, h: usize, now: Instant) {
        self.in_flight += 1;
        self.hosts[h].started = Some(self.elapsed(now));
        self.enter(h, Stage::Connect, now);
    }

    /// Moves host `h` to `stage`, queueing its action and telling of its phase.
    fn enter(&mut self, h: usize, stage: Stage, now: Instant) {
        let host = HostId(h);
        let first_weight = self.first_weight();
        let run = &mut self.hosts[h];
        run.stage = stage;
        let (action, phase) = match stage {
            Stage::Pending | Stage::Finished => (None, None),
            Stage::Connect => (Some(Action::Connect { host }), Some(Phase::Connecting)),
            Stage::Drain => {
                (Some(Action::SetState { host, state: AdminState::Drain }), Some(Phase::Draining))
            }
            Stage::WaitDrain => (
                Some(Action::WaitDrained { host, timeout: self.config.drain_timeout }),
                Some(Phase::WaitingForDrain),
            ),
            Stage::Shutdown => (Some(Action::ShutdownSessions { host }), Some(Phase::ClosingSessions)),
            Stage::Maint => {
                (Some(Action::SetState { host, state: AdminState::Maint }), Some(Phase::Disabling))
            }
            Stage::Step(i) => {
                run.tail.clear();
                let StepLimit { name, timeout } = self.config.steps[i].clone();
                (Some(Action::RunStep { host, step: i, timeout }), Some(Phase::Step { number: i + 1, name }))
            }
            Stage::Health => {
                let timeout = self.config.health_command.unwrap_or_default().timeout;
                if run.health_deadline.is_none() {
                    run.tail.clear();
                    run.health_deadline = Some(now + timeout);
                    run.health_attempt = 1;
                }
                let remaining = run.health_deadline.map_or(timeout, |d| d.saturating_duration_since(now));
                let attempt = run.health_attempt;
                let timeout = remaining.max(Duration::from_secs(1));
                (
                    Some(Action::RunHealthCheck { host, attempt, timeout }),
                    Some(Phase::HealthCheck { attempt }),
                )
            }
            Stage::HealthWait => (None, None),
            Stage::PreWeight => {
                let weight = first_weight;
                (Some(Action::SetWeight { host, weight }), Some(Phase::Enabling { weight }))
            }
            Stage::Ready => (Some(Action::SetState { host, state: AdminState::Ready }), None),
            Stage::WaitUp => {
                let timeout = self.config.load_balancer_up.unwrap_or_default();
                (Some(Action::WaitUp { host, timeout }), Some(Phase::WaitingForUp))
            }
            Stage::Ramp(i) => {
                let weight = self.config.ramp[i].weight;
                (Some(Action::SetWeight { host, weight }), Some(Phase::Enabling { weight }))
            }
            Stage::Hold(i) => (None, Some(Phase::Holding { weight: self.config.ramp[i].weight })),
            Stage::Full => {
                let weight = Weight::FULL;
                (Some(Action::SetWeight { host, weight }), Some(Phase::Enabling { weight }))
            }
            Stage::Restore => {
                (Some(Action::SetState { host, state: AdminState::Ready }), Some(Phase::Restoring))
            }
            Stage::Unwind => {
                (Some(Action::SetState { host, state: AdminState::Maint }), Some(Phase::Unwinding))
            }
            Stage::Close => (Some(Action::Close { host }), Some(Phase::Closing)),
        };
        if let Some(action) = action {
            run.awaiting = true;
            self.actions.push_back(action);
        }
        if let Some(phase) = phase {
            if run.phase != phase {
                run.phase = phase.clone();
                let host = run.name.clone();
                self.emit(now, EventKind::HostPhase { host, phase });
            }
        }
    }

    fn first_weight(&self) -> Weight {
        if self.config.load_balancer_up.is_some() {
            Weight::ZERO
        } else {
            self.config.ramp.first().map_or(Weight::FULL, |r| r.weight)
        }
    }

    /// What follows the changeset step `after` (or the start of the changeset).
    fn after_steps(&mut self, h: usize, next_step: usize, now: Instant) {
        if next_step < self.config.steps.len() {
            self.enter(h, Stage::Step(next_step), now);
        } else if self.config.health_command.is_some() {
            self.enter(h, Stage::Health, now);
        } else {
            self.enter(h, Stage::PreWeight, now);
        }
    }

    fn after_hold(&mut self, h: usize, i: usize, now: Instant) {
        if i + 1 < self.config.ramp.len() {
            self.enter(h, Stage::Ramp(i + 1), now);
        } else {
            self.enter(h, Stage::Full, now);
        }
    }

    fn hold(&mut self, h: usize, i: usize, now: Instant) {
        let hold = self.config.ramp[i].hold;
        self.enter(h, Stage::Hold(i), now);
        if hold.is_zero() {
            self.after_hold(h, i, now);
        } else {
            self.set_host_timer(h, now + hold);
        }
    }

    /// Records a load balancer change that took effect.
    fn lb_changed(&mut self, h: usize, change: impl FnOnce(&mut HostRun)) {
        let was_out = !self.hosts[h].in_rotation();
        change(&mut self.hosts[h]);
        let is_out = !self.hosts[h].in_rotation();
        match (was_out, is_out) {
            (false, true) => self.out_now += 1,
            (true, false) => self.out_now -= 1,
            _ => {}
        }
        self.max_out = self.max_out.max(self.out_now);
    }

    /// Records a load balancer call that failed: a timeout leaves the state unknown; any other
    /// error left it as it was (the adapter puts back what it changed).
    fn lb_failed(&mut self, h: usize, error: &HostError) {
        if error.kind == ErrorKind::Timeout {
            let weight = matches!(self.hosts[h].stage, Stage::PreWeight | Stage::Ramp(_) | Stage::Full);
            self.lb_changed(h, |run| {
                if weight {
                    run.weight_unknown = true;
                } else {
                    run.admin_unknown = true;
                }
            });
        }
    }

    fn advance(&mut self, h: usize, result: ActionResult, now: Instant) {
        let stage = self.hosts[h].stage;
        match (stage, result) {
            (Stage::Connect, ActionResult::Failed(e)) => {
                let outcome = if e.kind == ErrorKind::Unreachable {
                    HostOutcome::Unreachable
                } else {
                    HostOutcome::Failed
                };
                self.fail(h, outcome, e.message, now);
            }
            (Stage::Connect, _) => {
                self.hosts[h].connected = true;
                self.enter(h, Stage::Drain, now);
            }
            (Stage::Drain, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::Drain, _) => {
                self.lb_changed(h, |run| run.set_admin(AdminState::Drain));
                self.enter(h, Stage::WaitDrain, now);
            }
            (Stage::WaitDrain, ActionResult::Failed(e)) => {
                if e.kind == ErrorKind::Timeout && self.config.on_drain_timeout == DrainTimeoutPolicy::Force {
                    let host = Some(self.hosts[h].name.clone());
                    let message = format!(
                        "{}: closing the remaining sessions (on_drain_timeout = \"force\")",
                        e.message
                    );
                    self.emit(now, EventKind::Warning { host, message });
                    self.enter(h, Stage::Shutdown, now);
                } else {
                    let message = if e.kind == ErrorKind::Timeout {
                        format!(
                            "{}; host not deployed and put back into rotation (on_drain_timeout = \"fail\")",
                            e.message
                        )
                    } else {
                        format!("{}; host not deployed and put back into rotation", e.message)
                    };
                    self.restore(h, message, now);
                }
            }
            (Stage::WaitDrain, _) => self.enter(h, Stage::Maint, now),
            (Stage::Shutdown, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.restore(h, format!("{}; host not deployed", e.message), now);
            }
            (Stage::Shutdown, _) => self.enter(h, Stage::Maint, now),
            (Stage::Maint, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.restore(h, format!("{}; host not deployed", e.message), now);
            }
            (Stage::Maint, _) => {
                self.lb_changed(h, |run| run.set_admin(AdminState::Maint));
                self.after_steps(h, 0, now);
            }
            (Stage::Step(i), ActionResult::Exited(status)) if status.success() => {
                self.after_steps(h, i + 1, now)
            }
            (Stage::Step(_), ActionResult::Exited(status)) => {
                let message = format!("the command ended with {status}");
                self.fail(h, HostOutcome::Failed, message, now);
            }
            (Stage::Step(_), ActionResult::Failed(e)) => {
                let message = e.message;
                self.fail(h, HostOutcome::Failed, message, now);
            }
            (Stage::Step(i), _) => self.after_steps(h, i + 1, now),
            (Stage::Health, ActionResult::Exited(status)) if status.success() => {
                self.enter(h, Stage::PreWeight, now);
            }
            (Stage::Health, result) => {
                let last = match result {
                    ActionResult::Exited(status) => status.to_string(),
                    ActionResult::Failed(e) => e.message,
                    ActionResult::Done => "no exit status".to_owned(),
                };
                let HealthRetry { timeout, interval } = self.config.health_command.unwrap_or_default();
                let deadline = self.hosts[h].health_deadline.unwrap_or(now);
                self.hosts[h].last_health = Some(last.clone());
                if now + interval < deadline {
                    self.enter(h, Stage::HealthWait, now);
                    self.set_host_timer(h, now + interval);
                } else {
                    let attempts = self.hosts[h].health_attempt;
                    let message = format!(
                        "health check did not pass within {} ({attempts} attempts; last: {last})",
                        humantime::format_duration(timeout)
                    );
                    self.fail(h, HostOutcome::Failed, message, now);
                }
            }
            (Stage::PreWeight, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::PreWeight, _) => {
                let weight = self.first_weight();
                self.lb_changed(h, |run| run.set_weight(weight));
                self.enter(h, Stage::Ready, now);
            }
            (Stage::Ready, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::Ready, _) => {
                self.lb_changed(h, |run| run.set_admin(AdminState::Ready));
                if self.config.load_balancer_up.is_some() {
                    self.enter(h, Stage::WaitUp, now);
                } else if self.config.ramp.is_empty() {
                    self.enter(h, Stage::Close, now);
                } else {
                    self.hold(h, 0, now);
                }
            }
            (Stage::WaitUp, ActionResult::Failed(e)) => self.fail(h, HostOutcome::Failed, e.message, now),
            (Stage::WaitUp, _) => {
                if self.config.ramp.is_empty() {
                    self.enter(h, Stage::Full, now);
                } else {
                    self.enter(h, Stage::Ramp(0), now);
                }
            }
            (Stage::Ramp(_) | Stage::Full, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::Ramp(i), _) => {
                let weight = self.config.ramp[i].weight;
                self.lb_changed(h, |run| run.set_weight(weight));
                self.hold(h, i, now);
            }
            (Stage::Full, _) => {
                self.lb_changed(h, |run| run.set_weight(Weight::FULL));
                self.enter(h, Stage::Close, now);
            }
            (Stage::Restore, result) => {
                self.cleaned_up(h, result, AdminState::Ready, "putting it back failed too", now);
            }
            (Stage::Unwind, result) => {
                self.cleaned_up(h, result, AdminState::Maint, "taking it out of rotation failed too", now);
            }
            (Stage::Close, _) => {
                self.hosts[h].connected = false;
                let failure = self.hosts[h].failure.take();
                match failure {
                    Some(failure) => self.conclude(h, failure, now),
                    None => {
                        self.hosts[h].phase = Phase::Done;
                        let failure = Failure {
                            outcome: HostOutcome::Succeeded,
                            phase: Phase::Done,
                            error: String::new(),
                        };
                        self.conclude(h, failure, now);
                    }
                }
            }
            (Stage::Pending | Stage::HealthWait | Stage::Hold(_) | Stage::Finished, _) => {}
        }
    }

    /// After putting a failed host's server in `state` (restore or unwind): record how that went
    /// in its failure, then close its session.
    fn cleaned_up(&mut self, h: usize, result: ActionResult, state: AdminState, also: &str, now: Instant) {
        let phase = self.hosts[h].phase.clone();
        let mut failure = self.hosts[h].failure.take().unwrap_or_else(|| unknown_failure(phase));
        match result {
            ActionResult::Failed(e) => {
                self.lb_failed(h, &e);
                failure.error = format!("{}; {also}: {}", failure.error, e.message);
            }
            _ => self.lb_changed(h, |run| run.set_admin(state)),
        }
        self.hosts[h].failure = Some(failure);
        self.enter(h, Stage::Close, now);
    }

    /// The host failed at its current phase: take it out of rotation if it is in, close its
    /// session, then end it.
    fn fail(&mut self, h: usize, outcome: HostOutcome, error: String, now: Instant) {
        let run = &mut self.hosts[h];
        run.failure = Some(Failure { outcome, phase: run.phase.clone(), error });
        let entered_rotation_after_changes =
            matches!(run.stage, Stage::WaitUp | Stage::Ramp(_) | Stage::Hold(_) | Stage::Full);
        if entered_rotation_after_changes && (run.in_rotation() || run.admin == AdminState::Ready) {
            self.enter(h, Stage::Unwind, now);
        } else if run.connected {
            self.enter(h, Stage::Close, now);
        } else if let Some(failure) = run.failure.take() {
            self.conclude(h, failure, now);
        }
    }

    /// The host was not deployed: put it back into rotation, then end it failed.
    fn restore(&mut self, h: usize, error: String, now: Instant) {
        let run = &mut self.hosts[h];
        run.failure = Some(Failure { outcome: HostOutcome::Failed, phase: run.phase.clone(), error });
        self.enter(h, Stage::Restore, now);
    }

    /// Ends host `h` with `failure` (or success).
    fn conclude(&mut self, h: usize, failure: Failure, now: Instant) {
        let started = self.hosts[h].stage != Stage::Pending;
        let elapsed = self.elapsed(now);
        let run = &mut self.hosts[h];
        run.stage = Stage::Finished;
        run.timer = None;
        run.outcome = Some(failure.outcome);
        run.finished = Some(elapsed);
        let rotation = run.rotation();
        let host = run.name.clone();
        let error = (failure.outcome != HostOutcome::Succeeded).then(|| failure.error.clone());
        if failure.outcome != HostOutcome::Succeeded {
            run.failure = Some(failure.clone());
        }
        self.totals.count(failure.outcome);
        if started {
            self.in_flight -= 1;
            if rotation != Rotation::InRotation {
                self.finished_out += 1;
            }
        }
        if self.plan.batches.get(self.batch).is_some_and(|b| b.contains(&h)) {
            self.batch_open = self.batch_open.saturating_sub(1);
        }
        self.emit(
            now,
            EventKind::HostFinished { host, outcome: failure.outcome, phase: failure.phase, error, rotation },
        );
        if matches!(failure.outcome, HostOutcome::Failed | HostOutcome::Unreachable) {
            self.failures += 1;
            if self.failures > self.plan.max_failures && self.stop.is_none() {
                let reason = StopReason::TooManyFailures {
                    failed: self.failures,
                    max_failures: self.plan.max_failures,
                };
                self.stop = Some(reason);
                self.emit(now, EventKind::stopping(reason));
            }
        }
    }

    fn finish(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        let outcome = match self.stop {
            Some(StopReason::Cancelled) => DeploymentOutcome::Cancelled,
            Some(StopReason::TooManyFailures { .. } | StopReason::NoCapacity { .. }) => {
                DeploymentOutcome::Stopped
            }
            None if self.failures > 0 => DeploymentOutcome::CompletedWithFailures,
            None => DeploymentOutcome::Succeeded,
        };
        self.outcome = Some(outcome);
        self.finished_at = Some(self.elapsed(now));
        let totals = self.totals;
        self.emit(now, EventKind::DeploymentFinished { outcome, totals });
    }
}

fn unknown_failure(phase: Phase) -> Failure {
    Failure { outcome: HostOutcome::Failed, phase, error: "failed".into() }
}
