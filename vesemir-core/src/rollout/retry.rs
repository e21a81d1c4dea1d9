//! The retry round (`strategy.retry_unreachable`): after the last batch, each host that ended
//! unreachable (its SSH connect failed, so it was never taken out) is started once more from
//! its connect. The round obeys the rules every other host does: it starts only if the rollout
//! was neither stopped nor cancelled, a host starts only while fewer than `concurrency` hosts
//! are in flight or ended out of rotation (a host its first attempt left out of rotation keeps
//! its slot until it starts again), it goes through the backend's budget at admission, and a
//! pause holds it. A host is tried again at most once. A retried host's first end is taken back
//! from the totals and the failure count ([`EventKind::HostRetry`]), and its second end counts
//! instead. When the window is full of failed hosts out of rotation and none is in flight, the
//! hosts left are not retried (a warning says so) and stay unreachable.

use std::collections::VecDeque;
use std::time::Instant;

use super::host::Stage;
use super::Rollout;
use crate::event::{EventKind, HostOutcome, Phase, Rotation};

/// Where the retry round is.
#[derive(Debug, Default)]
pub(super) enum RetryRound {
    /// The batches are not over yet.
    #[default]
    NotYet,
    /// The hosts still to try again, in plan order.
    Running(VecDeque<usize>),
    /// Nothing more to try.
    Over,
}

impl Rollout {
    /// After the last batch: starts the retry round's hosts while there is room. Whether the
    /// rollout must wait (hosts to retry or in flight) rather than finish.
    pub(super) fn pump_retries(&mut self, now: Instant) -> bool {
        if matches!(self.retry, RetryRound::NotYet) {
            self.retry = if self.config.retry_unreachable && self.stop.is_none() {
                let hosts = (0..self.hosts.len())
                    .filter(|&h| {
                        self.hosts[h].outcome == Some(HostOutcome::Unreachable) && self.hosts[h].attempts == 1
                    })
                    .collect();
                RetryRound::Running(hosts)
            } else {
                RetryRound::Over
            };
        }
        if let RetryRound::Running(queue) = &mut self.retry {
            if self.stop.is_some() {
                // Stopped or cancelled during the round: the hosts left stay unreachable.
                queue.clear();
            }
            while !self.paused && self.in_flight + self.finished_out < self.plan.concurrency {
                let RetryRound::Running(queue) = &mut self.retry else { break };
                let Some(h) = queue.pop_front() else { break };
                self.retry_host(h, now);
            }
            let RetryRound::Running(queue) = &mut self.retry else { return self.in_flight > 0 };
            if !self.paused && !queue.is_empty() && self.in_flight == 0 {
                let names: Vec<String> = queue.iter().map(|&h| self.hosts[h].name.to_string()).collect();
                queue.clear();
                let message = format!(
                    "not tried again (strategy.retry_unreachable): {}; {} failed hosts are out of rotation, which uses all of the concurrency ({})",
                    names.join(", "),
                    self.finished_out,
                    self.plan.concurrency
                );
                self.emit(now, EventKind::Warning { host: None, message });
            }
            let RetryRound::Running(queue) = &self.retry else { return self.in_flight > 0 };
            if queue.is_empty() && self.in_flight == 0 {
                self.retry = RetryRound::Over;
                return false;
            }
            return true;
        }
        self.in_flight > 0
    }

    /// Starts host `h` again: takes its unreachable end back and connects once more.
    fn retry_host(&mut self, h: usize, now: Instant) {
        let run = &mut self.hosts[h];
        let reason = run.failure.take().map(|f| f.error).unwrap_or_default();
        let counted_out = run.rotation() != Rotation::InRotation;
        if let Some(outcome) = run.outcome.take() {
            self.totals.uncount(outcome);
            if matches!(outcome, HostOutcome::Failed | HostOutcome::Unreachable) {
                self.failures = self.failures.saturating_sub(1);
            }
        }
        if counted_out {
            self.finished_out = self.finished_out.saturating_sub(1);
        }
        let run = &mut self.hosts[h];
        run.stage = Stage::Pending;
        run.phase = Phase::Pending;
        run.finished = None;
        run.tail.clear();
        run.step_attempt = 0;
        run.health_deadline = None;
        run.health_attempt = 0;
        run.last_health = None;
        run.timer = None;
        let (host, attempt) = (run.name.clone(), run.attempts + 1);
        self.emit(now, EventKind::HostRetry { host, attempt, reason });
        self.start_host(h, now);
    }
}
