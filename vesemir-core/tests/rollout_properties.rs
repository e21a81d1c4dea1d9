//! Property tests of the rollout state machine: random fleets (1 to 500 hosts), strategies and
//! fault patterns, on virtual time, against an independent model of the load balancer. Every
//! invariant of the rollout's documentation is checked here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vesemir_core::event::{DeploymentOutcome, EventKind, HostOutcome, Rotation};
use vesemir_core::fleet::{check_servers, Budget, StateRefusal};
use vesemir_core::host::Host;
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::plan::{Plan, PlanError, PlannedHost};
use vesemir_core::ports::{
    AdminState, ExitStatus, InstanceState, LbEndpoint, Operational, ServerState, ServerStatus, Weight,
};
use vesemir_core::request::{
    Amount, Canary, CanaryGate, DrainTimeoutPolicy, NotInRotationPolicy, RampStep,
    Strategy as RolloutStrategy, Window,
};
use vesemir_core::rollout::{
    Action, ActionResult, ErrorKind, HealthRetry, HostError, HostId, Rollout, RolloutConfig, StepLimit,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Unreachable at every connect.
    Unreachable,
    /// Unreachable at its first connect only (its SSH server came back).
    UnreachableOnce,
    Unauthorized,
    DrainRefused,
    DrainTimeout,
    MaintTimesOut,
    StepExit(usize),
    StepLost(usize),
    HealthFails(u32),
    /// The orchestrator's HTTP check fails this many times.
    ProbeFails(u32),
    WaitUpFails,
    RampRefused,
    ReadyRefused,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        30 => Just(Fault::None),
        2 => Just(Fault::Unreachable),
        2 => Just(Fault::UnreachableOnce),
        1 => Just(Fault::Unauthorized),
        1 => Just(Fault::DrainRefused),
        2 => Just(Fault::DrainTimeout),
        1 => Just(Fault::MaintTimesOut),
        2 => (0usize..3).prop_map(Fault::StepExit),
        1 => (0usize..3).prop_map(Fault::StepLost),
        3 => (1u32..8).prop_map(Fault::HealthFails),
        2 => (1u32..30).prop_map(Fault::ProbeFails),
        1 => Just(Fault::WaitUpFails),
        1 => Just(Fault::RampRefused),
        1 => Just(Fault::ReadyRefused),
    ]
}

/// One box's view of one server in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoxState {
    admin: AdminState,
    /// Absolute effective weight.
    weight: u32,
    configured: u32,
    /// What its health checks say (apart from maintenance).
    up: bool,
}

impl BoxState {
    const READY: BoxState = BoxState { admin: AdminState::Ready, weight: 100, configured: 100, up: true };

    fn in_rotation(&self) -> bool {
        self.admin == AdminState::Ready && self.weight > 0 && self.up
    }

    fn operational(&self) -> Operational {
        if self.admin == AdminState::Maint || !self.up {
            Operational::Down
        } else {
            Operational::Up
        }
    }
}

fn box_state() -> impl Strategy<Value = BoxState> {
    let admin =
        prop_oneof![3 => Just(AdminState::Ready), 1 => Just(AdminState::Drain), 2 => Just(AdminState::Maint)];
    (admin, prop_oneof![1 => Just(0u32), 9 => 1u32..=256], 1u32..=256, prop::bool::weighted(0.8))
        .prop_map(|(admin, weight, configured, up)| BoxState { admin, weight, configured, up })
}

/// A server's starting state on `boxes` boxes: in rotation the same everywhere (at an odd
/// weight), or anything, box by box.
fn server_state(boxes: usize) -> impl Strategy<Value = Vec<BoxState>> {
    prop_oneof![
        5 => (1u32..=256).prop_map(move |w| vec![BoxState { weight: w, configured: w, ..BoxState::READY }; boxes]),
        1 => prop::collection::vec(box_state(), boxes),
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
    /// Each target server's starting state per box.
    initial: Vec<Vec<BoxState>>,
    /// Servers of the backend that are not targets, each one's state per box.
    others: Vec<Vec<BoxState>>,
    policy: NotInRotationPolicy,
    /// Non-target servers going DOWN by themselves: (which, when, for how long), in ms.
    downs: Vec<(usize, u64, u64)>,
    /// A sliding window or strict batches (a pause between batches only with batches).
    window: Window,
    /// The operator pauses at this moment and resumes this long after, in ms.
    pause_at_ms: Option<(u64, u64)>,
    /// The orchestrator's HTTP check: (timeout, interval) in ms.
    http: Option<(u64, u64)>,
    /// The first this many steps are stage steps (run in rotation, before the drain).
    staged: usize,
    /// `strategy.retry_unreachable`: hosts that ended unreachable are tried once more.
    retry_unreachable: bool,
    /// The load balancers' checks keep running while out (drain, no maintenance, marked DOWN
    /// after the changeset).
    checks_while_out: bool,
}

fn base(faults: Vec<Fault>, concurrency: Amount, max_failures: Amount) -> impl Strategy<Value = Scenario> {
    let ramp = prop::collection::btree_set(1u8..100, 0..3)
        .prop_flat_map(|weights| {
            let n = weights.len();
            (Just(weights), prop::collection::vec(prop_oneof![Just(0u64), 1u64..5000], n))
        })
        .prop_map(|(weights, holds)| weights.into_iter().zip(holds).collect::<Vec<_>>());
    (
        1usize..4,
        ramp,
        prop::option::of((1000u64..20_000, 100u64..3000)),
        any::<bool>(),
        any::<bool>(),
        prop::option::of((1u32..4, prop::option::of(0u64..10_000))),
        prop_oneof![Just(0u64), 1u64..5000],
        (any::<u64>(), prop::option::weighted(0.2, 0u64..60_000), prop::option::weighted(0.1, 0u64..60_000)),
        (
            prop_oneof![2 => Just(Window::Sliding), 1 => Just(Window::Batches)],
            prop::option::weighted(0.3, (0u64..30_000, 0u64..20_000)),
            prop::option::weighted(0.4, (200u64..5000, 20u64..500)),
        ),
    )
        .prop_map(
            move |(
                steps,
                ramp,
                health,
                lb_up,
                force,
                canary,
                pause_ms,
                (seed, cancel, abort),
                (window, pause_at, http),
            )| {
                let n = faults.len();
                // A pause between batches is refused with a sliding window.
                let pause_ms = if window == Window::Sliding { 0 } else { pause_ms };
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
                    faults: faults.clone(),
                    seed,
                    cancel_at_ms: cancel,
                    abort_at_ms: abort,
                    initial: vec![vec![BoxState::READY; 2]; n],
                    others: Vec::new(),
                    policy: NotInRotationPolicy::Refuse,
                    downs: Vec::new(),
                    window,
                    pause_at_ms: pause_at,
                    http,
                    staged: (seed as usize >> 8) % (steps + 1),
                    retry_unreachable: (seed >> 16) % 2 == 0,
                    checks_while_out: (seed >> 20) & 1 == 1,
                }
            },
        )
}

fn concurrency() -> impl Strategy<Value = Amount> {
    prop_oneof![(1u32..60).prop_map(Amount::Count), (1u8..=100).prop_map(Amount::Percent)]
}

fn max_failures() -> impl Strategy<Value = Amount> {
    prop_oneof![(0u32..6).prop_map(Amount::Count), (0u8..30).prop_map(Amount::Percent)]
}

/// Fleets of 1 to 500 hosts, all in rotation at 100% on two boxes.
fn scenario() -> impl Strategy<Value = Scenario> {
    ((1usize..=500).prop_flat_map(|n| prop::collection::vec(fault(), n)), concurrency(), max_failures())
        .prop_flat_map(|(faults, c, m)| base(faults, c, m))
}

/// Fleets as they are found: targets and other servers of the backend in random states per box
/// (maintenance, drain, down, odd weights, different per box), each policy, and other servers
/// going down by themselves mid-rollout.
fn real_fleet() -> impl Strategy<Value = Scenario> {
    (
        (1usize..=40).prop_flat_map(|n| prop::collection::vec(fault(), n)),
        prop_oneof![(1u32..12).prop_map(Amount::Count), (20u8..=100).prop_map(Amount::Percent)],
        max_failures(),
        1usize..=3,
    )
        .prop_flat_map(|(faults, c, m, boxes)| {
            let n = faults.len();
            (
                base(faults, c, m),
                prop::collection::vec(server_state(boxes), n),
                prop::collection::vec(server_state(boxes), 0..6),
                prop_oneof![
                    Just(NotInRotationPolicy::Refuse),
                    Just(NotInRotationPolicy::Skip),
                    Just(NotInRotationPolicy::Include)
                ],
                prop::collection::vec((0usize..6, 0u64..60_000, 1u64..120_000), 0..4),
            )
        })
        .prop_map(|(mut s, initial, others, policy, downs)| {
            s.downs = downs.into_iter().filter(|(i, _, _)| *i < others.len()).collect();
            s.initial = initial;
            s.others = others;
            s.policy = policy;
            s
        })
}

/// A target server in the model: its boxes, and what the changeset did on its host.
#[derive(Debug, Clone)]
struct ModelServer {
    boxes: Vec<BoxState>,
    steps_ok: usize,
    step_started: bool,
    health_ok: bool,
    health_attempts: u32,
    probe_ok: bool,
    probe_attempts: u32,
    /// Marked DOWN after its changeset (checks running while out).
    marked_down: bool,
}

impl ModelServer {
    fn in_rotation(&self) -> bool {
        self.boxes.iter().all(BoxState::in_rotation)
    }

    fn as_found(&self, initial: &[BoxState]) -> bool {
        self.boxes.iter().zip(initial).all(|(b, i)| b.admin == i.admin && b.weight == i.weight)
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

fn endpoint(b: usize) -> LbEndpoint {
    LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9000 + b as u16 }
}

fn address(i: usize) -> String {
    format!("10.{}.{}.{}", i / 62_500, (i / 250) % 250, i % 250 + 1)
}

/// What the load balancer answers for a server's boxes.
fn server_state_of(name: &ServerName, boxes: &[BoxState], address: &str) -> ServerState {
    ServerState {
        name: name.clone(),
        instances: boxes
            .iter()
            .enumerate()
            .map(|(b, s)| InstanceState {
                instance: endpoint(b),
                status: ServerStatus::Up,
                weight: s.weight,
                configured_weight: s.configured,
                sessions: 0,
                admin: s.admin,
                operational: s.operational(),
                check: None,
                address: Some(address.to_owned()),
            })
            .collect(),
    }
}

/// Runs one scenario against the model; how many hosts were tried again.
fn run(s: &Scenario) -> Result<u32, TestCaseError> {
    let n = s.faults.len();
    let boxes = s.initial.first().map_or(2, Vec::len);
    let target_name = |i: usize| ServerName::new(format!("s{i:04}")).expect("name");
    let other_name = |i: usize| ServerName::new(format!("x{i:04}")).expect("name");
    let mut model: Vec<ModelServer> = s
        .initial
        .iter()
        .map(|b| ModelServer {
            boxes: b.clone(),
            steps_ok: 0,
            step_started: false,
            health_ok: false,
            health_attempts: 0,
            probe_ok: false,
            probe_attempts: 0,
            marked_down: false,
        })
        .collect();
    let mut others: Vec<Vec<BoxState>> = s.others.clone();
    let backend = |model: &[ModelServer], others: &[Vec<BoxState>]| -> Vec<ServerState> {
        let mut all: Vec<ServerState> = model
            .iter()
            .enumerate()
            .map(|(i, m)| server_state_of(&target_name(i), &m.boxes, &address(i)))
            .collect();
        all.extend(
            others.iter().enumerate().map(|(i, o)| server_state_of(&other_name(i), o, &address(n + i))),
        );
        all
    };
    // Prepare, as the driver does: the real state, the policy, the plan, the budget.
    let hosts: Vec<PlannedHost> = (0..n)
        .map(|i| {
            PlannedHost::new(
                Host::new(HostName::new(format!("h{i:04}")).expect("name"), address(i)).expect("host"),
                target_name(i),
            )
        })
        .collect();
    let read = backend(&model, &others);
    let not_in_rotation: Vec<usize> = (0..n).filter(|&i| !read[i].is_fully_in_rotation()).collect();
    let checked = match check_servers(hosts, &read, s.policy, true) {
        Err(StateRefusal::NotInRotation(list)) => {
            prop_assert_eq!(s.policy, NotInRotationPolicy::Refuse);
            let named: Vec<usize> =
                list.iter().map(|r| r.server.name.as_str()[1..].parse().expect("index")).collect();
            prop_assert_eq!(named, not_in_rotation, "the refusal names exactly the servers not in rotation");
            return Ok(0);
        }
        Err(other) => return Err(TestCaseError::fail(format!("unexpected refusal: {other:?}"))),
        Ok(checked) => checked,
    };
    prop_assert!(s.policy != NotInRotationPolicy::Refuse || not_in_rotation.is_empty());
    let strategy = RolloutStrategy {
        on_failure: vesemir_core::request::OnFailure::Stop,
        on_takeover: vesemir_core::request::OnTakeover::Resume,
        concurrency: s.concurrency,
        max_failures: s.max_failures,
        pause_between_batches: Duration::from_millis(s.pause_ms),
        canary: s.canary.map(|(hosts, hold)| Canary {
            hosts,
            gate: hold.map_or(CanaryGate::Confirm, |ms| CanaryGate::Hold(Duration::from_millis(ms))),
        }),
        window: s.window,
        retry_unreachable: s.retry_unreachable,
    };
    let plan = match Plan::new(checked.hosts, &strategy) {
        Err(PlanError::NothingToDeploy) => {
            prop_assert!(s.policy == NotInRotationPolicy::Skip && not_in_rotation.len() == n);
            return Ok(0);
        }
        other => Arc::new(other.expect("plan")),
    };
    let concurrency = plan.concurrency;
    let budget = Budget::new(concurrency, &read);
    let already_out = read.iter().filter(|s| !s.in_rotation()).count();
    if !budget.allows(&plan) {
        prop_assert!(
            already_out >= concurrency,
            "refused with room: {already_out} out, concurrency {concurrency}"
        );
        return Ok(0);
    }
    // The plan's order is its own (skipped hosts last): map positions to model indices.
    let index: Vec<usize> =
        plan.hosts.iter().map(|h| h.server.as_str()[1..].parse().expect("index")).collect();
    let skip: Vec<bool> = plan.hosts.iter().map(|h| h.skip).collect();
    let batch_of: Vec<Option<usize>> =
        (0..plan.hosts.len()).map(|p| plan.batches.iter().position(|b| b.contains(&p))).collect();
    let max_failures = plan.max_failures;
    let config = RolloutConfig {
        steps: (0..s.steps)
            .map(|i| StepLimit {
                name: format!("step{i}"),
                timeout: Duration::from_secs(60),
                stage: i < s.staged,
                retries: None,
            })
            .collect(),
        health_http: s.http.map(|(t, i)| HealthRetry {
            timeout: Duration::from_millis(t),
            interval: Duration::from_millis(i),
        }),
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
        retry_unreachable: s.retry_unreachable,
        checks_while_out: s.checks_while_out,
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut rng = Rng(s.seed | 1);
    let mut machine = Rollout::new(plan.clone(), config, now);
    let mut connected = vec![false; n];
    let mut touched = vec![false; n];
    let mut pending: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut results: BTreeMap<u64, (HostId, ActionResult, Option<Instant>)> = BTreeMap::new();
    let mut outstanding = vec![false; n];
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut finished = vec![0u32; n];
    // The independent model of the retry round: each host's connects, its retry events, how its
    // last end went, and whether the rollout had stopped (cancel, abort, max_failures) when it
    // ended its batches.
    let mut connects = vec![0u32; n];
    let mut retried = vec![0u32; n];
    let mut last_end: Vec<Option<HostOutcome>> = vec![None; n];
    let mut round_refused = false;
    let mut failures = 0usize;
    let mut no_more_starts = false;
    let (mut cancelled, mut aborted) = (false, false);
    let cancel_at = s.cancel_at_ms.map(|ms| t0 + Duration::from_millis(ms));
    let abort_at = s.abort_at_ms.map(|ms| t0 + Duration::from_millis(ms));
    let pause_at = s.pause_at_ms.map(|(at, _)| t0 + Duration::from_millis(at));
    let resume_at = s.pause_at_ms.map(|(at, after)| t0 + Duration::from_millis(at + after));
    let (mut paused, mut resumed) = (false, false);
    let mut iterations = 0u64;
    let mut confirmed_idle = false;
    // Other servers going down by themselves: (when, which, down?), and when each last went down.
    let mut externals: Vec<(Instant, usize, bool)> = s
        .downs
        .iter()
        .flat_map(|&(i, at, for_ms)| {
            let down = t0 + Duration::from_millis(at);
            [(down, i, true), (down + Duration::from_millis(for_ms), i, false)]
        })
        .collect();
    externals.sort_by_key(|e| Reverse(e.0));
    let mut saved: Vec<Option<Vec<BoxState>>> = vec![None; others.len()];
    let mut went_down: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut last_read_delivered: Option<Instant> = None;
    let mut latest_admission: Option<Instant> = None;

    loop {
        iterations += 1;
        prop_assert!(iterations < 2_000_000, "the rollout does not end");
        // Events first: a host's end is known before the actions the same input started.
        while let Some(event) = machine.poll_event() {
            if let EventKind::HostRetry { host, attempt, .. } = &event.kind {
                let h: usize = host.as_str()[1..].parse().expect("index");
                prop_assert!(s.retry_unreachable, "host {h} tried again without retry_unreachable");
                prop_assert_eq!(*attempt, 2, "host {} tried a third time", h);
                prop_assert_eq!(
                    last_end[h],
                    Some(HostOutcome::Unreachable),
                    "host {} retried but did not end unreachable",
                    h
                );
                prop_assert!(!no_more_starts, "host {h} tried again after the rollout stopped");
                // The retry round comes after the last batch: every host of the plan has ended.
                let open: Vec<usize> = (0..n).filter(|&q| finished[q] == 0).collect();
                prop_assert!(open.is_empty(), "host {h} tried again before hosts {open:?} ended");
                retried[h] += 1;
                prop_assert_eq!(retried[h], 1, "host {} tried again twice", h);
                // Its unreachable end no longer counts against max_failures.
                failures -= 1;
                last_end[h] = None;
            }
            if let EventKind::Warning { message, .. } = &event.kind {
                if message.starts_with("not tried again (strategy.retry_unreachable)") {
                    round_refused = true;
                }
            }
            if let EventKind::HostFinished { host, outcome, .. } = &event.kind {
                let h: usize = host.as_str()[1..].parse().expect("index");
                finished[h] += 1;
                last_end[h] = Some(*outcome);
                if matches!(outcome, HostOutcome::Failed | HostOutcome::Unreachable) {
                    failures += 1;
                    if failures > max_failures {
                        no_more_starts = true;
                    }
                }
            }
            events.push(event);
        }
        while let Some(action) = machine.poll_action() {
            let p = action.host().0;
            let h = index[p];
            prop_assert!(!outstanding[h], "two actions at once for host {h}");
            prop_assert!(!skip[p], "host {h} is skipped but was acted on: {action:?}");
            outstanding[h] = true;
            let f = s.faults[h];
            let latency = Duration::from_millis(rng.next() % 2000);
            let mut snapshot = None;
            let m = &mut model[h];
            let lb_change =
                matches!(action, Action::SetState { .. } | Action::SetWeight { .. } | Action::Restore { .. });
            if lb_change || matches!(action, Action::ShutdownSessions { .. }) {
                touched[h] = true;
            }
            let (result, delay) = match action {
                Action::Connect { attempt, .. } => {
                    prop_assert!(!no_more_starts, "host {h} started after the rollout stopped");
                    connects[h] += 1;
                    prop_assert_eq!(attempt, connects[h], "host {}: the connect's attempt is its count", h);
                    prop_assert!(
                        connects[h] <= 1 + u32::from(s.retry_unreachable),
                        "host {h} connected {} times",
                        connects[h]
                    );
                    prop_assert!(!paused || resumed, "host {h} started while paused");
                    if s.window == Window::Batches {
                        // Strict batches: every host of the batches before has ended.
                        let b = batch_of[p].expect("a started host is in a batch");
                        let open = (0..plan.hosts.len())
                            .filter(|&q| batch_of[q].is_some_and(|c| c < b))
                            .find(|&q| finished[index[q]] == 0);
                        prop_assert!(
                            open.is_none(),
                            "host {h} of batch {b} started before host {open:?} of an earlier batch ended"
                        );
                    }
                    match f {
                        Fault::Unreachable => (err(ErrorKind::Unreachable), latency),
                        Fault::UnreachableOnce if connects[h] == 1 => (err(ErrorKind::Unreachable), latency),
                        Fault::Unauthorized => (err(ErrorKind::Unauthorized), latency),
                        _ => {
                            connected[h] = true;
                            (ActionResult::Done, latency)
                        }
                    }
                }
                Action::ReadBackend { .. } => {
                    snapshot = Some(now);
                    (ActionResult::Backend(backend(&model, &others)), latency)
                }
                Action::SetState { state, .. } => match (state, f) {
                    (AdminState::Drain, Fault::DrainRefused) => (err(ErrorKind::Rejected), latency),
                    (AdminState::Maint, Fault::MaintTimesOut)
                        if m.steps_ok <= s.staged && !m.step_started =>
                    {
                        m.boxes.iter_mut().for_each(|b| b.admin = state);
                        (err(ErrorKind::Timeout), latency)
                    }
                    (AdminState::Ready, Fault::ReadyRefused) if m.step_started => {
                        (err(ErrorKind::Rejected), latency)
                    }
                    _ => {
                        if state == AdminState::Drain {
                            latest_admission = latest_admission.max(last_read_delivered);
                        }
                        if state == AdminState::Maint {
                            // The changeset out of rotation starts here (stage steps ran before).
                            m.step_started = true;
                        }
                        m.boxes.iter_mut().for_each(|b| b.admin = state);
                        (ActionResult::Done, latency)
                    }
                },
                Action::SetWeight { weight, .. } => {
                    m.boxes.iter_mut().for_each(|b| b.weight = b.configured * u32::from(weight.get()) / 100);
                    (ActionResult::Done, latency)
                }
                Action::Restore { to, .. } => {
                    let ramp_step =
                        to.iter().zip(&s.initial[h]).any(|(t, i)| t.weight != i.weight || t.admin != i.admin);
                    if f == Fault::RampRefused && ramp_step && to.iter().all(|t| t.admin == AdminState::Ready)
                    {
                        (err(ErrorKind::Rejected), latency)
                    } else {
                        prop_assert_eq!(to.len(), m.boxes.len());
                        for t in &to {
                            let b = (0..boxes)
                                .find(|&b| endpoint(b) == t.instance)
                                .expect("a box of the backend");
                            prop_assert!(t.weight <= 256, "weight {} above 256", t.weight);
                            m.boxes[b].admin = t.admin;
                            m.boxes[b].weight = t.weight;
                        }
                        (ActionResult::Done, latency)
                    }
                }
                Action::WaitDrained { timeout, .. } => match f {
                    Fault::DrainTimeout => (err(ErrorKind::Timeout), timeout),
                    _ => (ActionResult::Done, latency),
                },
                Action::ShutdownSessions { .. } => (ActionResult::Done, latency),
                Action::RunStep { step, .. } if step < s.staged => {
                    // A stage step: before the host is touched, and before any other step.
                    prop_assert!(
                        !touched[h] && !m.step_started,
                        "stage step {step} of host {h} after its take-out"
                    );
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
                Action::RunStep { step, .. } => {
                    prop_assert!(
                        m.steps_ok >= s.staged,
                        "host {h}: a step out of rotation before its stage steps"
                    );
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
                Action::ProbeHealth { .. } => {
                    prop_assert!(s.http.is_some(), "an HTTP check for host {h} without health.http");
                    prop_assert!(!m.in_rotation(), "HTTP check on host {h} while in rotation");
                    prop_assert!(
                        s.health.is_none() || m.health_ok,
                        "HTTP check on host {h} before its health command passed"
                    );
                    m.probe_attempts += 1;
                    match f {
                        Fault::ProbeFails(times) if m.probe_attempts <= times => {
                            (err(ErrorKind::Unreachable), Duration::from_millis(rng.next() % 50))
                        }
                        _ => {
                            m.probe_ok = true;
                            (ActionResult::Done, Duration::from_millis(rng.next() % 50))
                        }
                    }
                }
                Action::MarkDown { .. } => {
                    prop_assert!(
                        s.checks_while_out && s.lb_up,
                        "host {h} marked DOWN without checks_while_out"
                    );
                    prop_assert!(m.steps_ok == s.steps, "host {h} marked DOWN before its changeset ended");
                    prop_assert!(
                        m.boxes.iter().all(|b| b.admin == AdminState::Drain),
                        "host {h} marked DOWN while not drained: {:?}",
                        m.boxes
                    );
                    m.marked_down = true;
                    (ActionResult::Done, latency)
                }
                Action::WaitUp { timeout, .. } => {
                    // With the checks running while out, a host changed out of rotation waits for
                    // UP only after it was marked DOWN: the UP it waits for is a new check's.
                    // (A server found fully in rotation: the same admin state and weight on every box.)
                    let first = &s.initial[h];
                    let found_in = first.iter().all(BoxState::in_rotation)
                        && first.windows(2).all(|w| w[0].admin == w[1].admin && w[0].weight == w[1].weight);
                    prop_assert!(
                        !(s.checks_while_out && m.step_started && found_in) || m.marked_down,
                        "host {h} waits for UP without having been marked DOWN after its changeset"
                    );
                    let up = m.boxes.iter().all(|b| b.up && b.admin != AdminState::Maint);
                    match f {
                        Fault::WaitUpFails => (err(ErrorKind::Timeout), timeout),
                        _ if !up => (err(ErrorKind::Timeout), timeout),
                        _ => (ActionResult::Done, latency),
                    }
                }
                Action::Close { .. } => {
                    connected[h] = false;
                    (ActionResult::Done, Duration::ZERO)
                }
            };
            let m = &model[h];
            // Into rotation only after the whole changeset and health gate passed, or untouched.
            if m.in_rotation() && m.step_started {
                prop_assert!(
                    m.steps_ok == s.steps
                        && (s.health.is_none() || m.health_ok)
                        && (s.http.is_none() || m.probe_ok),
                    "host {h} back in rotation before its changeset and health gate passed"
                );
            }
            // No box that found a server out of rotation ever has it in rotation.
            for (b, (now_box, first)) in m.boxes.iter().zip(&s.initial[h]).enumerate() {
                prop_assert!(
                    first.in_rotation() || !now_box.in_rotation(),
                    "host {h} was out of rotation on box {b} ({first:?}) and was put in ({now_box:?})"
                );
            }
            if lb_change {
                // The whole backend: never more than `concurrency` out, counting servers already
                // out, except servers that went down by themselves after the last admission.
                let out = model.iter().filter(|m| !m.in_rotation()).count()
                    + others.iter().filter(|o| !o.iter().all(BoxState::in_rotation)).count();
                let excused = went_down
                    .iter()
                    .filter(|(i, at)| {
                        !others[**i].iter().all(BoxState::in_rotation)
                            && latest_admission.is_none_or(|a| **at > a)
                    })
                    .count();
                prop_assert!(
                    out - excused <= concurrency,
                    "{out} servers of the backend out of rotation ({excused} went down by themselves since the last admission), concurrency {concurrency}"
                );
            }
            seq += 1;
            results.insert(seq, (HostId(p), result, snapshot));
            pending.push(Reverse((now + delay, seq)));
        }
        if machine.is_finished() {
            break;
        }
        let next_result = pending.peek().map(|Reverse((at, _))| *at);
        let next_timer = machine.poll_timeout();
        let next_external = externals.last().map(|e| e.0);
        let next_control = [
            cancel_at.filter(|_| !cancelled),
            abort_at.filter(|_| !aborted),
            pause_at.filter(|_| !paused),
            resume_at.filter(|_| !resumed),
        ]
        .into_iter()
        .flatten()
        .min();
        let next = [next_result, next_timer, next_control, next_external].into_iter().flatten().min();
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
        if next_external == Some(next) {
            if let Some((at, i, down)) = externals.pop() {
                if down && saved[i].is_none() {
                    saved[i] = Some(others[i].clone());
                    others[i].iter_mut().for_each(|b| b.up = false);
                    went_down.insert(i, at);
                } else if !down {
                    if let Some(before) = saved[i].take() {
                        others[i] = before;
                    }
                }
            }
            continue;
        }
        if pause_at.is_some_and(|at| at <= now) && !paused {
            paused = true;
            machine.handle_pause(now);
            continue;
        }
        if resume_at.is_some_and(|at| at <= now) && !resumed {
            resumed = true;
            machine.handle_resume(now);
            continue;
        }
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
            if let Some((host, result, snapshot)) = results.remove(&id) {
                outstanding[index[host.0]] = false;
                if snapshot.is_some() {
                    last_read_delivered = snapshot;
                }
                machine.handle_result(host, result, now);
            }
        } else {
            machine.handle_timeout(now);
        }
    }

    // Every host ends exactly once, or twice when tried again; totals add up.
    for h in 0..n {
        prop_assert_eq!(finished[h], 1 + retried[h], "host {} did not end once per attempt", h);
        prop_assert!(connects[h] <= 1 + retried[h], "host {} connected without a retry event", h);
    }
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
    for (p, host) in report.hosts.iter().enumerate() {
        let h = index[p];
        prop_assert_eq!(host.attempts, connects[h].max(1), "host {}: reported attempts", h);
        let m = &model[h];
        let initial = &s.initial[h];
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
        if skip[p] {
            prop_assert_eq!(host.outcome, Some(HostOutcome::Skipped));
            prop_assert!(!touched[h] && m.as_found(initial), "skipped host {h} was touched");
            continue;
        }
        match host.outcome {
            Some(HostOutcome::Succeeded) => {
                prop_assert!(
                    m.as_found(initial),
                    "host {h} succeeded but is not as found: {:?} vs {initial:?}",
                    m.boxes
                );
                prop_assert_eq!(m.steps_ok, s.steps);
            }
            Some(HostOutcome::Failed) => {
                prop_assert!(host.error.is_some(), "host {h} failed without a reason");
                if m.step_started {
                    prop_assert!(!m.in_rotation(), "host {h} failed mid-changeset but is in rotation");
                } else if host.rotation != Rotation::Unknown {
                    prop_assert!(
                        m.as_found(initial),
                        "host {h} failed before its changeset and is not as found"
                    );
                }
            }
            Some(HostOutcome::Unreachable) => {
                prop_assert!(!touched[h] && !m.step_started, "unreachable host {h} was touched");
                // Not tried again only when the setting is off, the rollout stopped, or the
                // window was full of failed hosts out of rotation.
                let outcome = report.outcome;
                let stopped =
                    matches!(outcome, Some(DeploymentOutcome::Stopped | DeploymentOutcome::Cancelled));
                if s.retry_unreachable && !stopped && !round_refused && !aborted {
                    prop_assert_eq!(host.attempts, 2, "host {} ended unreachable and was not tried again", h);
                }
            }
            Some(HostOutcome::Skipped | HostOutcome::Cancelled) if !aborted => {
                prop_assert!(m.as_found(initial) && !m.step_started, "host {h} not deployed but touched");
            }
            _ => {}
        }
    }
    Ok(retried.iter().sum())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn rollout_invariants_hold_for_random_fleets_and_faults(s in scenario()) {
        run(&s)?;
    }

    #[test]
    fn fleets_starting_in_any_state_are_respected_under_each_policy(s in real_fleet()) {
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
        initial: vec![vec![BoxState::READY; 2]; 500],
        others: Vec::new(),
        policy: NotInRotationPolicy::Refuse,
        downs: Vec::new(),
        window: Window::Batches,
        pause_at_ms: None,
        http: None,
        staged: 1,
        retry_unreachable: false,
        checks_while_out: false,
    };
    run(&s).expect("invariants hold");
    let sliding = Scenario {
        window: Window::Sliding,
        pause_ms: 0,
        pause_at_ms: Some((5000, 3000)),
        http: Some((2000, 20)),
        ..s
    };
    run(&sliding).expect("invariants hold with a sliding window and a pause");
    let checked = Scenario { checks_while_out: true, ..sliding };
    run(&checked).expect("invariants hold with the checks running while out");
}

#[test]
fn hosts_unreachable_at_their_turn_are_tried_once_more_with_the_simulator() {
    // 40 hosts: every fifth unreachable at its first connect only, every seventh at every one.
    let faults: Vec<Fault> = (0..40)
        .map(|i| match i {
            i if i % 7 == 3 => Fault::Unreachable,
            i if i % 5 == 1 => Fault::UnreachableOnce,
            _ => Fault::None,
        })
        .collect();
    let unreachable =
        faults.iter().filter(|f| matches!(f, Fault::Unreachable | Fault::UnreachableOnce)).count();
    let s = Scenario {
        concurrency: Amount::Count(4),
        max_failures: Amount::Count(20),
        steps: 2,
        ramp: vec![(50, 500)],
        health: Some((5000, 500)),
        lb_up: true,
        force: false,
        canary: Some((1, Some(1000))),
        pause_ms: 0,
        faults,
        seed: 11,
        cancel_at_ms: None,
        abort_at_ms: None,
        initial: vec![vec![BoxState::READY; 2]; 40],
        others: Vec::new(),
        policy: NotInRotationPolicy::Refuse,
        downs: Vec::new(),
        window: Window::Sliding,
        pause_at_ms: None,
        http: None,
        staged: 0,
        retry_unreachable: true,
        checks_while_out: false,
    };
    assert_eq!(run(&s).expect("invariants hold"), unreachable as u32);
    let batches = Scenario { window: Window::Batches, pause_ms: 200, ..s.clone() };
    assert_eq!(run(&batches).expect("invariants hold with strict batches"), unreachable as u32);
    let off = Scenario { retry_unreachable: false, ..s };
    assert_eq!(run(&off).expect("invariants hold without retries"), 0);
}
