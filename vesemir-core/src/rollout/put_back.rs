//! The last leg: putting a deployed host back into rotation. First weight (0 when the load
//! balancers must report UP first), ready, wait for UP, then the ramp weights with their holds,
//! then 100%. Also the two ways back for a failed host: restore (put back untouched, when the
//! changeset never started) and unwind (take out again, when it had).

use std::time::Instant;

use super::host::Stage;
use super::{Action, ActionResult, HostId, Rollout};
use crate::event::{HostOutcome, Phase};
use crate::ports::{AdminState, Weight};

impl Rollout {
    /// The action and phase of a put-back stage.
    pub(super) fn put_back_action(&self, host: HostId, stage: Stage) -> (Option<Action>, Option<Phase>) {
        let set_weight =
            |weight| (Some(Action::SetWeight { host, weight }), Some(Phase::Enabling { weight }));
        match stage {
            Stage::PreWeight => set_weight(self.first_weight()),
            Stage::Ready => (Some(Action::SetState { host, state: AdminState::Ready }), None),
            Stage::WaitUp => {
                let timeout = self.config.load_balancer_up.unwrap_or_default();
                (Some(Action::WaitUp { host, timeout }), Some(Phase::WaitingForUp))
            }
            Stage::Ramp(i) => set_weight(self.config.ramp[i].weight),
            Stage::Hold(i) => (None, Some(Phase::Holding { weight: self.config.ramp[i].weight })),
            Stage::Full => set_weight(Weight::FULL),
            Stage::Restore => {
                (Some(Action::SetState { host, state: AdminState::Ready }), Some(Phase::Restoring))
            }
            Stage::Unwind => {
                (Some(Action::SetState { host, state: AdminState::Maint }), Some(Phase::Unwinding))
            }
            _ => (None, None),
        }
    }

    /// A put-back stage's action ended.
    pub(super) fn advance_put_back(&mut self, h: usize, stage: Stage, result: ActionResult, now: Instant) {
        match (stage, result) {
            (Stage::PreWeight | Stage::Ready | Stage::Ramp(_) | Stage::Full, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::PreWeight, _) => {
                let weight = self.first_weight();
                self.lb_changed(h, |run| run.set_weight(weight));
                self.enter(h, Stage::Ready, now);
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
            (Stage::WaitUp, _) if self.config.ramp.is_empty() => self.enter(h, Stage::Full, now),
            (Stage::WaitUp, _) => self.enter(h, Stage::Ramp(0), now),
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
            _ => {}
        }
    }

    /// The weight a deployed host is first given: 0 when waiting for UP, else the first ramp
    /// weight, else 100%.
    pub(super) fn first_weight(&self) -> Weight {
        if self.config.load_balancer_up.is_some() {
            Weight::ZERO
        } else {
            self.config.ramp.first().map_or(Weight::FULL, |r| r.weight)
        }
    }

    /// Holds host `h` at ramp step `i` for its hold time (at once past it if zero).
    fn hold(&mut self, h: usize, i: usize, now: Instant) {
        let hold = self.config.ramp[i].hold;
        self.enter(h, Stage::Hold(i), now);
        if hold.is_zero() {
            self.after_hold(h, i, now);
        } else {
            self.set_host_timer(h, crate::time::deadline(now, hold));
        }
    }

    /// The hold at ramp step `i` is over: the next weight, or 100%.
    pub(super) fn after_hold(&mut self, h: usize, i: usize, now: Instant) {
        if i + 1 < self.config.ramp.len() {
            self.enter(h, Stage::Ramp(i + 1), now);
        } else {
            self.enter(h, Stage::Full, now);
        }
    }
}
