//! The first leg: taking a host out of rotation. Connect, admission (the backend's budget, in
//! `budget.rs`), drain on every load balancer, wait for its sessions to end (or, with
//! `on_drain_timeout = "force"`, shut them down), then maintenance. A failure here happens
//! before the changeset, so the host is put back as it was found.

use std::time::Instant;

use super::host::Stage;
use super::{Action, ActionResult, ErrorKind, HostError, HostId, Rollout};
use crate::event::{EventKind, HostOutcome, Phase};
use crate::ports::AdminState;
use crate::request::DrainTimeoutPolicy;

impl Rollout {
    /// The action and phase of a take-out stage.
    pub(super) fn take_out_action(&self, host: HostId, stage: Stage) -> (Option<Action>, Option<Phase>) {
        match stage {
            Stage::Connect => {
                let attempt = self.hosts[host.0].attempts.max(1);
                (Some(Action::Connect { host, attempt }), Some(Phase::Connecting))
            }
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
            _ => (None, None),
        }
    }

    /// A take-out stage's action ended.
    pub(super) fn advance_take_out(&mut self, h: usize, stage: Stage, result: ActionResult, now: Instant) {
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
                // Stage steps first, while the host is still in rotation; then admission.
                if self.config.staged() > 0 {
                    self.hosts[h].step_attempt = 1;
                    self.enter(h, Stage::Step(0), now);
                } else {
                    self.enter(h, Stage::Admit, now);
                }
            }
            (Stage::Drain, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e, now);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::Drain, _) => {
                self.lb_changed(h, now, |run| run.set_admin(AdminState::Drain));
                self.enter(h, Stage::WaitDrain, now);
            }
            (Stage::WaitDrain, ActionResult::Failed(e)) => self.drain_not_done(h, e, now),
            (Stage::WaitDrain | Stage::Shutdown, ActionResult::Done | ActionResult::Exited(_))
                if self.keeps_checks(h) =>
            {
                // Drained and its checks running: the changeset starts without maintenance.
                let first = self.config.staged();
                self.after_steps(h, first, now);
            }
            (Stage::WaitDrain | Stage::Shutdown, ActionResult::Done | ActionResult::Exited(_)) => {
                self.enter(h, Stage::Maint, now)
            }
            (Stage::Shutdown | Stage::Maint, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e, now);
                self.restore(h, format!("{}; host not deployed", e.message), now);
            }
            (Stage::Maint, _) => {
                self.lb_changed(h, now, |run| run.set_admin(AdminState::Maint));
                let first = self.config.staged();
                self.after_steps(h, first, now);
            }
            _ => {}
        }
    }

    /// Whether host `h` keeps its checks running while out (`checks_while_out`): only a server
    /// found in rotation (one found out of it takes today's way, through maintenance).
    pub(super) fn keeps_checks(&self, h: usize) -> bool {
        self.config.checks_while_out() && self.plan.hosts[h].was_in_rotation()
    }

    /// Sessions did not end (or the wait failed): force them closed, or put the host back.
    fn drain_not_done(&mut self, h: usize, e: HostError, now: Instant) {
        let timed_out = e.kind == ErrorKind::Timeout;
        if timed_out && self.config.on_drain_timeout == DrainTimeoutPolicy::Force {
            let host = Some(self.hosts[h].name.clone());
            let message =
                format!("{}: closing the remaining sessions (on_drain_timeout = \"force\")", e.message);
            self.emit(now, EventKind::Warning { host, message });
            self.enter(h, Stage::Shutdown, now);
        } else {
            let message = if timed_out {
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
}
