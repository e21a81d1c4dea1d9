//! The plan: which hosts, in which batches, behind which servers. Pure: built from the hosts the
//! inventory found and the servers the load balancer resolved.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::name::{HostName, ServerName};
use crate::ports::{InstanceState, ServerState};
use crate::request::{Canary, Strategy, Window};

/// A host and its server in the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedHost {
    /// The host as the inventory found it.
    pub host: Host,
    /// Its server in the load balancer backend.
    pub server: ServerName,
    /// Its server's state on every load balancer instance when the deployment was prepared, in
    /// the backend's order: what the server is returned to (admin state and absolute weight,
    /// box by box), and what the ramp's percentages are of. Empty when no state was read: the
    /// server is then taken as in rotation at its configured weight, and put back with
    /// percentage weights and `ready`.
    #[serde(default)]
    pub original: Vec<InstanceState>,
    /// Left exactly as found and reported skipped: its server was not in rotation and the
    /// request said `servers_not_in_rotation = "skip"`.
    #[serde(default)]
    pub skip: bool,
}

impl PlannedHost {
    /// A host to deploy whose server's state was not read (taken as in rotation at 100%).
    pub fn new(host: Host, server: ServerName) -> Self {
        Self { host, server, original: Vec::new(), skip: false }
    }

    /// Whether its server was in rotation, the same way on every box, when the deployment was
    /// prepared (see [`ServerState::in_rotation`] and [`ServerState::agrees`]); true when no
    /// state was read.
    pub fn was_in_rotation(&self) -> bool {
        self.original.is_empty() || self.original_state().is_fully_in_rotation()
    }

    /// Its server's original state as a [`ServerState`].
    pub fn original_state(&self) -> ServerState {
        ServerState { name: self.server.clone(), instances: self.original.clone() }
    }
}

/// The hosts of a deployment, in order, cut into batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Every host, sorted by name: those to deploy first, then the skipped ones.
    pub hosts: Vec<PlannedHost>,
    /// The batches, as ranges of `hosts`, in order. The canary batch, if any, is first.
    pub batches: Vec<Range<usize>>,
    /// At most this many hosts out of rotation at once.
    pub concurrency: usize,
    /// Failures tolerated over the whole fleet.
    pub max_failures: usize,
    /// Whether the first batch is a canary.
    pub canary: bool,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No hosts to deploy to.
    #[error("no hosts to deploy to")]
    NoHosts,
    /// The same host twice.
    #[error("host {host} appears twice: every host must be listed once")]
    DuplicateHost {
        /// The host listed more than once.
        host: HostName,
    },
    /// Every host is skipped: nothing to deploy.
    #[error("every host is skipped (its server is not in rotation and servers_not_in_rotation = \"skip\"): nothing to deploy")]
    NothingToDeploy,
    /// Two hosts with the same address.
    #[error("hosts {first} and {second} both have address {address}: each host needs its own address (is one listed twice under two names?)")]
    SharedAddress {
        /// The first host, by name.
        first: HostName,
        /// The other host.
        second: HostName,
        /// The address both have.
        address: String,
    },
    /// Two hosts behind the same server.
    #[error("hosts {first} and {second} both map to server {server}: each host needs its own server")]
    SharedServer {
        /// The first host, by name.
        first: HostName,
        /// The other host.
        second: HostName,
        /// The server both resolved to.
        server: ServerName,
    },
}

impl Plan {
    /// Sorts the hosts by name, those to deploy first and skipped ones after them, and cuts the
    /// hosts to deploy into batches: the canary batch first (if asked for), then batches of
    /// `concurrency` (a percentage is of the hosts to deploy) for [`Window::Batches`], or one
    /// batch of every other host for [`Window::Sliding`] (the rollout starts its hosts as
    /// slots free). Skipped hosts are in no batch.
    pub fn new(mut hosts: Vec<PlannedHost>, strategy: &Strategy) -> Result<Self, PlanError> {
        if hosts.is_empty() {
            return Err(PlanError::NoHosts);
        }
        hosts.sort_by(|a, b| a.host.name.cmp(&b.host.name));
        let mut by_address: Vec<&PlannedHost> = hosts.iter().collect();
        by_address.sort_by(|a, b| a.host.address.cmp(&b.host.address));
        for pair in by_address.windows(2) {
            let (first, second) = (&pair[0].host, &pair[1].host);
            if first.address == second.address && first.name != second.name {
                return Err(PlanError::SharedAddress {
                    first: first.name.clone(),
                    second: second.name.clone(),
                    address: first.address.clone(),
                });
            }
        }
        // Stable: hosts to deploy keep their order, skipped ones follow in theirs.
        hosts.sort_by_key(|h| h.skip);
        for pair in hosts.windows(2) {
            if pair[0].host.name == pair[1].host.name {
                return Err(PlanError::DuplicateHost { host: pair[0].host.name.clone() });
            }
        }
        let mut by_server: Vec<(&ServerName, &PlannedHost)> = hosts.iter().map(|h| (&h.server, h)).collect();
        by_server.sort_by(|a, b| a.0.cmp(b.0));
        for pair in by_server.windows(2) {
            if pair[0].0 == pair[1].0 {
                let (first, second) = (pair[0].1.host.name.clone(), pair[1].1.host.name.clone());
                return Err(PlanError::SharedServer { first, second, server: pair[0].0.clone() });
            }
        }
        let n = hosts.iter().filter(|h| !h.skip).count();
        if n == 0 {
            return Err(PlanError::NothingToDeploy);
        }
        let concurrency = strategy.concurrency.of_rounding_up(n).clamp(1, n);
        let max_failures = strategy.max_failures.of_rounding_down(n);
        let mut batches = Vec::new();
        let mut start = 0;
        if let Some(Canary { hosts: canary_hosts, .. }) = strategy.canary {
            let size = (canary_hosts as usize).clamp(1, concurrency);
            batches.push(0..size);
            start = size;
        }
        let size = match strategy.window {
            Window::Batches => concurrency,
            Window::Sliding => n,
        };
        while start < n {
            let end = (start + size).min(n);
            batches.push(start..end);
            start = end;
        }
        Ok(Self { hosts, batches, concurrency, max_failures, canary: strategy.canary.is_some() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Amount, CanaryGate, OnFailure};
    use std::time::Duration;

    fn host(i: usize) -> PlannedHost {
        let name = HostName::new(format!("web-{i:02}")).expect("valid");
        PlannedHost::new(
            Host::new(name, format!("127.0.0.{}", i + 1)).expect("valid"),
            ServerName::new(format!("s{i}")).expect("valid"),
        )
    }

    fn strategy(concurrency: Amount, canary: Option<u32>) -> Strategy {
        Strategy {
            concurrency,
            max_failures: Amount::Percent(10),
            pause_between_batches: Duration::ZERO,
            canary: canary.map(|hosts| Canary { hosts, gate: CanaryGate::Confirm }),
            on_failure: OnFailure::Stop,
            on_takeover: Default::default(),
            window: Window::Batches,
            retry_unreachable: false,
        }
    }

    #[test]
    fn batches_with_canary_and_percent() {
        let plan = Plan::new((0..10).rev().map(host).collect(), &strategy(Amount::Percent(30), Some(1)))
            .expect("plans");
        assert_eq!(plan.concurrency, 3);
        assert_eq!(plan.max_failures, 1);
        assert_eq!(plan.batches, vec![0..1, 1..4, 4..7, 7..10]);
        assert_eq!(plan.hosts[0].host.name.as_str(), "web-00", "sorted by name");
    }

    #[test]
    fn a_sliding_window_is_the_canary_then_one_batch_of_the_rest() {
        let sliding = Strategy { window: Window::Sliding, ..strategy(Amount::Percent(30), Some(1)) };
        let plan = Plan::new((0..10).map(host).collect(), &sliding).expect("plans");
        assert_eq!(plan.concurrency, 3);
        assert_eq!(plan.batches, vec![0..1, 1..10]);
        let plain = Strategy { window: Window::Sliding, ..strategy(Amount::Count(2), None) };
        assert_eq!(Plan::new((0..5).map(host).collect(), &plain).expect("plans").batches, vec![0..5]);
    }

    #[test]
    fn refuses_duplicates() {
        let mut twice = vec![host(1), host(1)];
        assert_eq!(
            Plan::new(twice.clone(), &strategy(Amount::Count(1), None)),
            Err(PlanError::DuplicateHost { host: HostName::new("web-01").expect("valid") })
        );
        twice[1] = host(2);
        twice[1].server = twice[0].server.clone();
        assert!(matches!(
            Plan::new(twice, &strategy(Amount::Count(1), None)),
            Err(PlanError::SharedServer { .. })
        ));
        assert_eq!(Plan::new(vec![], &strategy(Amount::Count(1), None)), Err(PlanError::NoHosts));
    }

    #[test]
    fn refuses_two_hosts_at_one_address() {
        let mut hosts = vec![host(1), host(2)];
        hosts[1].host.address = hosts[0].host.address.clone();
        assert_eq!(
            Plan::new(hosts, &strategy(Amount::Count(1), None)),
            Err(PlanError::SharedAddress {
                first: HostName::new("web-01").expect("valid"),
                second: HostName::new("web-02").expect("valid"),
                address: "127.0.0.2".into(),
            })
        );
    }

    #[test]
    fn skipped_hosts_come_last_in_no_batch() {
        let mut hosts: Vec<PlannedHost> = (0..4).map(host).collect();
        hosts[1].skip = true;
        let plan = Plan::new(hosts, &strategy(Amount::Percent(50), None)).expect("plans");
        let names: Vec<&str> = plan.hosts.iter().map(|h| h.host.name.as_str()).collect();
        assert_eq!(names, ["web-00", "web-02", "web-03", "web-01"]);
        assert_eq!(plan.batches, vec![0..2, 2..3], "50% of the 3 hosts to deploy, rounded up");
        let mut all: Vec<PlannedHost> = (0..2).map(host).collect();
        all.iter_mut().for_each(|h| h.skip = true);
        assert_eq!(Plan::new(all, &strategy(Amount::Count(1), None)), Err(PlanError::NothingToDeploy));
    }
}
