//! Events: every transition of a deployment, numbered without gaps, for terminals, logs,
//! databases and live streams.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::name::HostName;
use crate::ports::{OutputStream, Weight};

/// One thing that happened, with its number (1, 2, 3... without gaps) and when, counted from
/// the start of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The event's number within the deployment, from 1.
    pub seq: u64,
    /// Time since the deployment started.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The rollout began.
    DeploymentStarted {
        /// Hosts in the plan.
        hosts: usize,
        /// Batches in the plan.
        batches: usize,
        /// Hosts out of rotation at once, at most.
        concurrency: usize,
        /// Failures tolerated.
        max_failures: usize,
    },
    /// A batch began.
    BatchStarted {
        /// Its number, from 1.
        batch: usize,
        /// The hosts the batch deploys, in plan order.
        hosts: Vec<HostName>,
    },
    /// A host entered a phase.
    HostPhase {
        /// The host, by its inventory name.
        host: HostName,
        /// The phase it entered.
        phase: Phase,
    },
    /// A line of a command's output.
    HostOutput {
        /// The host the command runs on.
        host: HostName,
        /// The step (or `health`).
        step: String,
        /// stdout or stderr.
        stream: OutputStream,
        /// The line's text, without its line ending.
        line: String,
    },
    /// A host reached its end.
    HostFinished {
        /// The host that ended.
        host: HostName,
        /// How it ended.
        outcome: HostOutcome,
        /// The phase it was in when it ended (where it failed, for a failure).
        phase: Phase,
        /// Why it failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Whether it is in rotation now.
        rotation: Rotation,
        /// How long this rollout had its server out of rotation (from the take-out that put
        /// it out to the change that put it back, or to its end if it stays out), in
        /// milliseconds; absent when it never took it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out_of_rotation_ms: Option<u64>,
    },
    /// A batch ended.
    BatchFinished {
        /// Its number, from 1.
        batch: usize,
        /// Hosts that succeeded in it.
        succeeded: usize,
        /// Hosts that failed or were unreachable in it.
        failed: usize,
    },
    /// The rollout waits: before the next batch, or for room in the backend's budget.
    Waiting {
        /// What it waits for.
        reason: WaitReason,
    },
    /// A step failed for a passing reason and will run again after `delay` (its `retries`).
    StepRetry {
        /// The host it runs on.
        host: HostName,
        /// The step's name.
        step: String,
        /// The try that failed, from 1.
        attempt: u32,
        /// Tries in all, at most (the first and its retries).
        attempts: u32,
        /// Why it failed.
        reason: String,
        /// The wait before the next try.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// A host that ended unreachable is tried once more, after the last batch
    /// (`strategy.retry_unreachable`): it starts again from the connect, within the same
    /// concurrency, backend budget and `max_failures`. Its earlier
    /// [`HostFinished`](EventKind::HostFinished) no longer counts; a new one follows.
    HostRetry {
        /// The host tried again.
        host: HostName,
        /// The attempt that starts now, from 1 (so 2 for the one retry).
        attempt: u32,
        /// Why it is tried again: how its earlier attempt ended.
        reason: String,
    },
    /// Something worth a look that stops nothing.
    Warning {
        /// The host it concerns, if one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<HostName>,
        /// What happened, and what to look at.
        message: String,
    },
    /// The operator paused the deployment: no new host starts until it is resumed; hosts in
    /// flight finish, and a gate (canary confirmation or hold) keeps waiting.
    Paused {
        /// Hosts in flight when the pause came: they go on to their end.
        in_flight: usize,
    },
    /// The operator resumed a paused deployment: hosts start again as the gates allow.
    Resumed,
    /// The rollout stops starting hosts (too many failures, cancel, or no capacity left).
    /// Build it with [`EventKind::stopping`], which keeps `reason` and `cause` in step.
    Stopping {
        /// Why, as a sentence for people: the [`Display`](fmt::Display) of `cause`.
        reason: String,
        /// Why, as data. Absent in events recorded before it was added.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<StopReason>,
    },
    /// Another server instance took the deployment over: the one running it stopped renewing
    /// its lease (it died, or lost the database), and `to` holds it from now on with a new lease
    /// epoch. The events after this one are `to`'s. Only servers sharing a database (PostgreSQL)
    /// emit it.
    Handover {
        /// The instance that ran it until its lease expired (`name/pid-start`); absent when it
        /// had none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// The instance that runs it now.
        to: String,
        /// The new lease epoch: a write under an older epoch is refused.
        epoch: u64,
        /// What the new instance does: `"resume"` the rollout, or `"restore"` (put back the
        /// hosts in flight and stop).
        action: String,
    },
    /// The rollout ended.
    DeploymentFinished {
        /// How the deployment as a whole ended.
        outcome: DeploymentOutcome,
        /// How many hosts ended each way.
        totals: Totals,
    },
}

impl EventKind {
    /// The [`EventKind::Stopping`] event for `cause`, with its sentence.
    pub fn stopping(cause: StopReason) -> Self {
        EventKind::Stopping { reason: cause.to_string(), cause: Some(cause) }
    }
}

/// Why the rollout stopped starting hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// More hosts failed than `max_failures` allows.
    TooManyFailures {
        /// Hosts failed or unreachable so far.
        failed: usize,
        /// The failures the deployment tolerates.
        max_failures: usize,
    },
    /// Failed hosts left out of rotation use every concurrency slot, so starting another host
    /// would take more capacity out than the operator allowed.
    NoCapacity {
        /// Failed hosts out of rotation.
        out_of_rotation: usize,
        /// The deployment's concurrency.
        concurrency: usize,
    },
    /// Servers of the backend this rollout does not hold stayed out of rotation for
    /// [`BUDGET_WAIT_LIMIT`](crate::rollout::BUDGET_WAIT_LIMIT) while hosts waited and none of
    /// this rollout's was in flight: starting one would exceed the concurrency.
    BackendBudget {
        /// Servers of the backend out of rotation (counting this rollout's).
        out: usize,
        /// The deployment's concurrency.
        concurrency: usize,
    },
    /// The operator cancelled (or aborted) the deployment.
    Cancelled,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::TooManyFailures { failed, max_failures } => write!(
                f,
                "{failed} hosts failed, more than max_failures ({max_failures}): no new host starts; hosts in flight finish"
            ),
            StopReason::NoCapacity { out_of_rotation, concurrency } => write!(
                f,
                "{out_of_rotation} failed hosts are out of rotation, which uses all of the concurrency ({concurrency}): no host can start without taking more capacity out"
            ),
            StopReason::BackendBudget { out, concurrency } => write!(
                f,
                "{out} servers of the backend stayed out of rotation, which uses all of the concurrency ({concurrency}): no host can leave rotation without exceeding it"
            ),
            StopReason::Cancelled => f.write_str("cancelled: hosts in flight finish, no new host starts"),
        }
    }
}

/// Where a host is in its deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Not started.
    Pending,
    /// Opening the SSH session.
    Connecting,
    /// Reading the backend before taking the server out, and waiting while that would put
    /// more than `concurrency` servers of the backend out of rotation.
    CheckingBudget,
    /// Setting the server to drain on every load balancer.
    Draining,
    /// Waiting for its sessions to end.
    WaitingForDrain,
    /// Ending sessions that outlasted the drain timeout.
    ClosingSessions,
    /// Putting the server in maintenance.
    Disabling,
    /// Running a changeset step.
    Step {
        /// Its position, from 1.
        number: usize,
        /// Its name from the changeset.
        name: String,
    },
    /// Running the health check.
    HealthCheck {
        /// The attempt, from 1.
        attempt: u32,
    },
    /// Waiting for the load balancers to report the server UP (at weight 0).
    WaitingForUp,
    /// Putting the server back into rotation at a weight.
    Enabling {
        /// The weight being set (0 means health checks only).
        weight: Weight,
    },
    /// Holding at a weight before the next.
    Holding {
        /// The ramp weight held.
        weight: Weight,
    },
    /// Putting the server back as it was after the host could not be deployed.
    Restoring,
    /// Taking a failed host back out of rotation.
    Unwinding,
    /// Closing the SSH session.
    Closing,
    /// Finished.
    Done,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Pending => f.write_str("pending"),
            Phase::Connecting => f.write_str("connecting"),
            Phase::CheckingBudget => f.write_str("checking the backend's out-of-rotation budget"),
            Phase::Draining => f.write_str("draining"),
            Phase::WaitingForDrain => f.write_str("waiting for sessions to end"),
            Phase::ClosingSessions => f.write_str("closing remaining sessions"),
            Phase::Disabling => f.write_str("entering maintenance"),
            Phase::Step { number, name } => write!(f, "step {number} ({name})"),
            Phase::HealthCheck { attempt } => write!(f, "health check (attempt {attempt})"),
            Phase::WaitingForUp => f.write_str("waiting for load balancers to report UP"),
            Phase::Enabling { weight } if *weight == Weight::ZERO => {
                f.write_str("ready at weight 0% (health checks only, no traffic)")
            }
            Phase::Enabling { weight } => write!(f, "enabling at {weight}"),
            Phase::Holding { weight } => write!(f, "holding at {weight}"),
            Phase::Restoring => f.write_str("restoring into rotation"),
            Phase::Unwinding => f.write_str("taking out of rotation"),
            Phase::Closing => f.write_str("closing session"),
            Phase::Done => f.write_str("done"),
        }
    }
}

/// How a host ended. Every host ends in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOutcome {
    /// Deployed, healthy, back at full weight.
    Succeeded,
    /// Something failed; the error says what, the phase says where.
    Failed,
    /// Could not be reached; nothing was changed on it.
    Unreachable,
    /// Not started because the rollout stopped (too many failures, or no capacity left), or
    /// left exactly as found because its server was not in rotation (`servers_not_in_rotation
    /// = "skip"`, or its state changed during the deployment). The error says which.
    Skipped,
    /// Not started, or stopped, because the deployment was cancelled.
    Cancelled,
}

impl fmt::Display for HostOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostOutcome::Succeeded => "succeeded",
            HostOutcome::Failed => "failed",
            HostOutcome::Unreachable => "unreachable",
            HostOutcome::Skipped => "skipped",
            HostOutcome::Cancelled => "cancelled",
        })
    }
}

/// Whether a host takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// Ready with a weight above 0 on every load balancer (as far as Vesemir changed it).
    InRotation,
    /// Drained, in maintenance, or at weight 0.
    OutOfRotation,
    /// A load balancer call did not answer: check the host by hand.
    Unknown,
}

impl fmt::Display for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rotation::InRotation => "in rotation",
            Rotation::OutOfRotation => "OUT OF ROTATION",
            Rotation::Unknown => "rotation UNKNOWN",
        })
    }
}

/// Why the rollout waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum WaitReason {
    /// Watching the canary for a while.
    CanaryHold {
        /// The canary hold configured in the strategy.
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
    /// Waiting for someone to confirm the canary.
    CanaryConfirmation,
    /// The pause between batches.
    Pause {
        /// The strategy's `pause_between_batches`.
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
    /// Taking another host out would put more than `concurrency` servers of the backend out of
    /// rotation (counting servers out that this deployment did not take out): hosts wait, and
    /// the backend is read again shortly.
    BackendBudget {
        /// Servers of the backend out of rotation now, or held by this deployment.
        out: usize,
        /// The deployment's concurrency.
        concurrency: usize,
    },
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentOutcome {
    /// Every host succeeded.
    Succeeded,
    /// Every host was tried; some failed or were unreachable, within `max_failures`.
    CompletedWithFailures,
    /// Failures exceeded `max_failures` (or left no capacity): the rest were skipped.
    Stopped,
    /// Cancelled: hosts not started were cancelled.
    Cancelled,
}

impl fmt::Display for DeploymentOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeploymentOutcome::Succeeded => "succeeded",
            DeploymentOutcome::CompletedWithFailures => "completed with failures",
            DeploymentOutcome::Stopped => "stopped",
            DeploymentOutcome::Cancelled => "cancelled",
        })
    }
}

/// Hosts by outcome: one count per [`HostOutcome`], named like it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // each field counts the hosts of the outcome it is named after
pub struct Totals {
    pub succeeded: usize,
    pub failed: usize,
    pub unreachable: usize,
    pub skipped: usize,
    pub cancelled: usize,
}

impl Totals {
    /// Adds one host's outcome.
    pub fn count(&mut self, outcome: HostOutcome) {
        match outcome {
            HostOutcome::Succeeded => self.succeeded += 1,
            HostOutcome::Failed => self.failed += 1,
            HostOutcome::Unreachable => self.unreachable += 1,
            HostOutcome::Skipped => self.skipped += 1,
            HostOutcome::Cancelled => self.cancelled += 1,
        }
    }

    /// Takes back one host's outcome (a host tried again: its earlier end no longer counts).
    pub fn uncount(&mut self, outcome: HostOutcome) {
        let n = match outcome {
            HostOutcome::Succeeded => &mut self.succeeded,
            HostOutcome::Failed => &mut self.failed,
            HostOutcome::Unreachable => &mut self.unreachable,
            HostOutcome::Skipped => &mut self.skipped,
            HostOutcome::Cancelled => &mut self.cancelled,
        };
        *n = n.saturating_sub(1);
    }

    /// Every host counted.
    pub fn total(&self) -> usize {
        self.succeeded + self.failed + self.unreachable + self.skipped + self.cancelled
    }
}

/// Receives events as they happen. Called from the driver's task: an implementation that does
/// slow IO should hand the event to its own task (a channel) rather than block.
pub trait EventSink: Send + Sync {
    /// One event.
    fn emit(&self, event: &Event);
}

impl<T: EventSink + ?Sized> EventSink for std::sync::Arc<T> {
    fn emit(&self, event: &Event) {
        (**self).emit(event);
    }
}

impl<T: EventSink + ?Sized> EventSink for &T {
    fn emit(&self, event: &Event) {
        (**self).emit(event);
    }
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}

/// Keeps every event in memory (tests, small tools).
#[derive(Debug, Default)]
pub struct MemorySink {
    events: std::sync::Mutex<Vec<Event>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl EventSink for MemorySink {
    fn emit(&self, event: &Event) {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_keeps_its_sentence_and_adds_its_cause() {
        let event = Event {
            seq: 7,
            elapsed: Duration::from_secs(1),
            kind: EventKind::stopping(StopReason::TooManyFailures { failed: 2, max_failures: 1 }),
        };
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json["type"], "stopping");
        assert_eq!(
            json["reason"],
            "2 hosts failed, more than max_failures (1): no new host starts; hosts in flight finish"
        );
        assert_eq!(
            json["cause"],
            serde_json::json!({"kind": "too_many_failures", "failed": 2, "max_failures": 1})
        );
        let back: Event = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, event);
    }

    #[test]
    fn stopping_events_recorded_before_the_cause_still_read() {
        let old = r#"{"seq":3,"elapsed":"2s","type":"stopping","reason":"cancelled: hosts in flight finish, no new host starts"}"#;
        let event: Event = serde_json::from_str(old).expect("an old event reads");
        assert_eq!(
            event.kind,
            EventKind::Stopping { reason: StopReason::Cancelled.to_string(), cause: None }
        );
    }
}
