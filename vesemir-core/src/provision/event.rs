//! What a provisioning reports: numbered, typed events (serde, like the rollout's) and its
//! outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::input::Step;
use super::names::{Fqdn, RunListEntry, SshHostKey, VmName};
use super::placement::Flavor;
use super::reservations::Placement;
use crate::name::EnvironmentName;
use crate::ports::OutputStream;

/// One thing that happened, numbered from 1 without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionEvent {
    /// The event's number, from 1.
    pub seq: u64,
    /// Time since the provisioning started.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// What happened.
    #[serde(flatten)]
    pub kind: ProvisionEventKind,
}

/// Whether a machine builds a VM or takes one down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Build a new VM.
    Create,
    /// Undo every step of a VM that was built.
    Destroy,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProvisionEventKind {
    /// The machine started.
    Started {
        /// Create or destroy.
        mode: Mode,
        /// The VM.
        vm: VmName,
        /// Its DNS name.
        fqdn: Fqdn,
        /// Its flavor.
        flavor: Flavor,
    },
    /// A step started.
    StepStarted {
        /// Which.
        step: Step,
    },
    /// The VM got its hypervisor and address.
    Placed {
        /// Where it goes.
        placement: Placement,
    },
    /// SSH answered; its host key is the one trusted from now on.
    HostKeyRecorded {
        /// The key.
        key: SshHostKey,
        /// Whether the guest's console showed the same key.
        confirmed_by_console: bool,
    },
    /// A line the step's command printed (the bootstrap's output, as it comes).
    Output {
        /// The step whose command printed it.
        step: Step,
        /// Standard output or error.
        stream: OutputStream,
        /// The line, without its ending.
        text: String,
    },
    /// A step succeeded.
    StepDone {
        /// Which.
        step: Step,
    },
    /// A step failed; the steps done are undone next.
    StepFailed {
        /// Which.
        step: Step,
        /// Why.
        reason: String,
        /// Whether it may have changed something (then it is undone too).
        partial: bool,
    },
    /// The operator cancelled: the step in flight ends, then every step done is undone.
    CancelRequested,
    /// An undo started.
    UndoStarted {
        /// The step it takes back.
        step: Step,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// An undo succeeded.
    UndoDone {
        /// The step taken back.
        step: Step,
    },
    /// An undo failed.
    UndoFailed {
        /// The step it should have taken back.
        step: Step,
        /// Why.
        reason: String,
        /// Whether it is tried again; if not, the step is left behind (in the outcome).
        will_retry: bool,
    },
    /// The machine ended. Always the last event.
    Finished {
        /// How.
        outcome: ProvisionOutcome,
    },
}

/// A VM that was built: everything needed to reach it and to destroy it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Its name.
    pub vm: VmName,
    /// Its DNS name.
    pub fqdn: Fqdn,
    /// Its flavor.
    pub flavor: Flavor,
    /// Its hypervisor and address.
    pub placement: Placement,
    /// Its SSH host key.
    pub host_key: SshHostKey,
    /// Its Chef environment.
    pub environment: EnvironmentName,
    /// Its Chef run list.
    pub run_list: Vec<RunListEntry>,
}

/// How a provisioning ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ProvisionOutcome {
    /// Every step passed: the VM is ready.
    Ready {
        /// The VM.
        record: VmRecord,
    },
    /// A step failed; the steps done were undone (except `left_behind`).
    Failed {
        /// The step that failed.
        step: Step,
        /// Why.
        reason: String,
        /// Steps whose undo failed every attempt: their parts are still there.
        left_behind: Vec<Step>,
    },
    /// Cancelled; the steps done were undone (except `left_behind`).
    Cancelled {
        /// Steps whose undo failed every attempt.
        left_behind: Vec<Step>,
    },
    /// A destroy ended; every part is gone except `left_behind`.
    Destroyed {
        /// Steps whose undo failed every attempt.
        left_behind: Vec<Step>,
    },
}

impl ProvisionOutcome {
    /// The steps whose parts are still there.
    pub fn left_behind(&self) -> &[Step] {
        match self {
            ProvisionOutcome::Ready { .. } => &[],
            ProvisionOutcome::Failed { left_behind, .. }
            | ProvisionOutcome::Cancelled { left_behind }
            | ProvisionOutcome::Destroyed { left_behind } => left_behind,
        }
    }
}
