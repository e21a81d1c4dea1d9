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
//!
//! The rest of the rollout keeps what the deployment had used up or passed before the takeover
//! ([`RolloutSoFar`], read from its events, and [`plan_resumption`]): the failures it may still
//! tolerate are the whole deployment's `max_failures` less the hosts that ended failed or
//! unreachable; a canary whose gate opened is not asked for again; one whose gate had not opened
//! keeps waiting before any other host starts; a rollout that had stopped starting hosts (or
//! whose failures are past the budget) starts none.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::{Pending, PendingServer, Unfinished};
use crate::event::{Event, EventKind, HostOutcome, StopReason, Totals, WaitReason};
use crate::name::{HostName, ServerName};
use crate::ports::{InstanceState, ServerState};
use crate::progress::HostProgress;
use crate::request::{Amount, Canary, CanaryGate, OnTakeover, Strategy};

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

/// Where the canary was when the deployment was taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryProgress {
    /// No canary batch began (or the request has no canary): the rest plans its own as the
    /// request says.
    NotStarted,
    /// The canary batch began with these hosts and had not ended.
    Running {
        /// The canary batch's hosts.
        hosts: Vec<HostName>,
    },
    /// The canary batch ended and its gate had not opened.
    Gated {
        /// What it waited for.
        reason: WaitReason,
        /// When it began to wait, from the deployment's start.
        since: Duration,
    },
    /// Its gate opened (a batch began after it): the rest has no canary.
    Passed,
}

/// What a deployment's events say its rollout had used up or passed when it was taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSoFar {
    /// The failures the whole deployment tolerates, as its first rollout resolved them against
    /// its plan (`deployment_started`); `None` when not recorded.
    pub max_failures: Option<usize>,
    /// Why the rollout had stopped starting hosts, if it had.
    pub stopped: Option<StopReason>,
    /// The canary's progress.
    pub canary: CanaryProgress,
}

/// Reads `events` (a deployment's, in order; earlier takeovers' included) for what its rollout
/// had used up or passed. `canary`: whether its request has a canary.
pub fn rollout_so_far(events: &[Event], canary: bool) -> RolloutSoFar {
    let mut so_far = RolloutSoFar { max_failures: None, stopped: None, canary: CanaryProgress::NotStarted };
    for event in events {
        match &event.kind {
            EventKind::DeploymentStarted { max_failures, .. } if so_far.max_failures.is_none() => {
                so_far.max_failures = Some(*max_failures);
            }
            EventKind::Stopping { cause: Some(cause), .. } => so_far.stopped = Some(*cause),
            EventKind::BatchStarted { batch, hosts } if canary => {
                so_far.canary = match so_far.canary {
                    // After the gate (or, after a takeover, the rest's first batch): no canary.
                    CanaryProgress::Gated { .. } | CanaryProgress::Passed => CanaryProgress::Passed,
                    // The first batch (again after a takeover during the canary) is the canary.
                    _ if *batch == 1 => CanaryProgress::Running { hosts: hosts.clone() },
                    _ => CanaryProgress::Passed,
                };
            }
            EventKind::Waiting {
                reason: reason @ (WaitReason::CanaryConfirmation | WaitReason::CanaryHold { .. }),
            } if canary => {
                so_far.canary = CanaryProgress::Gated { reason: reason.clone(), since: event.elapsed };
            }
            _ => {}
        }
    }
    so_far
}

/// A gate the rest of a rollout taken over waits at before any host starts: the canary's, when
/// its batch had ended and the gate had not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingGate {
    /// Someone's confirmation (given to any instance).
    Confirm,
    /// The canary hold.
    Hold {
        /// How long it lasts.
        duration: Duration,
        /// When it began, from the deployment's start; `None`: it begins when the rest would.
        since: Option<Duration>,
    },
}

/// How the rest of a rollout taken over runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumption {
    /// The failures the whole deployment tolerates (the first rollout's figure).
    pub max_failures: usize,
    /// The request's strategy with what was used up taken out: `max_failures` the count still
    /// tolerated; the canary the rest of its batch, or none once its batch ended.
    pub strategy: Strategy,
    /// What to wait for before the rest starts.
    pub gate: Option<PendingGate>,
}

/// How the rest of a rollout taken over runs (`deploy`: the hosts it deploys), or why it starts
/// no host: the rollout had stopped, or `failed` hosts (those that ended failed or unreachable,
/// the takeover's checks included) are more than the whole deployment's `max_failures`, as the
/// original rollout would have stopped. `strategy` is the request's; `hosts` the deployment's
/// hosts, to resolve a percentage when the first rollout's figure was not recorded.
pub fn plan_resumption(
    so_far: &RolloutSoFar,
    strategy: &Strategy,
    hosts: usize,
    failed: usize,
    deploy: &BTreeSet<HostName>,
) -> Result<Resumption, StopReason> {
    if let Some(stopped) = so_far.stopped {
        return Err(stopped);
    }
    let max_failures = so_far.max_failures.unwrap_or_else(|| strategy.max_failures.of_rounding_down(hosts));
    let Some(left) = max_failures.checked_sub(failed) else {
        return Err(StopReason::TooManyFailures { failed, max_failures });
    };
    let mut strategy = strategy.clone();
    strategy.max_failures = Amount::Count(u32::try_from(left).unwrap_or(u32::MAX));
    let gate = match &so_far.canary {
        CanaryProgress::NotStarted => None,
        CanaryProgress::Running { hosts } => {
            let rest = hosts.iter().filter(|h| deploy.contains(*h)).count();
            match strategy.canary {
                Some(canary) if rest > 0 => {
                    strategy.canary =
                        Some(Canary { hosts: u32::try_from(rest).unwrap_or(u32::MAX), ..canary });
                    None
                }
                // Every canary host ended (the takeover left the one in flight out): the gate
                // is next, from now.
                canary => {
                    strategy.canary = None;
                    match canary.map(|c| c.gate) {
                        Some(CanaryGate::Confirm) => Some(PendingGate::Confirm),
                        Some(CanaryGate::Hold(duration)) if !duration.is_zero() => {
                            Some(PendingGate::Hold { duration, since: None })
                        }
                        _ => None,
                    }
                }
            }
        }
        CanaryProgress::Gated { reason, since } => {
            strategy.canary = None;
            match reason {
                WaitReason::CanaryHold { duration } => {
                    Some(PendingGate::Hold { duration: *duration, since: Some(*since) })
                }
                _ => Some(PendingGate::Confirm),
            }
        }
        CanaryProgress::Passed => {
            strategy.canary = None;
            None
        }
    };
    Ok(Resumption { max_failures, strategy, gate })
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

    fn at(seq: u64, secs: u64, kind: EventKind) -> Event {
        Event { seq, elapsed: Duration::from_secs(secs), kind }
    }

    fn batch(batch: usize, hosts: &[&str]) -> EventKind {
        EventKind::BatchStarted { batch, hosts: hosts.iter().map(|h| HostName::new(*h).unwrap()).collect() }
    }

    fn started(max_failures: usize) -> EventKind {
        EventKind::DeploymentStarted { hosts: 4, batches: 4, concurrency: 1, max_failures }
    }

    fn strategy(max_failures: Amount, canary: Option<CanaryGate>) -> Strategy {
        Strategy {
            concurrency: Amount::Count(1),
            max_failures,
            pause_between_batches: Duration::ZERO,
            canary: canary.map(|gate| Canary { hosts: 1, gate }),
            on_failure: crate::request::OnFailure::Stop,
            on_takeover: OnTakeover::Resume,
            window: crate::request::Window::Batches,
            retry_unreachable: false,
        }
    }

    fn hosts(names: &[&str]) -> BTreeSet<HostName> {
        names.iter().map(|h| HostName::new(*h).unwrap()).collect()
    }

    #[test]
    fn the_rest_tolerates_only_the_failures_left_of_the_whole_deployment() {
        let events = [at(1, 0, started(1)), at(2, 0, batch(1, &["web-01"]))];
        let so_far = rollout_so_far(&events, false);
        assert_eq!(so_far.max_failures, Some(1));
        let s = strategy(Amount::Percent(50), None);
        let rest = hosts(&["web-03", "web-04"]);
        // The first rollout's own figure (recorded: 1), less the one that failed.
        let resumed = plan_resumption(&so_far, &s, 4, 1, &rest).unwrap();
        assert_eq!(resumed.strategy.max_failures, Amount::Count(0));
        assert_eq!(resumed.gate, None);
        assert_eq!(
            plan_resumption(&so_far, &s, 4, 2, &rest),
            Err(StopReason::TooManyFailures { failed: 2, max_failures: 1 }),
            "past the budget: the rollout would have stopped"
        );
        // Not recorded: resolved against the whole deployment's hosts (50% of 4).
        let unknown = RolloutSoFar { max_failures: None, ..so_far.clone() };
        let resumed = plan_resumption(&unknown, &s, 4, 1, &rest).unwrap();
        assert_eq!(resumed.strategy.max_failures, Amount::Count(1));
        // A rollout that had stopped starts nothing.
        let stopped = [at(1, 0, started(1)), at(2, 1, EventKind::stopping(StopReason::Cancelled))];
        assert_eq!(
            plan_resumption(&rollout_so_far(&stopped, false), &s, 4, 0, &rest),
            Err(StopReason::Cancelled)
        );
    }

    #[test]
    fn a_canary_gate_that_opened_is_not_asked_again_and_one_that_had_not_keeps_waiting() {
        let s = strategy(Amount::Count(0), Some(CanaryGate::Confirm));
        let rest = hosts(&["web-02", "web-03"]);
        let waiting = [
            at(1, 0, started(0)),
            at(2, 0, batch(1, &["web-01"])),
            at(3, 5, EventKind::Waiting { reason: WaitReason::CanaryConfirmation }),
        ];
        let so_far = rollout_so_far(&waiting, true);
        assert_eq!(
            so_far.canary,
            CanaryProgress::Gated { reason: WaitReason::CanaryConfirmation, since: Duration::from_secs(5) }
        );
        let resumed = plan_resumption(&so_far, &s, 3, 0, &rest).unwrap();
        assert_eq!(resumed.gate, Some(PendingGate::Confirm));
        assert_eq!(resumed.strategy.canary, None, "the canary is not deployed again");

        let mut confirmed = waiting.to_vec();
        confirmed.push(at(4, 9, batch(2, &["web-02"])));
        let resumed = plan_resumption(&rollout_so_far(&confirmed, true), &s, 3, 0, &rest).unwrap();
        assert_eq!((resumed.gate, resumed.strategy.canary), (None, None), "confirmed: never asked again");

        // Taken over a second time after the first takeover's wait: still passed.
        let mut again = waiting.to_vec();
        again.push(at(4, 9, batch(1, &["web-02"])));
        assert_eq!(rollout_so_far(&again, true).canary, CanaryProgress::Passed);

        // A hold goes on from when it began.
        let held = [
            at(1, 0, batch(1, &["web-01"])),
            at(
                2,
                5,
                EventKind::Waiting { reason: WaitReason::CanaryHold { duration: Duration::from_secs(60) } },
            ),
        ];
        let resumed = plan_resumption(&rollout_so_far(&held, true), &s, 3, 0, &rest).unwrap();
        assert_eq!(
            resumed.gate,
            Some(PendingGate::Hold {
                duration: Duration::from_secs(60),
                since: Some(Duration::from_secs(5))
            })
        );
    }

    #[test]
    fn a_canary_batch_in_flight_at_the_takeover_stays_the_canary() {
        let s = Strategy {
            canary: Some(Canary { hosts: 2, gate: CanaryGate::Confirm }),
            ..strategy(Amount::Count(0), None)
        };
        let events = [at(1, 0, batch(1, &["web-01", "web-02"]))];
        let so_far = rollout_so_far(&events, true);
        // web-01 ended; web-02 was in flight and went back: it alone is the rest's canary.
        let resumed = plan_resumption(&so_far, &s, 4, 0, &hosts(&["web-02", "web-03", "web-04"])).unwrap();
        assert_eq!(resumed.strategy.canary, Some(Canary { hosts: 1, gate: CanaryGate::Confirm }));
        assert_eq!(resumed.gate, None);
        // web-02 was left out on the takeover: the gate is next.
        let resumed = plan_resumption(&so_far, &s, 4, 1, &hosts(&["web-03", "web-04"]));
        assert_eq!(resumed, Err(StopReason::TooManyFailures { failed: 1, max_failures: 0 }));
        let tolerant = Strategy { max_failures: Amount::Count(1), ..s };
        let resumed = plan_resumption(&so_far, &tolerant, 4, 1, &hosts(&["web-03", "web-04"])).unwrap();
        assert_eq!((resumed.strategy.canary, resumed.gate), (None, Some(PendingGate::Confirm)));
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
