//! The last leg: putting a deployed host back as it was found. First weight (0 when the load
//! balancers must report UP first), ready, wait for UP, then the ramp weights with their holds,
//! then its original state. Also the two ways back for a failed host: restore (put back as found,
//! when the changeset never started) and unwind (take out again, when it had).
//!
//! Weights are the server's own: a ramp step is a percentage of the server's original effective
//! weight on each box (rounded down, and at least 1 where the original is above 0, so a step
//! never takes a serving server to no traffic), and the end is [`Action::Restore`] to the admin
//! state and absolute weight it had on each box. A host that was not in rotation when found
//! (`servers_not_in_rotation = "include"`) gets no ramp and no traffic: after its health gate
//! (and, if asked, a wait for UP at weight 0) it goes straight back to its original state.
//! A host whose state was not read (an empty original) is put back at percentages of its
//! configured weight and ready, as before the state was read.

use std::time::Instant;

use super::host::Stage;
use super::{Action, ActionResult, HostId, Rollout};
use crate::event::{HostOutcome, Phase};
use crate::ports::{AdminState, InstanceState, Weight};

/// The absolute weight a ramp step of `percent` gives a server whose original weight is
/// `original`: rounded down, but at least 1 when `original` is above 0.
pub(super) fn ramp_weight(original: u32, percent: Weight) -> u32 {
    if original == 0 {
        return 0;
    }
    (original.saturating_mul(u32::from(percent.get())) / 100).max(1)
}

impl Rollout {
    /// The action and phase of a put-back stage.
    pub(super) fn put_back_action(&self, host: HostId, stage: Stage) -> (Option<Action>, Option<Phase>) {
        let h = host.0;
        let set_weight =
            |weight| (Some(Action::SetWeight { host, weight }), Some(Phase::Enabling { weight }));
        let restore = |to, weight| (Some(Action::Restore { host, to }), Some(Phase::Enabling { weight }));
        let known = !self.plan.hosts[h].original.is_empty();
        match stage {
            Stage::PreWeight => {
                let weight = self.first_weight();
                if known && weight != Weight::ZERO {
                    restore(self.at_weight(h, AdminState::Maint, weight), weight)
                } else {
                    set_weight(weight)
                }
            }
            Stage::Ready => (Some(Action::SetState { host, state: AdminState::Ready }), None),
            Stage::WaitUp => {
                let timeout = self.config.load_balancer_up.unwrap_or_default();
                (Some(Action::WaitUp { host, timeout }), Some(Phase::WaitingForUp))
            }
            Stage::Ramp(i) if known => {
                let weight = self.config.ramp[i].weight;
                restore(self.at_weight(h, AdminState::Ready, weight), weight)
            }
            Stage::Ramp(i) => set_weight(self.config.ramp[i].weight),
            Stage::Hold(i) => (None, Some(Phase::Holding { weight: self.config.ramp[i].weight })),
            Stage::Full if known && self.plan.hosts[h].was_in_rotation() => {
                restore(self.plan.hosts[h].original.clone(), Weight::FULL)
            }
            Stage::Full | Stage::Restore if known => (
                Some(Action::Restore { host, to: self.plan.hosts[h].original.clone() }),
                Some(Phase::Restoring),
            ),
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

    /// Host `h`'s original state per box with `admin` and `percent` of its original weight.
    fn at_weight(&self, h: usize, admin: AdminState, percent: Weight) -> Vec<InstanceState> {
        let mut to = self.plan.hosts[h].original.clone();
        for state in &mut to {
            state.admin = admin;
            state.weight = ramp_weight(state.weight, percent);
        }
        to
    }

    /// The changeset and health gate passed: the way back. A host found in rotation goes
    /// through the first weight, ready and the ramp; one found out of rotation goes back to its
    /// original state (through a wait for UP at weight 0 if asked).
    pub(super) fn put_back(&mut self, h: usize, now: Instant) {
        if self.plan.hosts[h].was_in_rotation() || self.config.load_balancer_up.is_some() {
            self.enter(h, Stage::PreWeight, now);
        } else {
            self.enter(h, Stage::Full, now);
        }
    }

    /// A put-back stage's action ended.
    pub(super) fn advance_put_back(&mut self, h: usize, stage: Stage, result: ActionResult, now: Instant) {
        let known = !self.plan.hosts[h].original.is_empty();
        let ramps = !self.config.ramp.is_empty() && self.plan.hosts[h].was_in_rotation();
        match (stage, result) {
            (Stage::PreWeight | Stage::Ready | Stage::Ramp(_) | Stage::Full, ActionResult::Failed(e)) => {
                self.lb_failed(h, &e, now);
                self.fail(h, HostOutcome::Failed, e.message, now);
            }
            (Stage::PreWeight, _) => {
                let weight = self.first_weight();
                self.lb_changed(h, now, |run| run.set_weight(weight));
                self.enter(h, Stage::Ready, now);
            }
            (Stage::Ready, _) => {
                self.lb_changed(h, now, |run| run.set_admin(AdminState::Ready));
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
                self.hosts[h].checks_down = false;
                if ramps {
                    self.enter(h, Stage::Ramp(0), now);
                } else {
                    self.enter(h, Stage::Full, now);
                }
            }
            (Stage::Ramp(i), _) => {
                let weight = self.config.ramp[i].weight;
                self.lb_changed(h, now, |run| run.set_weight(weight));
                self.hold(h, i, now);
            }
            (Stage::Full, _) if known => {
                let original = self.plan.hosts[h].original.clone();
                self.lb_changed(h, now, |run| run.set_states(&original));
                self.enter(h, Stage::Close, now);
            }
            (Stage::Full, _) => {
                self.lb_changed(h, now, |run| run.set_weight(Weight::FULL));
                self.enter(h, Stage::Close, now);
            }
            (Stage::Restore, result) if known => {
                let original = self.plan.hosts[h].original.clone();
                let change = move |run: &mut super::host::HostRun| run.set_states(&original);
                self.cleaned_up(h, result, change, "putting it back as found failed too", now);
            }
            (Stage::Restore, result) => {
                let change = |run: &mut super::host::HostRun| run.set_admin(AdminState::Ready);
                self.cleaned_up(h, result, change, "putting it back failed too", now);
            }
            (Stage::Unwind, result) => {
                let change = |run: &mut super::host::HostRun| run.set_admin(AdminState::Maint);
                self.cleaned_up(h, result, change, "taking it out of rotation failed too", now);
            }
            _ => {}
        }
    }

    /// The weight a deployed host is first given: 0 when waiting for UP, else the first ramp
    /// weight, else 100% (of its original weight).
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

    /// The hold at ramp step `i` is over: the next weight, or the original state.
    pub(super) fn after_hold(&mut self, h: usize, i: usize, now: Instant) {
        if i + 1 < self.config.ramp.len() {
            self.enter(h, Stage::Ramp(i + 1), now);
        } else {
            self.enter(h, Stage::Full, now);
        }
    }
}
