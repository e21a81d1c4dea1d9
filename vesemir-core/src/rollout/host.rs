//! One host's run: its [`Stage`], what the rollout knows of its rotation, and the two
//! dispatchers every leg hangs off: [`Rollout::enter`] (a stage's action and phase) and
//! [`Rollout::advance`] (an action's result). Also how a host ends: failed, restored, concluded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Action, ActionResult, ErrorKind, HostError, HostId, Rollout};
use crate::event::{EventKind, HostOutcome, Phase, Rotation, StopReason};
use crate::name::HostName;
use crate::ports::{AdminState, InstanceState, Operational, OutputLine, Weight};

/// Where a host is, in finer steps than its public [`Phase`]. The legs: take out
/// (`Connect`..`Maint`, in `take_out.rs`; `Admit` in `budget.rs`), changeset (`Step`, `Health`, `HealthWait`, in
/// `changeset.rs`), put back (`PreWeight`..`Full`, `Restore`, `Unwind`, in `put_back.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Pending,
    Connect,
    /// Waiting for the backend's answer (or for room in its budget) before the drain.
    Admit,
    Drain,
    WaitDrain,
    Shutdown,
    Maint,
    Step(usize),
    /// Waiting to try step `n` again after a transient failure.
    StepWait(usize),
    Health,
    HealthWait,
    /// Marking the server DOWN after the changeset, its checks running (`checks_while_out`).
    MarkDown,
    /// The HTTP health check from the orchestrator (`probe.rs`), and the pause between two.
    Probe,
    ProbeWait,
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

/// How a host ended (or will end once its session is closed): outcome, where, and why.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) outcome: HostOutcome,
    pub(super) phase: Phase,
    pub(super) error: String,
}

impl Failure {
    /// A failure whose cause was lost (never expected: every path records one).
    fn unknown(phase: Phase) -> Self {
        Failure { outcome: HostOutcome::Failed, phase, error: "failed".into() }
    }
}

#[derive(Debug)]
pub(super) struct HostRun {
    pub(super) name: HostName,
    pub(super) stage: Stage,
    pub(super) phase: Phase,
    pub(super) outcome: Option<HostOutcome>,
    pub(super) admin: AdminState,
    pub(super) weight: Weight,
    /// A state change timed out: the state may or may not have changed.
    pub(super) admin_unknown: bool,
    /// A weight change timed out.
    pub(super) weight_unknown: bool,
    /// Its health checks failed on some box when last read (before the deployment, or at
    /// admission), and no wait for UP has passed since: out of rotation whatever its admin state.
    pub(super) checks_down: bool,
    /// An action of this host is outstanding.
    pub(super) awaiting: bool,
    /// Its session is open and must be closed before it ends.
    pub(super) connected: bool,
    /// Tries of the current step so far (1 while its first runs).
    pub(super) step_attempt: u32,
    pub(super) health_deadline: Option<Instant>,
    pub(super) health_attempt: u32,
    pub(super) last_health: Option<String>,
    /// Set once it failed, while it is put back or out and its session closed.
    pub(super) failure: Option<Failure>,
    pub(super) started: Option<Duration>,
    pub(super) finished: Option<Duration>,
    pub(super) tail: VecDeque<OutputLine>,
    /// Its live timer (health retry, ramp hold); older entries in the heap are stale.
    pub(super) timer: Option<Instant>,
    /// Since when this rollout has had it out of rotation (its own take-out), if it has now.
    pub(super) out_since: Option<Instant>,
    /// How long this rollout had it out of rotation before `out_since`.
    pub(super) out_for: Duration,
    /// Whether this rollout ever took it out of rotation.
    pub(super) was_out: bool,
    /// How many times it was started (its connects): 0 until it starts, 2 once retried.
    pub(super) attempts: u32,
}

impl HostRun {
    /// A host not started yet, in the state its server was found in (`original`; empty: in
    /// rotation at full weight).
    pub(super) fn new(name: HostName, original: &[InstanceState]) -> Self {
        let mut run = Self {
            name,
            stage: Stage::Pending,
            phase: Phase::Pending,
            outcome: None,
            admin: AdminState::Ready,
            weight: Weight::FULL,
            admin_unknown: false,
            weight_unknown: false,
            checks_down: false,
            awaiting: false,
            connected: false,
            step_attempt: 0,
            health_deadline: None,
            health_attempt: 0,
            last_health: None,
            failure: None,
            started: None,
            finished: None,
            tail: VecDeque::new(),
            timer: None,
            out_since: None,
            out_for: Duration::ZERO,
            was_out: false,
            attempts: 0,
        };
        if !original.is_empty() {
            run.set_states(original);
            run.checks_down = original.iter().any(|s| s.operational != Operational::Up);
        }
        run
    }

    /// Records a change to these states per instance: ready only if ready everywhere, a
    /// weight above 0 only if above 0 everywhere (the rotation rule needs no more).
    pub(super) fn set_states(&mut self, to: &[InstanceState]) {
        let admin = if to.iter().all(|s| s.admin == AdminState::Ready) {
            AdminState::Ready
        } else if to.iter().any(|s| s.admin == AdminState::Maint) {
            AdminState::Maint
        } else {
            AdminState::Drain
        };
        let weight = if to.iter().all(|s| s.weight > 0) { Weight::FULL } else { Weight::ZERO };
        self.set_admin(admin);
        self.set_weight(weight);
    }

    pub(super) fn set_admin(&mut self, admin: AdminState) {
        self.admin = admin;
        self.admin_unknown = false;
    }

    pub(super) fn set_weight(&mut self, weight: Weight) {
        self.weight = weight;
        self.weight_unknown = false;
    }

    pub(super) fn in_rotation(&self) -> bool {
        !self.rotation_unknown()
            && !self.checks_down
            && self.admin == AdminState::Ready
            && self.weight > Weight::ZERO
    }

    fn rotation_unknown(&self) -> bool {
        self.admin_unknown || self.weight_unknown
    }

    pub(super) fn rotation(&self) -> Rotation {
        if self.rotation_unknown() {
            Rotation::Unknown
        } else if self.in_rotation() {
            Rotation::InRotation
        } else {
            Rotation::OutOfRotation
        }
    }
}

impl Rollout {
    /// Moves host `h` to `stage`, queueing its action and telling of its phase.
    pub(super) fn enter(&mut self, h: usize, stage: Stage, now: Instant) {
        let host = HostId(h);
        self.hosts[h].stage = stage;
        let (action, phase) = match stage {
            Stage::Pending | Stage::Finished | Stage::HealthWait | Stage::StepWait(_) | Stage::ProbeWait => {
                (None, None)
            }
            Stage::Probe => self.probe_action(h, now),
            Stage::Admit => self.admit_action(host),
            Stage::Connect | Stage::Drain | Stage::WaitDrain | Stage::Shutdown | Stage::Maint => {
                self.take_out_action(host, stage)
            }
            Stage::Step(_) | Stage::Health | Stage::MarkDown => self.changeset_action(h, stage, now),
            Stage::PreWeight
            | Stage::Ready
            | Stage::WaitUp
            | Stage::Ramp(_)
            | Stage::Hold(_)
            | Stage::Full
            | Stage::Restore
            | Stage::Unwind => self.put_back_action(host, stage),
            Stage::Close => (Some(Action::Close { host }), Some(Phase::Closing)),
        };
        let run = &mut self.hosts[h];
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

    /// Host `h`'s outstanding action ended with `result`: moves it on, by leg.
    pub(super) fn advance(&mut self, h: usize, result: ActionResult, now: Instant) {
        let stage = self.hosts[h].stage;
        match stage {
            Stage::Connect | Stage::Drain | Stage::WaitDrain | Stage::Shutdown | Stage::Maint => {
                self.advance_take_out(h, stage, result, now)
            }
            Stage::Step(_) | Stage::Health | Stage::MarkDown => self.advance_changeset(h, stage, result, now),
            Stage::Probe => self.advance_probe(h, result, now),
            Stage::PreWeight
            | Stage::Ready
            | Stage::WaitUp
            | Stage::Ramp(_)
            | Stage::Full
            | Stage::Restore
            | Stage::Unwind => self.advance_put_back(h, stage, result, now),
            Stage::Admit => self.advance_admit(h, result, now),
            Stage::Close => self.closed(h, now),
            Stage::Pending
            | Stage::HealthWait
            | Stage::StepWait(_)
            | Stage::ProbeWait
            | Stage::Hold(_)
            | Stage::Finished => {}
        }
    }

    /// Records a load balancer change that took effect.
    pub(super) fn lb_changed(&mut self, h: usize, now: Instant, change: impl FnOnce(&mut HostRun)) {
        let was_out = !self.hosts[h].in_rotation();
        change(&mut self.hosts[h]);
        let is_out = !self.hosts[h].in_rotation();
        let run = &mut self.hosts[h];
        match (was_out, is_out) {
            (false, true) => {
                self.out_now += 1;
                run.out_since = Some(now);
                run.was_out = true;
            }
            (true, false) => {
                self.out_now -= 1;
                if let Some(since) = run.out_since.take() {
                    run.out_for = run.out_for.saturating_add(now.saturating_duration_since(since));
                }
            }
            _ => {}
        }
        self.max_out = self.max_out.max(self.out_now);
    }

    /// Records a load balancer call that failed: a timeout leaves the state unknown; any other
    /// error left it as it was (the adapter puts back what it changed).
    pub(super) fn lb_failed(&mut self, h: usize, error: &HostError, now: Instant) {
        if error.kind == ErrorKind::Timeout {
            let weight = matches!(self.hosts[h].stage, Stage::PreWeight | Stage::Ramp(_) | Stage::Full);
            self.lb_changed(h, now, |run| {
                if weight {
                    run.weight_unknown = true;
                } else {
                    run.admin_unknown = true;
                }
            });
        }
    }

    /// The host failed at its current phase: take it out of rotation if it is in, close its
    /// session, then end it.
    pub(super) fn fail(&mut self, h: usize, outcome: HostOutcome, error: String, now: Instant) {
        let run = &mut self.hosts[h];
        run.failure = Some(Failure { outcome, phase: run.phase.clone(), error });
        let entered_rotation_after_changes =
            matches!(run.stage, Stage::WaitUp | Stage::Ramp(_) | Stage::Hold(_) | Stage::Full);
        // With the checks running while out, a changed host is drained, not in maintenance:
        // a failure takes it the rest of the way out.
        let staged = self.config.staged();
        let changing = match run.stage {
            Stage::Step(i) | Stage::StepWait(i) => i >= staged,
            Stage::Health
            | Stage::HealthWait
            | Stage::Probe
            | Stage::ProbeWait
            | Stage::MarkDown
            | Stage::PreWeight
            | Stage::Ready => true,
            _ => false,
        };
        let drained_after_changes =
            self.config.checks_while_out() && run.admin == AdminState::Drain && changing;
        if drained_after_changes
            || entered_rotation_after_changes && (run.in_rotation() || run.admin == AdminState::Ready)
        {
            self.enter(h, Stage::Unwind, now);
        } else if run.connected {
            self.enter(h, Stage::Close, now);
        } else if let Some(failure) = run.failure.take() {
            self.conclude(h, failure, now);
        }
    }

    /// The host was not deployed: put it back as it was found, then end it failed.
    pub(super) fn restore(&mut self, h: usize, error: String, now: Instant) {
        let run = &mut self.hosts[h];
        run.failure = Some(Failure { outcome: HostOutcome::Failed, phase: run.phase.clone(), error });
        self.enter(h, Stage::Restore, now);
    }

    /// After putting a failed host's server in `state` (restore or unwind): record how that went
    /// in its failure, then close its session.
    pub(super) fn cleaned_up(
        &mut self,
        h: usize,
        result: ActionResult,
        change: impl FnOnce(&mut HostRun),
        also: &str,
        now: Instant,
    ) {
        let phase = self.hosts[h].phase.clone();
        let mut failure = self.hosts[h].failure.take().unwrap_or_else(|| Failure::unknown(phase));
        match result {
            ActionResult::Failed(e) => {
                self.lb_failed(h, &e, now);
                failure.error = format!("{}; {also}: {}", failure.error, e.message);
            }
            _ => self.lb_changed(h, now, change),
        }
        self.hosts[h].failure = Some(failure);
        self.enter(h, Stage::Close, now);
    }

    /// The host's session is closed: it ends with its failure, or succeeded.
    fn closed(&mut self, h: usize, now: Instant) {
        self.hosts[h].connected = false;
        let failure = self.hosts[h].failure.take();
        match failure {
            Some(failure) => self.conclude(h, failure, now),
            None => {
                self.hosts[h].phase = Phase::Done;
                let failure =
                    Failure { outcome: HostOutcome::Succeeded, phase: Phase::Done, error: String::new() };
                self.conclude(h, failure, now);
            }
        }
    }

    /// Ends host `h` with `failure` (or success).
    pub(super) fn conclude(&mut self, h: usize, failure: Failure, now: Instant) {
        let started = self.hosts[h].stage != Stage::Pending;
        let elapsed = self.elapsed(now);
        let run = &mut self.hosts[h];
        run.stage = Stage::Finished;
        run.timer = None;
        run.outcome = Some(failure.outcome);
        run.finished = Some(elapsed);
        let rotation = run.rotation();
        // Its time out of rotation, to now if it stays out.
        if let Some(since) = run.out_since.take() {
            run.out_for = run.out_for.saturating_add(now.saturating_duration_since(since));
        }
        let out_of_rotation_ms =
            run.was_out.then(|| u64::try_from(run.out_for.as_millis()).unwrap_or(u64::MAX));
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
            EventKind::HostFinished {
                host,
                outcome: failure.outcome,
                phase: failure.phase,
                error,
                rotation,
                out_of_rotation_ms,
            },
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
}
