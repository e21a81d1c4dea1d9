//! Property tests of the rollout state machine: random fleets (1 to 500 hosts), strategies and
//! fault patterns, on virtual time, against an independent model of the load balancer. Every
//! invariant of the rollout's documentation is checked here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vesemir_core::event::{EventKind, HostOutcome, Rotation};
use vesemir_core::host::Host;
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::plan::{Plan, PlannedHost};
use vesemir_core::ports::{AdminState, ExitStatus, Weight};
use vesemir_core::request::{
    Amount, Canary, CanaryGate, DrainTimeoutPolicy, RampStep, Strategy as RolloutStrategy,
};
use vesemir_core::rollout::{
    Action, ActionResult, ErrorKind, HealthRetry, HostError, HostId, Rollout, RolloutConfig, StepLimit,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Unreachable,
    Unauthorized,
    DrainRefused,
    DrainTimeout,
    MaintTimesOut,
    StepExit(usize),
    StepLost(usize),
    HealthFails(u32),
    WaitUpFails,
    RampRefused,
    ReadyRefused,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        30 => Just(Fault::None),
        2 => Just(Fault::Unreachable),
        1 => Just(Fault::Unauthorized),
        1 => Just(Fault::DrainRefused),
        2 => Just(Fault::DrainTimeout),
        1 => Just(Fault::MaintTimesOut),
        2 => (0usize..3).prop_map(Fault::StepExit),
        1 => (0usize..3).prop_map(Fault::StepLost),
        3 => (1u32..8).prop_map(Fault::HealthFails),
        1 => Just(Fault::WaitUpFails),
        1 => Just(Fault::RampRefused),
        1 => Just(Fault::ReadyRefused),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    concurrency: Amount,
    max_failures: Amount,
    steps: usize,
    ramp: Vec<(u8, u64)>,
    health: Option<(u64, u64)>,
    lb_up: bool,
    force: bool,
    canary: Option<(u32, Option<u64>)>,
    pause_ms: u64,
    faults: Vec<Fault>,
    seed: u64,
    cancel_at_ms: Option<u64>,
    abort_at_ms: Option<u64>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let ramp = prop::collection::btree_set(1u8..100, 0..3)
        .prop_flat_map(|weights| {
            let n = weights.len();
            (Just(weights), prop::collection::vec(prop_oneof![Just(0u64), 1u64..5000], n))
        })
        .prop_map(|(weights, holds)| weights.into_iter().zip(holds).collect::<Vec<_>>());
    (
        (1usize..=500).prop_flat_map(|n| prop::collection::vec(fault(), n)),
        prop_oneof![(1u32..60).prop_map(Amount::Count), (1u8..=100).prop_map(Amount::Percent)],
        prop_oneof![(0u32..6).prop_map(Amount::Count), (0u8..30).prop_map(Amount::Percent)],
        1usize..4,
        ramp,
        prop::option::of((1000u64..20_000, 100u64..3000)),
        any::<bool>(),
        any::<bool>(),
        prop::option::of((1u32..4, prop::option::of(0u64..10_000))),
        prop_oneof![Just(0u64), 1u64..5000],
        (any::<u64>(), prop::option::weighted(0.2, 0u64..60_000), prop::option::weighted(0.1, 0u64..60_000)),
    )
        .prop_map(
            |(
                faults,
                concurrency,
                max_failures,
                steps,
                ramp,
                health,
                lb_up,
                force,
                canary,
                pause_ms,
                (seed, cancel, abort),
            )| {
                Scenario {
                    concurrency,
                    max_failures,
                    steps,
                    ramp,
                    // The request validation requires a health gate: keep at least one.
                    lb_up: lb_up || health.is_none(),
                    health,
                    force,
                    canary,
                    pause_ms,
                    faults,
                    seed,
                    cancel_at_ms: cancel,
                    abort_at_ms: abort,
                }
            },
        )
}

/// The load balancer as the simulation sees it, independent of the rollout's own bookkeeping.
#[derive(Debug, Clone, Copy)]
struct ModelServer {
    admin: AdminState,
    weight: Weight,
    steps_ok: usize,
    step_started: bool,
    health_ok: bool,
    health_attempts: u32,
}

impl ModelServer {
    fn in_rotation(&self) -> bool {
        self.admin == AdminState::Ready && self.weight > Weight::ZERO
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn err(kind: ErrorKind) -> ActionResult {
    ActionResult::Failed(HostError::new(kind, format!("simulated {kind:?}")))
}

fn run(s: &Scenario) -> Result<(), TestCaseError> {
    let n = s.faults.len();
    let hosts: Vec<PlannedHost> = (0..n)
        .map(|i| PlannedHost {
            host: Host::new(HostName::new(format!("h{i:04}")).expect("name"), "127.0.0.1").expect("host"),
            server: ServerName::new(format!("s{i:04}")).expect("name"),
        })
        .collect();
    let strategy = RolloutStrategy {
        concurrency: s.concurrency,
        max_failures: s.max_failures,
        pause_between_batches: Duration::from_millis(s.pause_ms),
        canary: s.canary.map(|(hosts, hold)| Canary {
            hosts,
            gate: hold.map_or(CanaryGate::Confirm, |ms| CanaryGate::Hold(Duration::from_millis(ms))),
        }),
    };
    let plan = Arc::new(Plan::new(hosts, &strategy).expect("plan"));
    let concurrency = plan.concurrency;
    let max_failures = plan.max_failures;
    let config = RolloutConfig {
        steps: (0..s.steps)
            .map(|i| StepLimit { name: format!("step{i}"), timeout: Duration::from_secs(60) })
            .collect(),
        health_command: s.health.map(|(t, i)| HealthRetry {
            timeout: Duration::from_millis(t),
            interval: Duration::from_millis(i),
        }),
        load_balancer_up: s.lb_up.then_some(Duration::from_secs(5)),
        drain_timeout: Duration::from_secs(10),
        on_drain_timeout: if s.force { DrainTimeoutPolicy::Force } else { DrainTimeoutPolicy::Fail },
        ramp: s
            .ramp
            .iter()
            .map(|&(w, hold)| RampStep {
                weight: Weight::percent(w).expect("w"),
                hold: Duration::from_millis(hold),
            })
            .collect(),
        pause_between_batches: strategy.pause_between_batches,
        canary_gate: strategy.canary.map(|c| c.gate),
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut rng = Rng(s.seed | 1);
    let mut machine = Rollout::new(plan.clone(), config, now);
    let initial = ModelServer {
        admin: AdminState::Ready,
        weight: Weight::FULL,
        steps_ok: 0,
        step_started: false,
        health_ok: false,
        health_attempts: 0,
    };
    let mut model = vec![initial; n];
    let mut connected = vec![false; n];
    let mut pending: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut results: BTreeMap<u64, (HostId, ActionResult)> = BTreeMap::new();
    let mut outstanding = vec![false; n];
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut finished = vec![0u32; n];
    let mut failures = 0usize;
    let mut no_more_starts = false;
    let (mut cancelled, mut aborted) = (false, false);
    let mut max_out = 0usize;
    let cancel_at = s.cancel_at_ms.map(|ms| t0 + Duration::from_millis(ms));
    let abort_at = s.abort_at_ms.map(|ms| t0 + Duration::from_millis(ms));
    let mut iterations = 0u64;
    let mut confirmed_idle = false;

    loop {
        iterations += 1;
        prop_assert!(iterations < 2_000_000, "the rollout does not end");
        while let Some(action) = machine.poll_action() {
            let h = action.host().0;
            prop_assert!(!outstanding[h], "two actions at once for host {h}");
            outstanding[h] = true;
            let m = &mut model[h];
            let f = s.faults[h];
            let latency = Duration::from_millis(rng.next() % 2000);
            let (result, delay) = match action {
                Action::Connect { .. } => {
                    prop_assert!(!no_more_starts, "host {h} started after the rollout stopped");
                    match f {
                        Fault::Unreachable => (err(ErrorKind::Unreachable), latency),
                        Fault::Unauthorized => (err(ErrorKind::Unauthorized), latency),
                        _ => {
                            connected[h] = true;
                            (ActionResult::Done, latency)
                        }
                    }
                }
                Action::SetState { state, .. } => match (state, f) {
                    (AdminState::Drain, Fault::DrainRefused) => (err(ErrorKind::Rejected), latency),
                    (AdminState::Maint, Fault::MaintTimesOut) if m.steps_ok == 0 && !m.step_started => {
                        m.admin = state;
                        (err(ErrorKind::Timeout), latency)
                    }
                    (AdminState::Ready, Fault::ReadyRefused) if m.step_started => {
                        (err(ErrorKind::Rejected), latency)
                    }
                    _ => {
                        m.admin = state;
                        (ActionResult::Done, latency)
                    }
                },
                Action::SetWeight { weight, .. } => {
                    if f == Fault::RampRefused && weight != Weight::ZERO && weight != Weight::FULL {
                        (err(ErrorKind::Rejected), latency)
                    } else {
                        m.weight = weight;
                        (ActionResult::Done, latency)
                    }
                }
                Action::WaitDrained { timeout, .. } => match f {
                    Fault::DrainTimeout => (err(ErrorKind::Timeout), timeout),
                    _ => (ActionResult::Done, latency),
                },
                Action::ShutdownSessions { .. } => (ActionResult::Done, latency),
                Action::RunStep { step, .. } => {
                    m.step_started = true;
                    prop_assert!(!m.in_rotation(), "step ran on host {h} while in rotation");
                    match f {
                        Fault::StepExit(k) if k % s.steps == step => {
                            (ActionResult::Exited(ExitStatus::code(1)), latency)
                        }
                        Fault::StepLost(k) if k % s.steps == step => (err(ErrorKind::Unreachable), latency),
                        _ => {
                            m.steps_ok += 1;
                            (ActionResult::Exited(ExitStatus::code(0)), latency)
                        }
                    }
                }
                Action::RunHealthCheck { .. } => {
                    prop_assert!(!m.in_rotation(), "health check on host {h} while in rotation");
                    m.health_attempts += 1;
                    match f {
                        Fault::HealthFails(times) if m.health_attempts <= times => (
                            ActionResult::Exited(ExitStatus::code(1)),
                            Duration::from_millis(rng.next() % 500),
                        ),
                        _ => {
                            m.health_ok = true;
                            (ActionResult::Exited(ExitStatus::code(0)), latency)
                        }
                    }
                }
                Action::WaitUp { timeout, .. } => match f {
                    Fault::WaitUpFails => (err(ErrorKind::Timeout), timeout),
                    _ => (ActionResult::Done, latency),
                },
                Action::Close { .. } => {
                    connected[h] = false;
                    (ActionResult::Done, Duration::ZERO)
                }
            };
            // Into rotation only after the whole changeset and health gate passed, or untouched.
            let m = &model[h];
            if m.in_rotation() && m.step_started {
                prop_assert!(
                    m.steps_ok == s.steps && (s.health.is_none() || m.health_ok),
                    "host {h} back in rotation before its changeset and health gate passed"
                );
            }
            let out = model.iter().filter(|m| !m.in_rotation()).count();
            max_out = max_out.max(out);
            prop_assert!(out <= concurrency, "{out} hosts out of rotation, concurrency {concurrency}");
            seq += 1;
            results.insert(seq, (HostId(h), result));
            pending.push(Reverse((now + delay, seq)));
        }
        while let Some(event) = machine.poll_event() {
            if let EventKind::HostFinished { host, outcome, .. } = &event.kind {
                let h: usize = host.as_str()[1..].parse().expect("index");
                finished[h] += 1;
                if matches!(outcome, HostOutcome::Failed | HostOutcome::Unreachable) {
                    failures += 1;
                    if failures > max_failures {
                        no_more_starts = true;
                    }
                }
            }
            events.push(event);
        }
        if machine.is_finished() {
            break;
        }
        let next_result = pending.peek().map(|Reverse((at, _))| *at);
        let next_timer = machine.poll_timeout();
        let next_control =
            [cancel_at.filter(|_| !cancelled), abort_at.filter(|_| !aborted)].into_iter().flatten().min();
        let next = [next_result, next_timer, next_control].into_iter().flatten().min();
        let Some(next) = next else {
            // Nothing in flight, no timer: only a canary confirmation can be awaited.
            prop_assert!(
                !confirmed_idle,
                "the rollout is stuck: nothing in flight, no timer, confirmation changed nothing"
            );
            confirmed_idle = true;
            machine.handle_confirm(now);
            continue;
        };
        now = now.max(next);
        confirmed_idle = false;
        if abort_at.is_some_and(|at| at <= now) && !aborted {
            aborted = true;
            no_more_starts = true;
            machine.handle_abort(now);
            continue;
        }
        if cancel_at.is_some_and(|at| at <= now) && !cancelled {
            cancelled = true;
            no_more_starts = true;
            machine.handle_cancel(now);
            continue;
        }
        if next_result == Some(next) {
            let Some(Reverse((_, id))) = pending.pop() else { continue };
            if let Some((host, result)) = results.remove(&id) {
                outstanding[host.0] = false;
                machine.handle_result(host, result, now);
            }
        } else {
            machine.handle_timeout(now);
        }
    }

    // Every host ends exactly once, in one outcome; totals add up.
    prop_assert!(finished.iter().all(|&f| f == 1), "a host did not end exactly once: {finished:?}");
    let report = machine.report();
    prop_assert_eq!(report.totals.total(), n);
    prop_assert!(report.hosts.iter().all(|h| h.outcome.is_some()));
    // Events are numbered without gaps.
    for (i, event) in events.iter().enumerate() {
        prop_assert_eq!(event.seq, i as u64 + 1);
    }
    let ends_with_finish =
        matches!(events.last().map(|e| &e.kind), Some(EventKind::DeploymentFinished { .. }));
    prop_assert!(ends_with_finish, "the last event is not DeploymentFinished");
    // The rollout's own count (taken when results arrive) never exceeds the limit either.
    prop_assert!(report.max_out_of_rotation <= concurrency);
    prop_assert!(max_out <= concurrency);
    for (h, (host, m)) in report.hosts.iter().zip(&model).enumerate() {
        // Reported rotation matches the model, unless reported unknown.
        match host.rotation {
            Rotation::InRotation => prop_assert!(m.in_rotation(), "host {h} reported in rotation but is not"),
            Rotation::OutOfRotation => {
                prop_assert!(!m.in_rotation(), "host {h} reported out of rotation but is in")
            }
            Rotation::Unknown => {}
        }
        if !aborted {
            prop_assert!(!connected[h], "host {h}'s session was left open");
        }
        match host.outcome {
            Some(HostOutcome::Succeeded) => {
                prop_assert!(
                    m.in_rotation() && m.weight == Weight::FULL,
                    "host {h} succeeded but is not at 100%"
                );
                prop_assert_eq!(m.steps_ok, s.steps);
            }
            Some(HostOutcome::Failed) => {
                prop_assert!(host.error.is_some(), "host {h} failed without a reason");
                if m.step_started {
                    prop_assert!(!m.in_rotation(), "host {h} failed mid-changeset but is in rotation");
                }
            }
            Some(HostOutcome::Unreachable) => {
                prop_assert!(m.in_rotation() && !m.step_started, "unreachable host {h} was touched");
            }
            Some(HostOutcome::Skipped | HostOutcome::Cancelled) if !aborted => {
                prop_assert!(m.in_rotation() && !m.step_started, "host {h} not deployed but touched");
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn rollout_invariants_hold_for_random_fleets_and_faults(s in scenario()) {
        run(&s)?;
    }
}

#[test]
fn a_clean_fleet_of_500_hosts_succeeds_with_the_simulator() {
    let s = Scenario {
        concurrency: Amount::Count(50),
        max_failures: Amount::Count(0),
        steps: 2,
        ramp: vec![(10, 1000), (50, 0)],
        health: Some((5000, 500)),
        lb_up: true,
        force: false,
        canary: Some((1, Some(1000))),
        pause_ms: 100,
        faults: vec![Fault::None; 500],
        seed: 7,
        cancel_at_ms: None,
        abort_at_ms: None,
    };
    run(&s).expect("invariants hold");
}
