//! Taking over a deployment that another server instance ran until it stopped renewing its
//! lease (it died, or lost the database): what the deployment's record (each host's state,
//! folded from its events) and its journal say of each host, checked against the load
//! balancers' real state, sorted into what the new instance does with the host.
//!
//! - A host that **ended** stays as it ended (its journal entry or its record says how).
//! - A host **in flight** (the journal has a change of its server and no end) is checked by the
//!   front end with [`recover_server`](super::recover_server): health gate first, then back to
//!   its original state on every instance; one that fails the gate is left out and reported.
//! - A host **not started** (or started with no load balancer change yet) is deployed by the
//!   resumed rollout, unless the request says `on_takeover = "restore"`.
//!
//! With [`OnTakeover::Resume`] the hosts in flight that went back are deployed again too: the
//! instance that died may have stopped in their steps, so only a full pass leaves them on the
//! new version. Pure: the front end reads the store and the load balancers, and acts.

use std::collections::{BTreeSet, HashMap};

use super::{Pending, PendingServer, Unfinished};
use crate::event::{HostOutcome, Totals};
use crate::name::{HostName, ServerName};
use crate::ports::{InstanceState, ServerState};
use crate::progress::HostProgress;
use crate::request::OnTakeover;

/// One host of the deployment as its record left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedHost {
    /// Its state, as the core's fold of the deployment's events left it.
    pub state: HostProgress,
    /// Its server in the backend.
    pub server: ServerName,
}

/// What the new instance does with one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTakeover {
    /// It ended before the takeover: it stays as it ended.
    Done {
        /// How it ended.
        outcome: HostOutcome,
    },
    /// The instance that died changed its server and the host never ended: check it (health
    /// gate) and put it back at its original state, or leave it out and report it.
    InFlight {
        /// What the journal says to put back.
        server: PendingServer,
        /// Its state on every load balancer instance now; `None` when the backend's listing
        /// lacks the server.
        found: Option<Vec<InstanceState>>,
    },
    /// Not started, or started with no load balancer change: the resumed rollout deploys it.
    NotStarted,
}

/// Every host of a deployment taken over, in plan order, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverPlan {
    /// Each host and what to do with it.
    pub hosts: Vec<(HostName, HostTakeover)>,
    /// Where the record, the journal and the load balancers disagree, as sentences.
    pub warnings: Vec<String>,
}

impl TakeoverPlan {
    /// The servers to check and put back (the hosts in flight), in plan order.
    pub fn in_flight(&self) -> impl Iterator<Item = &PendingServer> {
        self.hosts.iter().filter_map(|(_, t)| match t {
            HostTakeover::InFlight { server, .. } => Some(server),
            _ => None,
        })
    }

    /// The hosts in flight.
    pub fn in_flight_hosts(&self) -> BTreeSet<HostName> {
        self.in_flight().map(|s| s.host.clone()).collect()
    }

    /// The hosts not started.
    pub fn not_started(&self) -> BTreeSet<HostName> {
        self.hosts.iter().filter(|(_, t)| *t == HostTakeover::NotStarted).map(|(h, _)| h.clone()).collect()
    }

    /// How the hosts that ended before the takeover ended.
    pub fn done_totals(&self) -> Totals {
        let mut totals = Totals::default();
        for (_, t) in &self.hosts {
            if let HostTakeover::Done { outcome } = t {
                totals.count(*outcome);
            }
        }
        totals
    }

    /// The hosts the resumed rollout deploys: with [`OnTakeover::Resume`], the hosts not
    /// started and those in flight that were `put_back` (passed their gate); with
    /// [`OnTakeover::Restore`], none.
    pub fn to_deploy(&self, on_takeover: OnTakeover, put_back: &BTreeSet<HostName>) -> BTreeSet<HostName> {
        match on_takeover {
            OnTakeover::Restore => BTreeSet::new(),
            OnTakeover::Resume => {
                let mut hosts = self.not_started();
                hosts.extend(self.in_flight_hosts().intersection(put_back).cloned());
                hosts
            }
        }
    }
}

/// Sorts every host of a deployment taken over: `hosts` is its record (plan order),
/// `unfinished` what its journal leaves unfinished, `found` the backend's servers as the load
/// balancers list them now.
pub fn plan_takeover(unfinished: &Unfinished, hosts: &[RecordedHost], found: &[ServerState]) -> TakeoverPlan {
    let found: HashMap<&ServerName, &ServerState> = found.iter().map(|s| (&s.name, s)).collect();
    let mut interrupted: HashMap<&HostName, &PendingServer> = unfinished
        .servers
        .iter()
        .filter(|s| s.pending == Pending::Interrupted)
        .map(|s| (&s.host, s))
        .collect();
    let mut plan = TakeoverPlan { hosts: Vec::with_capacity(hosts.len()), warnings: Vec::new() };
    let in_flight = |pending: &PendingServer, warnings: &mut Vec<String>| {
        let now = found.get(&pending.server).map(|s| s.instances.clone());
        if now.is_none() {
            warnings.push(format!(
                "{}: its server {} was in flight and is not in the backend any more: nothing can be put back",
                pending.host, pending.server
            ));
        }
        HostTakeover::InFlight { server: pending.clone(), found: now }
    };
    for host in hosts {
        let name = &host.state.name;
        let pending = interrupted.remove(name);
        let what = match (host.state.outcome, pending) {
            // The journal had a change after its end (a second pass): it is in flight again.
            (_, Some(pending)) => in_flight(pending, &mut plan.warnings),
            (Some(outcome), None) => {
                let out_now =
                    found.get(&host.server).is_some_and(|s| !s.instances.is_empty() && !s.in_rotation());
                if outcome == HostOutcome::Succeeded && out_now {
                    plan.warnings.push(format!(
                        "{name}: ended in rotation, and its server {} is out of rotation now: someone else took it out; left as found",
                        host.server
                    ));
                }
                HostTakeover::Done { outcome }
            }
            (None, None) => HostTakeover::NotStarted,
        };
        plan.hosts.push((name.clone(), what));
    }
    // Servers the journal has in flight whose host the record lacks (it never got its plan).
    let mut rest: Vec<&PendingServer> = interrupted.into_values().collect();
    rest.sort_by(|a, b| a.host.cmp(&b.host));
    for pending in rest {
        let what = in_flight(pending, &mut plan.warnings);
        plan.hosts.push((pending.host.clone(), what));
    }
    plan
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::{Phase, Rotation};
    use crate::journal::Change;
    use crate::ports::{AdminState, LbEndpoint, Operational, ServerStatus};

    fn host(name: &str, outcome: Option<HostOutcome>, phase: Phase) -> RecordedHost {
        let mut state = HostProgress::pending(HostName::new(name).unwrap());
        state.outcome = outcome;
        state.phase = phase;
        if outcome.is_none() && state.phase != Phase::Pending {
            state.rotation = Rotation::OutOfRotation;
        }
        RecordedHost { state, server: ServerName::new(name).unwrap() }
    }

    fn instance(admin: AdminState, weight: u32) -> InstanceState {
        InstanceState {
            instance: LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 },
            status: ServerStatus::Up,
            weight,
            configured_weight: 100,
            sessions: 0,
            admin,
            operational: Operational::Up,
            check: None,
            address: None,
        }
    }

    fn pending(name: &str, pending: Pending) -> PendingServer {
        PendingServer {
            host: HostName::new(name).unwrap(),
            server: ServerName::new(name).unwrap(),
            original: vec![instance(AdminState::Ready, 100)],
            last_change: Change::State { state: AdminState::Maint },
            pending,
        }
    }

    fn server(name: &str, admin: AdminState, weight: u32) -> ServerState {
        ServerState { name: ServerName::new(name).unwrap(), instances: vec![instance(admin, weight)] }
    }

    fn names(set: &BTreeSet<HostName>) -> Vec<&str> {
        set.iter().map(HostName::as_str).collect()
    }

    #[test]
    fn done_hosts_stay_done_in_flight_ones_are_checked_and_the_rest_go_on() {
        let hosts = [
            host("web-01", Some(HostOutcome::Succeeded), Phase::Done),
            host("web-02", Some(HostOutcome::Failed), Phase::HealthCheck { attempt: 1 }),
            host("web-03", None, Phase::Step { number: 1, name: "deploy".into() }),
            host("web-04", None, Phase::Connecting),
            host("web-05", None, Phase::Pending),
        ];
        let unfinished = Unfinished {
            header: None,
            finished: None,
            servers: vec![
                pending(
                    "web-02",
                    Pending::LeftOut {
                        outcome: HostOutcome::Failed,
                        rotation: Rotation::OutOfRotation,
                        error: Some("unhealthy".into()),
                    },
                ),
                pending("web-03", Pending::Interrupted),
            ],
        };
        let found = [
            server("web-01", AdminState::Ready, 100),
            server("web-02", AdminState::Maint, 100),
            server("web-03", AdminState::Maint, 100),
            server("web-04", AdminState::Ready, 100),
            server("web-05", AdminState::Ready, 100),
        ];
        let plan = plan_takeover(&unfinished, &hosts, &found);
        assert_eq!(plan.hosts[0].1, HostTakeover::Done { outcome: HostOutcome::Succeeded });
        assert_eq!(plan.hosts[1].1, HostTakeover::Done { outcome: HostOutcome::Failed });
        assert!(
            matches!(&plan.hosts[2].1, HostTakeover::InFlight { found: Some(f), .. } if f[0].admin == AdminState::Maint)
        );
        assert_eq!(plan.hosts[3].1, HostTakeover::NotStarted, "no load balancer change yet");
        assert_eq!(plan.hosts[4].1, HostTakeover::NotStarted);
        assert_eq!(names(&plan.in_flight_hosts()), ["web-03"]);
        assert_eq!(names(&plan.not_started()), ["web-04", "web-05"]);
        assert_eq!(plan.done_totals().succeeded, 1);
        assert_eq!(plan.done_totals().failed, 1);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        let put_back: BTreeSet<HostName> = [HostName::new("web-03").unwrap()].into();
        assert_eq!(names(&plan.to_deploy(OnTakeover::Resume, &put_back)), ["web-03", "web-04", "web-05"]);
        assert_eq!(names(&plan.to_deploy(OnTakeover::Resume, &BTreeSet::new())), ["web-04", "web-05"]);
        assert!(plan.to_deploy(OnTakeover::Restore, &put_back).is_empty());
    }

    #[test]
    fn disagreements_with_the_load_balancers_are_reported() {
        let hosts = [
            host("web-01", Some(HostOutcome::Succeeded), Phase::Done),
            host("web-02", None, Phase::Draining),
        ];
        let unfinished = Unfinished {
            header: None,
            finished: None,
            servers: vec![pending("web-02", Pending::Interrupted)],
        };
        let found = [server("web-01", AdminState::Maint, 100)];
        let plan = plan_takeover(&unfinished, &hosts, &found);
        assert_eq!(
            plan.hosts[1].1,
            HostTakeover::InFlight { server: unfinished.servers[0].clone(), found: None }
        );
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("web-01") && plan.warnings[0].contains("left as found"));
        assert!(plan.warnings[1].contains("web-02") && plan.warnings[1].contains("not in the backend"));
    }

    #[test]
    fn a_server_in_flight_whose_host_the_record_lacks_is_still_checked() {
        let unfinished = Unfinished {
            header: None,
            finished: None,
            servers: vec![pending("web-09", Pending::Interrupted)],
        };
        let plan = plan_takeover(&unfinished, &[], &[server("web-09", AdminState::Drain, 100)]);
        assert_eq!(names(&plan.in_flight_hosts()), ["web-09"]);
        assert!(plan.not_started().is_empty());
    }
}
