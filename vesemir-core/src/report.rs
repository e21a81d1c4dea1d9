//! The deployment report: how every host ended, where, why, and whether it takes traffic.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{DeploymentOutcome, HostOutcome, Phase, Rotation, Totals};
use crate::name::{HostName, ServerName};
use crate::ports::OutputLine;

/// How a deployment went, host by host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentReport {
    /// How it ended (`None` while it runs).
    pub outcome: Option<DeploymentOutcome>,
    /// Hosts by outcome.
    pub totals: Totals,
    /// Every host of the plan, in plan order.
    pub hosts: Vec<HostReport>,
    /// Wall time from start to end.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// The most hosts out of rotation at one moment.
    pub max_out_of_rotation: usize,
}

/// How one host went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host, by its inventory name.
    pub name: HostName,
    /// The address it was reached at.
    pub address: String,
    /// Its server in the backend.
    pub server: ServerName,
    /// How it ended (`None` while it runs).
    pub outcome: Option<HostOutcome>,
    /// Where it is, or where it failed.
    pub phase: Phase,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Whether it takes traffic.
    pub rotation: Rotation,
    /// When it started, from the deployment's start.
    #[serde(with = "humantime_serde")]
    pub started: Option<Duration>,
    /// When it ended, from the deployment's start.
    #[serde(with = "humantime_serde")]
    pub finished: Option<Duration>,
    /// The last lines of its last command's output.
    pub last_output: Vec<OutputLine>,
    /// How long this rollout had its server out of rotation (to its end, if it stays out);
    /// `None` if it never took it out.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub out_of_rotation: Option<Duration>,
    /// How many times it was started: 1, or 2 when it ended unreachable and was tried again
    /// (`strategy.retry_unreachable`; then the other fields tell of the second attempt). Absent
    /// from JSON when 1.
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempts: u32,
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(attempts: &u32) -> bool {
    *attempts <= 1
}

impl DeploymentReport {
    /// The hosts' times out of rotation at the 50th and 99th percentile (nearest rank), over
    /// the hosts this rollout took out; `None` when it took none out.
    pub fn out_of_rotation_percentiles(&self) -> Option<(Duration, Duration)> {
        let mut times: Vec<Duration> = self.hosts.iter().filter_map(|h| h.out_of_rotation).collect();
        if times.is_empty() {
            return None;
        }
        times.sort();
        let rank = |p: usize| times[(times.len() * p).div_ceil(100).clamp(1, times.len()) - 1];
        Some((rank(50), rank(99)))
    }

    /// Hosts that are not in rotation (or whose rotation is unknown) now.
    pub fn out_of_rotation(&self) -> impl Iterator<Item = &HostReport> {
        self.hosts.iter().filter(|h| h.rotation != Rotation::InRotation)
    }

    /// Whether every host succeeded.
    pub fn succeeded(&self) -> bool {
        self.outcome == Some(DeploymentOutcome::Succeeded)
    }
}
