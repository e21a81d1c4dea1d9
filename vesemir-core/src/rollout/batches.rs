//! Batches and gates: opening a batch, starting hosts while concurrency allows, closing a
//! batch, the canary gate and the pause between batches, stopping (failures, no capacity,
//! cancel) and finishing the deployment.
//!
//! The window is the plan's: with `window = "sliding"` the plan has the canary batch (if any)
//! and then one batch of every other host, so [`Rollout::pump`] starts a host the moment a slot
//! frees (a host in flight, or ended out of rotation, holds one); with `window = "batches"`
//! each batch of `concurrency` hosts waits for the one before. Canary gate, pause,
//! `max_failures`, cancel and the backend budget (`budget.rs`) act the same on both.

use std::cmp::Reverse;
use std::time::Instant;

use super::host::{Failure, Stage};
use super::Rollout;
use crate::event::{DeploymentOutcome, EventKind, HostOutcome, Phase, StopReason, WaitReason};
use crate::request::CanaryGate;

/// Whether new hosts may start, or the rollout waits between batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    Running,
    /// Waiting until this instant (canary hold, pause).
    Hold(Instant),
    /// Waiting for the operator to confirm the canary.
    Confirm,
}

/// Whose timer fired: a host's (health retry, ramp hold), the gate's, or the backend budget's
/// re-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    Host(usize),
    Gate,
    Budget,
}

impl Rollout {
    /// Announces the current batch and makes its hosts the next to start.
    pub(super) fn open_batch(&mut self, now: Instant) {
        let Some(range) = self.plan.batches.get(self.batch).cloned() else { return };
        self.next_host = range.start;
        self.batch_open = range.len();
        let hosts = self.plan.hosts[range].iter().map(|h| h.host.name.clone()).collect();
        self.emit(now, EventKind::BatchStarted { batch: self.batch + 1, hosts });
    }

    /// Starts hosts while there is room, closes finished batches, stops and finishes.
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            if self.outcome.is_some() || self.gate != Gate::Running {
                return;
            }
            if self.stop.is_some() {
                if self.budget_stopped() {
                    self.end_admitting(now);
                }
                self.end_unstarted(now);
                if self.in_flight == 0 {
                    self.finish(now);
                }
                return;
            }
            let Some(range) = self.plan.batches.get(self.batch).cloned() else {
                // After the last batch: the retry round, if any, then the end.
                if !self.pump_retries(now) {
                    self.finish(now);
                }
                return;
            };
            // Paused: no host starts; hosts in flight finish and the batch waits for the resume.
            while !self.paused
                && self.next_host < range.end
                && self.in_flight + self.finished_out < self.plan.concurrency
            {
                let h = self.next_host;
                self.next_host += 1;
                self.start_host(h, now);
            }
            if !self.paused && self.next_host < range.end && self.in_flight == 0 {
                let reason = StopReason::NoCapacity {
                    out_of_rotation: self.finished_out,
                    concurrency: self.plan.concurrency,
                };
                self.stop = Some(reason);
                self.emit(now, EventKind::stopping(reason));
                continue;
            }
            if self.batch_open > 0 || !self.close_batch(now) {
                return;
            }
        }
    }

    /// The current batch is over: reports it and moves to the next, through its gate. Whether
    /// the rollout can go on starting hosts at once.
    fn close_batch(&mut self, now: Instant) -> bool {
        let (succeeded, failed) =
            self.plan.batches[self.batch].clone().fold((0, 0), |(s, f), h| match self.hosts[h].outcome {
                Some(HostOutcome::Succeeded) => (s + 1, f),
                Some(HostOutcome::Failed | HostOutcome::Unreachable) => (s, f + 1),
                _ => (s, f),
            });
        self.emit(now, EventKind::BatchFinished { batch: self.batch + 1, succeeded, failed });
        self.batch += 1;
        if self.batch >= self.plan.batches.len() {
            // `pump` goes on to the retry round (if any) and the end.
            return true;
        }
        match self.wait_before_batch() {
            None => self.open_batch(now),
            Some(reason) => {
                self.gate = match &reason {
                    WaitReason::CanaryConfirmation => Gate::Confirm,
                    WaitReason::CanaryHold { duration } | WaitReason::Pause { duration } => {
                        let at = crate::time::deadline(now, *duration);
                        self.timers.push(Reverse((at, TimerKey::Gate)));
                        Gate::Hold(at)
                    }
                    // Not a reason between batches: hosts wait for the budget in `budget.rs`.
                    WaitReason::BackendBudget { .. } => Gate::Running,
                };
                self.emit(now, EventKind::Waiting { reason });
            }
        }
        true
    }

    /// What the next batch waits for: the canary gate after the canary batch, else the pause.
    fn wait_before_batch(&self) -> Option<WaitReason> {
        match (self.batch == 1 && self.plan.canary, self.config.canary_gate) {
            (true, Some(CanaryGate::Confirm)) => Some(WaitReason::CanaryConfirmation),
            (true, Some(CanaryGate::Hold(d))) if !d.is_zero() => Some(WaitReason::CanaryHold { duration: d }),
            _ if !self.config.pause_between_batches.is_zero() => {
                Some(WaitReason::Pause { duration: self.config.pause_between_batches })
            }
            _ => None,
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

    pub(super) fn start_host(&mut self, h: usize, now: Instant) {
        self.in_flight += 1;
        self.hosts[h].started = Some(self.elapsed(now));
        self.hosts[h].attempts += 1;
        self.enter(h, Stage::Connect, now);
    }

    /// Every host has ended: the deployment's outcome.
    fn finish(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        let outcome = match self.stop {
            Some(StopReason::Cancelled) => DeploymentOutcome::Cancelled,
            Some(
                StopReason::TooManyFailures { .. }
                | StopReason::NoCapacity { .. }
                | StopReason::BackendBudget { .. },
            ) => DeploymentOutcome::Stopped,
            None if self.failures > 0 => DeploymentOutcome::CompletedWithFailures,
            None => DeploymentOutcome::Succeeded,
        };
        self.outcome = Some(outcome);
        self.finished_at = Some(self.elapsed(now));
        let totals = self.totals;
        self.emit(now, EventKind::DeploymentFinished { outcome, totals });
    }
}
