//! The health gate's HTTP check, made by the orchestrator itself ([`Action::ProbeHealth`],
//! answered through the [`HealthProbe`](crate::ports::HealthProbe) port): after the health
//! command (if any), polled every `interval` until it passes or its `timeout` is spent. Its
//! phase is told once (`health check (attempt 1)`), not per request: at a 20 ms interval a
//! phase event per attempt would be noise; the failure names the attempts and the last answer.

use std::time::{Duration, Instant};

use super::config::HealthRetry;
use super::host::Stage;
use super::{Action, ActionResult, ErrorKind, HostId, Rollout};
use crate::event::{HostOutcome, Phase};

impl Rollout {
    /// After the health command passed (or when there is none): the HTTP check if there is one,
    /// else the put-back.
    pub(super) fn after_health_command(&mut self, h: usize, now: Instant) {
        if self.config.health_http.is_some() {
            let run = &mut self.hosts[h];
            run.health_deadline = None;
            run.last_health = None;
            self.enter(h, Stage::Probe, now);
        } else {
            self.put_back(h, now);
        }
    }

    /// The action of one HTTP check, bounded by the time left of the check's `timeout` (and
    /// at least 1 second, so a short remainder still gets a whole answer).
    pub(super) fn probe_action(&mut self, h: usize, now: Instant) -> (Option<Action>, Option<Phase>) {
        let timeout = self.config.health_http.unwrap_or_default().timeout;
        let run = &mut self.hosts[h];
        if run.health_deadline.is_none() {
            run.health_deadline = Some(crate::time::deadline(now, timeout));
            run.health_attempt = 1;
        }
        let remaining = run.health_deadline.map_or(timeout, |d| d.saturating_duration_since(now));
        let attempt = run.health_attempt;
        let action =
            Action::ProbeHealth { host: HostId(h), attempt, timeout: remaining.max(Duration::from_secs(1)) };
        (Some(action), Some(Phase::HealthCheck { attempt: 1 }))
    }

    /// One HTTP check ended: passed (`Done`), or not (`Failed` with the reason; retried after
    /// `interval` while time is left, except a `Rejected` check, which cannot be made at all).
    pub(super) fn advance_probe(&mut self, h: usize, result: ActionResult, now: Instant) {
        let last = match result {
            ActionResult::Done => {
                self.put_back(h, now);
                return;
            }
            ActionResult::Failed(e) if e.kind == ErrorKind::Rejected => {
                // The check cannot be made at all (an invalid URL): no retry mends it.
                self.fail(h, HostOutcome::Failed, format!("HTTP health check: {}", e.message), now);
                return;
            }
            ActionResult::Failed(e) => e.message,
            ActionResult::Exited(status) => status.to_string(),
            ActionResult::Backend(_) => "no answer".to_owned(),
        };
        let HealthRetry { timeout, interval } = self.config.health_http.unwrap_or_default();
        let deadline = self.hosts[h].health_deadline.unwrap_or(now);
        let retry_at = crate::time::deadline(now, interval);
        if retry_at < deadline {
            self.hosts[h].last_health = Some(last);
            self.enter(h, Stage::ProbeWait, now);
            self.set_host_timer(h, retry_at);
        } else {
            let attempts = self.hosts[h].health_attempt;
            let message = format!(
                "HTTP health check did not pass within {} ({attempts} attempts; last: {last})",
                humantime::format_duration(timeout)
            );
            self.fail(h, HostOutcome::Failed, message, now);
        }
    }
}
