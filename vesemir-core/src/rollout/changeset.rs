//! The middle leg: the changeset on a host out of rotation. Its steps in order, then the health
//! command, retried every `interval` until it passes or its `timeout` is spent. A failure here
//! leaves the host out of rotation. Stage steps (the first ones, `stage = true`) run the same
//! way right after the connect, while the host is still in rotation; a failure there leaves the
//! host untouched.

use std::time::{Duration, Instant};

use super::config::{HealthRetry, StepLimit};
use super::host::Stage;
use super::{Action, ActionResult, HostId, Rollout};
use crate::event::{HostOutcome, Phase};

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
            _ => (None, None),
        }
    }

    /// A step or a health check ended.
    pub(super) fn advance_changeset(&mut self, h: usize, stage: Stage, result: ActionResult, now: Instant) {
        match (stage, result) {
            (Stage::Step(i), ActionResult::Exited(status)) if status.success() => {
                self.after_steps(h, i + 1, now)
            }
            (Stage::Step(_), ActionResult::Exited(status)) => {
                let message = format!("the command ended with {status}");
                self.fail(h, HostOutcome::Failed, message, now);
            }
            (Stage::Step(_), ActionResult::Failed(e)) => self.fail(h, HostOutcome::Failed, e.message, now),
            (Stage::Step(i), ActionResult::Done) => self.after_steps(h, i + 1, now),
            (Stage::Health, ActionResult::Exited(status)) if status.success() => {
                self.after_health_command(h, now);
            }
            (Stage::Health, result) => self.health_not_passed(h, result, now),
            _ => {}
        }
    }

    /// What follows the changeset step before `next_step` (or the start of the changeset).
    /// After the last stage step (run in rotation), the host goes to admission and the drain.
    pub(super) fn after_steps(&mut self, h: usize, next_step: usize, now: Instant) {
        let staged = self.config.staged();
        let staging = matches!(self.hosts[h].stage, Stage::Step(i) if i < staged);
        if staging && next_step == staged {
            self.enter(h, Stage::Admit, now);
        } else if next_step < self.config.steps.len() {
            self.enter(h, Stage::Step(next_step), now);
        } else if self.config.health_command.is_some() {
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
