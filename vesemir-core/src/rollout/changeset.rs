//! The middle leg: the changeset on a host out of rotation. Its steps in order (a step that
//! declares `retries` is tried again after a transient failure, with a growing wait), then the
//! health command, retried every `interval` until it passes or its `timeout` is spent. A failure
//! here leaves the host out of rotation. Stage steps (the first ones, `stage = true`) run the
//! same way right after the connect, while the host is still in rotation; a failure there leaves
//! the host untouched.

use std::time::{Duration, Instant};

use super::config::{HealthRetry, StepLimit};
use super::host::Stage;
use super::{Action, ActionResult, ErrorKind, HostId, Rollout};
use crate::event::{EventKind, HostOutcome, Phase};

impl Rollout {
    /// The action and phase of a changeset stage; starting one clears the host's output tail.
    pub(super) fn changeset_action(
        &mut self,
        h: usize,
        stage: Stage,
        now: Instant,
    ) -> (Option<Action>, Option<Phase>) {
        let host = HostId(h);
        let run = &mut self.hosts[h];
        match stage {
            Stage::Step(i) => {
                run.tail.clear();
                let StepLimit { name, timeout, .. } = self.config.steps[i].clone();
                (Some(Action::RunStep { host, step: i, timeout }), Some(Phase::Step { number: i + 1, name }))
            }
            Stage::Health => {
                let timeout = self.config.health_command.unwrap_or_default().timeout;
                if run.health_deadline.is_none() {
                    run.tail.clear();
                    run.health_deadline = Some(crate::time::deadline(now, timeout));
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
            // No phase of its own: one quick call, counted with the last step.
            Stage::MarkDown => (Some(Action::MarkDown { host }), None),
            _ => (None, None),
        }
    }

    /// A step or a health check ended.
    pub(super) fn advance_changeset(&mut self, h: usize, stage: Stage, result: ActionResult, now: Instant) {
        match (stage, result) {
            (Stage::Step(i), ActionResult::Exited(status)) if status.success() => {
                self.after_steps(h, i + 1, now)
            }
            (Stage::Step(i), ActionResult::Exited(status)) => {
                let transient =
                    self.config.steps[i].retries.as_ref().is_some_and(|r| r.retries_exit(&status));
                let message = format!("the command ended with {status}");
                self.step_failed(h, i, transient, message, now);
            }
            (Stage::Step(i), ActionResult::Failed(e)) => {
                let transient = e.kind == ErrorKind::Unreachable && self.config.steps[i].retries.is_some();
                self.step_failed(h, i, transient, e.message, now);
            }
            (Stage::Step(i), ActionResult::Done) => self.after_steps(h, i + 1, now),
            (Stage::Health, ActionResult::Exited(status)) if status.success() => {
                self.after_health_command(h, now);
            }
            (Stage::Health, result) => self.health_not_passed(h, result, now),
            (Stage::MarkDown, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e, now);
                let message = format!("{} (marking it DOWN after the changeset)", e.message);
                self.fail(h, HostOutcome::Failed, message, now);
            }
            (Stage::MarkDown, _) => {
                // Checks now decide: its wait for UP comes after the health gate.
                self.hosts[h].checks_down = true;
                self.health_gate(h, now);
            }
            _ => {}
        }
    }

    /// Step `i` failed (`transient`: for a reason its retries cover): try it again after the
    /// retry's wait while tries are left, else fail the host.
    fn step_failed(&mut self, h: usize, i: usize, transient: bool, reason: String, now: Instant) {
        let attempt = self.hosts[h].step_attempt;
        let retries = self.config.steps[i].retries.as_ref().filter(|r| transient && attempt <= r.count);
        let Some(retries) = retries else {
            let message = match self.config.steps[i].retries.as_ref() {
                Some(_) if attempt > 1 => format!("{reason} (attempt {attempt}, the last)"),
                _ => reason,
            };
            self.fail(h, HostOutcome::Failed, message, now);
            return;
        };
        let delay = retries.delay_before(attempt);
        let attempts = retries.count + 1;
        let kind = EventKind::StepRetry {
            host: self.hosts[h].name.clone(),
            step: self.config.steps[i].name.clone(),
            attempt,
            attempts,
            reason,
            delay,
        };
        self.emit(now, kind);
        self.enter(h, Stage::StepWait(i), now);
        self.set_host_timer(h, crate::time::deadline(now, delay));
    }

    /// The wait after a transient failure of step `i` is over: run it again.
    pub(super) fn retry_step(&mut self, h: usize, i: usize, now: Instant) {
        self.hosts[h].step_attempt += 1;
        self.enter(h, Stage::Step(i), now);
    }

    /// What follows the changeset step before `next_step` (or the start of the changeset).
    /// After the last stage step (run in rotation), the host goes to admission and the drain.
    pub(super) fn after_steps(&mut self, h: usize, next_step: usize, now: Instant) {
        let staged = self.config.staged();
        let staging = matches!(self.hosts[h].stage, Stage::Step(i) if i < staged);
        if staging && next_step == staged {
            self.enter(h, Stage::Admit, now);
        } else if next_step < self.config.steps.len() {
            self.hosts[h].step_attempt = 1;
            self.enter(h, Stage::Step(next_step), now);
        } else if self.keeps_checks(h) {
            // The changeset is done: from now on only new checks can bring it back UP.
            self.enter(h, Stage::MarkDown, now);
        } else {
            self.health_gate(h, now);
        }
    }

    /// The changeset is done (and the server marked DOWN when its checks keep running): the
    /// health command, else what follows it.
    fn health_gate(&mut self, h: usize, now: Instant) {
        if self.config.health_command.is_some() {
            self.enter(h, Stage::Health, now);
        } else {
            self.after_health_command(h, now);
        }
    }

    /// A health check attempt did not pass: try again after the interval if time is left,
    /// else fail the host.
    fn health_not_passed(&mut self, h: usize, result: ActionResult, now: Instant) {
        let last = match result {
            ActionResult::Exited(status) => status.to_string(),
            ActionResult::Failed(e) => e.message,
            ActionResult::Done | ActionResult::Backend(_) => "no exit status".to_owned(),
        };
        let HealthRetry { timeout, interval } = self.config.health_command.unwrap_or_default();
        let deadline = self.hosts[h].health_deadline.unwrap_or(now);
        self.hosts[h].last_health = Some(last.clone());
        let retry_at = crate::time::deadline(now, interval);
        if retry_at < deadline {
            self.enter(h, Stage::HealthWait, now);
            self.set_host_timer(h, retry_at);
        } else {
            let attempts = self.hosts[h].health_attempt;
            let message = format!(
                "health check did not pass within {} ({attempts} attempts; last: {last})",
                humantime::format_duration(timeout)
            );
            self.fail(h, HostOutcome::Failed, message, now);
        }
    }
}
