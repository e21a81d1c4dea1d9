//! [`RolloutConfig`]: the parts of a request that steer the rollout, as plain data.

use std::time::Duration;

use crate::request::{CanaryGate, DeploymentRequest, DrainTimeoutPolicy, RampStep, StepRetries};

/// The parts of a request the rollout needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// The changeset's steps, in order.
    pub steps: Vec<StepLimit>,
    /// How long the health command is retried, if there is one.
    pub health_command: Option<HealthRetry>,
    /// How long the orchestrator's HTTP health check is retried, if there is one (after the
    /// command).
    pub health_http: Option<HealthRetry>,
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
    /// Try the hosts that ended unreachable once more after the last batch
    /// (`strategy.retry_unreachable`).
    pub retry_unreachable: bool,
    /// Keep the load balancers' health checks running while a host is out (issue 15, item
    /// 3): a server found in rotation stays drained (no maintenance) during its changeset,
    /// is marked DOWN ([`Action::MarkDown`](super::Action::MarkDown)) right after its last
    /// step, and only checks made after that bring it back UP; the wait for UP (when
    /// `load_balancer_up` asks for it) then proves a check passed after the changeset, and
    /// with short `downinter`/`fastinter` on the servers it has passed by the time the host is
    /// healthy. Only for backends without persistence (cookies, stick tables, `use-server`,
    /// `force-persist`): a drained server still gets persistent requests. Set by the front
    /// end's operator (the driver's `DriverConfig::checks_while_out`), never by a request.
    pub checks_while_out: bool,
}

/// A changeset step as the rollout sees it: a name for events and a bound for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLimit {
    /// The step's name in phases and output lines.
    pub name: String,
    /// How long one run of it may take.
    pub timeout: Duration,
    /// Whether a transient failure is tried again, and how.
    pub retries: Option<StepRetries>,
    /// Run while the host is still in rotation, before its admission and drain (the stage
    /// steps are the first of [`RolloutConfig::steps`]).
    pub stage: bool,
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
    /// How many steps run while the host is in rotation, before the drain: the first ones,
    /// marked `stage`.
    pub fn staged(&self) -> usize {
        self.steps.iter().take_while(|s| s.stage).count()
    }

    /// Whether the checks keep running while out: asked for, and with a wait for UP to prove
    /// them (without one, maintenance is kept: nothing would read the checks).
    pub fn checks_while_out(&self) -> bool {
        self.checks_while_out && self.load_balancer_up.is_some()
    }

    /// The rollout configuration of a request.
    pub fn from_request(request: &DeploymentRequest) -> Self {
        let changeset = &request.changeset;
        Self {
            steps: changeset
                .steps
                .iter()
                .map(|s| StepLimit {
                    name: s.name.clone(),
                    timeout: s.timeout,
                    retries: s.retries.clone(),
                    stage: s.stage,
                })
                .collect(),
            health_command: (changeset.health.command.as_ref())
                .map(|h| HealthRetry { timeout: h.timeout, interval: h.interval }),
            health_http: (changeset.health.http.as_ref())
                .map(|h| HealthRetry { timeout: h.timeout, interval: h.interval }),
            load_balancer_up: changeset.health.load_balancer_up,
            drain_timeout: request.load_balancer.drain_timeout,
            on_drain_timeout: request.load_balancer.on_drain_timeout,
            ramp: request.load_balancer.ramp.clone(),
            pause_between_batches: request.strategy.pause_between_batches,
            canary_gate: request.strategy.canary.map(|c| c.gate),
            retry_unreachable: request.strategy.retry_unreachable,
            checks_while_out: false,
        }
    }
}
