//! Pause and resume: while paused no host starts (by event order and by time), hosts in flight
//! finish, gates keep waiting, and cancel while paused ends the deployment. A property test on
//! the bare state machine over random fleets, then stories through the async driver.

mod support;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use support::{check_with, fleet, serving, FleetRequests};
use vesemir_core::event::{DeploymentOutcome, Event, EventKind, HostOutcome, Phase};
use vesemir_core::host::Host;
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::plan::{Plan, PlannedHost};
use vesemir_core::ports::ExitStatus;
use vesemir_core::request::{
    Amount, Canary, CanaryGate, DrainTimeoutPolicy, Strategy as RolloutStrategy, Window,
};
use vesemir_core::rollout::{Action, ActionResult, HealthRetry, HostId, Rollout, RolloutConfig, StepLimit};
use vesemir_core::{Control, Progress};

/// One operator order at a moment of virtual time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Pause,
    Resume,
    Confirm,
    Cancel,
}

#[derive(Debug, Clone)]
struct Scenario {
    hosts: usize,
    concurrency: u32,
    canary: Option<Option<u64>>,
    pause_ms: u64,
    orders: Vec<(u64, Order)>,
    seed: u64,
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![4 => Just(Order::Pause), 4 => Just(Order::Resume), 2 => Just(Order::Confirm), 1 => Just(Order::Cancel)]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1usize..60,
        1u32..8,
        prop::option::of(prop::option::of(0u64..5000)),
        prop_oneof![Just(0u64), 1u64..3000],
        prop::collection::vec((0u64..40_000, order()), 0..12),
        any::<u64>(),
    )
        .prop_map(|(hosts, concurrency, canary, pause_ms, mut orders, seed)| {
            orders.sort_by_key(|(at, _)| *at);
            Scenario { hosts, concurrency, canary, pause_ms, orders, seed }
        })
}

/// What a simulated action is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Done,
    Exited,
    Backend,
}

/// Runs `s` on the bare state machine (every action succeeds after a pseudo-random latency)
/// and returns its events. After the last order, a resume and (if needed) confirmations let it
/// end.
fn simulate(s: &Scenario) -> Result<Vec<Event>, TestCaseError> {
    let hosts: Vec<PlannedHost> = (0..s.hosts)
        .map(|i| {
            let address = format!("127.0.{}.{}", i / 250, i % 250 + 1);
            PlannedHost::new(
                Host::new(HostName::new(format!("h{i:03}")).expect("name"), address).expect("host"),
                ServerName::new(format!("s{i:03}")).expect("name"),
            )
        })
        .collect();
    let strategy = RolloutStrategy {
        on_failure: vesemir_core::request::OnFailure::Stop,
        on_takeover: vesemir_core::request::OnTakeover::Resume,
        concurrency: Amount::Count(s.concurrency),
        max_failures: Amount::Count(0),
        pause_between_batches: Duration::from_millis(s.pause_ms),
        canary: s.canary.map(|hold| Canary {
            hosts: 1,
            gate: hold.map_or(CanaryGate::Confirm, |ms| CanaryGate::Hold(Duration::from_millis(ms))),
        }),
        // As a request without `window`: strict batches when there is a pause between them.
        window: if s.pause_ms == 0 { Window::Sliding } else { Window::Batches },
        retry_unreachable: false,
    };
    let plan = Arc::new(Plan::new(hosts, &strategy).expect("plan"));
    let config = RolloutConfig {
        steps: vec![StepLimit {
            name: "install".into(),
            timeout: Duration::from_secs(60),
            stage: false,
            retries: None,
        }],
        health_http: None,
        health_command: Some(HealthRetry {
            timeout: Duration::from_secs(5),
            interval: Duration::from_secs(1),
        }),
        load_balancer_up: None,
        drain_timeout: Duration::from_secs(10),
        on_drain_timeout: DrainTimeoutPolicy::Fail,
        ramp: Vec::new(),
        pause_between_batches: strategy.pause_between_batches,
        canary_gate: strategy.canary.map(|c| c.gate),
        retry_unreachable: false,
        checks_while_out: false,
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut rng = s.seed | 1;
    let mut next_latency = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        Duration::from_millis(rng % 1500)
    };
    let backend = serving(&plan.hosts);
    let mut machine = Rollout::new(plan, config, now);
    // (when the result comes, ticket, host, what kind of action it answers)
    let mut pending: BinaryHeap<Reverse<(Instant, u64, usize, Answer)>> = BinaryHeap::new();
    let mut orders = s.orders.iter().map(|&(ms, o)| (t0 + Duration::from_millis(ms), o)).peekable();
    let mut events = Vec::new();
    let mut ticket = 0u64;
    for _ in 0..1_000_000 {
        while let Some(action) = machine.poll_action() {
            if matches!(action, Action::Connect { .. }) {
                prop_assert!(!machine.is_paused(), "host {} started while paused", action.host().0);
            }
            ticket += 1;
            let answer = match action {
                Action::RunStep { .. } | Action::RunHealthCheck { .. } => Answer::Exited,
                Action::ReadBackend { .. } => Answer::Backend,
                _ => Answer::Done,
            };
            pending.push(Reverse((now + next_latency(), ticket, action.host().0, answer)));
        }
        while let Some(event) = machine.poll_event() {
            events.push(event);
        }
        if machine.is_finished() {
            return Ok(events);
        }
        let next_result = pending.peek().map(|Reverse((at, ..))| *at);
        let next_order = orders.peek().map(|(at, _)| *at);
        let next = [next_result, machine.poll_timeout(), next_order].into_iter().flatten().min();
        let Some(next) = next else {
            // Idle: every order was given. Resume, then confirm, so that the run can end.
            if machine.is_paused() {
                machine.handle_resume(now);
            } else {
                machine.handle_confirm(now);
            }
            continue;
        };
        now = now.max(next);
        if next_order == Some(next) {
            let Some((_, order)) = orders.next() else { continue };
            match order {
                Order::Pause => machine.handle_pause(now),
                Order::Resume => machine.handle_resume(now),
                Order::Confirm => machine.handle_confirm(now),
                Order::Cancel => machine.handle_cancel(now),
            }
        } else if next_result == Some(next) {
            let Some(Reverse((_, _, host, answer))) = pending.pop() else { continue };
            let result = match answer {
                Answer::Exited => ActionResult::Exited(ExitStatus::code(0)),
                Answer::Backend => ActionResult::Backend(backend.clone()),
                Answer::Done => ActionResult::Done,
            };
            machine.handle_result(HostId(host), result, now);
        } else {
            machine.handle_timeout(now);
        }
    }
    Err(TestCaseError::fail("the rollout does not end"))
}

/// The moments (elapsed) each host entered `connecting`, by event.
fn starts(events: &[Event]) -> Vec<(u64, Duration)> {
    events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::HostPhase { phase: Phase::Connecting, .. }))
        .map(|e| (e.seq, e.elapsed))
        .collect()
}

/// The paused spans: (seq, elapsed) of each `paused` and of its `resumed` (or the end).
fn paused_spans(events: &[Event]) -> Vec<((u64, Duration), (u64, Duration))> {
    let mut spans = Vec::new();
    let mut open = None;
    for e in events {
        match &e.kind {
            EventKind::Paused { .. } => open = Some((e.seq, e.elapsed)),
            EventKind::Resumed | EventKind::DeploymentFinished { .. } => {
                if let Some(start) = open.take() {
                    spans.push((start, (e.seq, e.elapsed)));
                }
            }
            _ => {}
        }
    }
    spans
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_host_starts_while_paused(s in scenario()) {
        let events = simulate(&s)?;
        let spans = paused_spans(&events);
        for (seq, at) in starts(&events) {
            for ((from_seq, from), (to_seq, to)) in &spans {
                prop_assert!(
                    !(seq > *from_seq && seq < *to_seq),
                    "a host started (event {seq}) between paused (event {from_seq}) and resumed (event {to_seq})"
                );
                prop_assert!(
                    !(at > *from && at < *to),
                    "a host started at {at:?}, while paused from {from:?} to {to:?}"
                );
            }
        }
        // Pauses and resumes alternate, starting with a pause.
        let marks: Vec<bool> = events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Paused { .. } => Some(true),
                EventKind::Resumed => Some(false),
                _ => None,
            })
            .collect();
        prop_assert!(marks.iter().enumerate().all(|(i, &paused)| paused == (i % 2 == 0)), "{marks:?}");
        // Every host ends once; hosts that started succeeded (nothing fails here).
        let progress = Progress::from_events(&events);
        prop_assert_eq!(progress.totals().total(), s.hosts);
        prop_assert!(!progress.is_paused());
        let cancelled = s.orders.iter().any(|(_, o)| *o == Order::Cancel);
        for host in progress.hosts() {
            match host.outcome {
                Some(HostOutcome::Succeeded) => {}
                Some(HostOutcome::Cancelled) => {
                    prop_assert!(cancelled, "{} cancelled without a cancel", host.name);
                    prop_assert!(host.started.is_none(), "{} was in flight and did not finish", host.name);
                }
                other => prop_assert!(false, "{} ended {other:?}", host.name),
            }
        }
    }
}

/// Host `i` of the fake fleet.
fn name(i: usize) -> String {
    support::host(i).to_string()
}

/// When each host entered `connecting`, by name.
fn started_at(events: &[Event], host: &str) -> Option<Duration> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::HostPhase { host: h, phase: Phase::Connecting } if h.as_str() == host => Some(e.elapsed),
        _ => None,
    })
}

fn finished_at(events: &[Event], host: &str) -> Option<(Duration, HostOutcome)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::HostFinished { host: h, outcome, .. } if h.as_str() == host => Some((e.elapsed, *outcome)),
        _ => None,
    })
}

fn elapsed_of(events: &[Event], pick: impl Fn(&EventKind) -> bool) -> Vec<Duration> {
    events.iter().filter(|e| pick(&e.kind)).map(|e| e.elapsed).collect()
}

#[tokio::test(start_paused = true)]
async fn pause_in_batch_two_lets_it_finish_and_starts_nothing_until_resume() {
    let fleet = fleet(6);
    fleet.executor.set_latency(Duration::from_secs(10));
    let control = Control::new();
    let operator = control.clone();
    tokio::spawn(async move {
        // Batch 1 (web-01, web-02) ends after ~20s (a step and a health check of 10s each);
        // batch 2 starts at once.
        tokio::time::sleep(Duration::from_secs(25)).await;
        operator.pause();
        assert!(operator.is_paused());
        tokio::time::sleep(Duration::from_secs(300)).await;
        operator.resume();
    });
    let out = check_with(&fleet, fleet.request("[strategy]\nconcurrency = 2\n"), control).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let paused = elapsed_of(&out.events, |k| matches!(k, EventKind::Paused { in_flight: 2 }));
    let resumed = elapsed_of(&out.events, |k| matches!(k, EventKind::Resumed));
    assert_eq!((paused.len(), resumed.len()), (1, 1), "{}", out.log);
    let (paused, resumed) = (paused[0], resumed[0]);
    assert_eq!(resumed - paused, Duration::from_secs(300), "{}", out.log);
    // Batch 2 was in flight at the pause: it finished while paused.
    for i in [3, 4] {
        assert!(started_at(&out.events, &name(i)).is_some_and(|t| t < paused), "{}", out.log);
        let (at, outcome) = finished_at(&out.events, &name(i)).expect("finished");
        assert!(at > paused && at < resumed && outcome == HostOutcome::Succeeded, "{}", out.log);
    }
    // Batch 3 waited for the resume.
    for i in [5, 6] {
        assert!(started_at(&out.events, &name(i)).is_some_and(|t| t >= resumed), "{}", out.log);
    }
    assert!(
        out.log.contains("paused: no new host starts until resumed; 2 hosts in flight finish"),
        "{}",
        out.log
    );
    assert!(out.log.contains("resumed: hosts start again"), "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn cancel_while_paused_ends_the_deployment() {
    let fleet = fleet(4);
    fleet.executor.set_latency(Duration::from_secs(10));
    let control = Control::new();
    let operator = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        operator.pause();
        tokio::time::sleep(Duration::from_secs(60)).await;
        operator.cancel();
    });
    let out = check_with(&fleet, fleet.request("[strategy]\nconcurrency = 1\n"), control).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Cancelled), "{}", out.log);
    assert_eq!(out.report.totals.succeeded, 1, "web-01 was in flight and finished: {}", out.log);
    assert_eq!(out.report.totals.cancelled, 3, "{}", out.log);
    assert!(out.report.elapsed >= Duration::from_secs(65), "ended at the cancel, not before");
    assert!(out.report.elapsed < Duration::from_secs(70), "ended at the cancel: {:?}", out.report.elapsed);
    assert!(!out.events.iter().any(|e| matches!(e.kind, EventKind::Resumed)));
}

#[tokio::test(start_paused = true)]
async fn pause_while_the_canary_waits_keeps_waiting_even_once_confirmed() {
    let fleet = fleet(3);
    let control = Control::new();
    let operator = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(100)).await;
        operator.pause();
        tokio::time::sleep(Duration::from_secs(100)).await;
        operator.confirm();
        tokio::time::sleep(Duration::from_secs(100)).await;
        operator.resume();
    });
    let request = fleet.request("[strategy]\nconcurrency = 2\ncanary = { hosts = 1, confirm = true }\n");
    let out = check_with(&fleet, request, control).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let waiting = elapsed_of(&out.events, |k| matches!(k, EventKind::Waiting { .. }));
    let paused = elapsed_of(&out.events, |k| matches!(k, EventKind::Paused { in_flight: 0 }));
    assert!(waiting[0] < paused[0], "paused while the canary waited: {}", out.log);
    for i in [2, 3] {
        assert!(
            started_at(&out.events, &name(i)).is_some_and(|t| t >= Duration::from_secs(300)),
            "confirmed at 200s while paused: nothing started before the resume at 300s\n{}",
            out.log
        );
    }
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_after_the_end_change_nothing() {
    let fleet = fleet(1);
    let control = Control::new();
    let out = check_with(&fleet, fleet.request(""), control.clone()).await;
    control.pause();
    control.resume();
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded));
    assert!(!out.events.iter().any(|e| matches!(e.kind, EventKind::Paused { .. } | EventKind::Resumed)));
    let json = serde_json::to_value(Event {
        seq: 3,
        elapsed: Duration::from_secs(2),
        kind: EventKind::Paused { in_flight: 1 },
    })
    .expect("serializes");
    assert_eq!(json, serde_json::json!({"seq": 3, "elapsed": "2s", "type": "paused", "in_flight": 1}));
    let json =
        serde_json::to_value(Event { seq: 4, elapsed: Duration::from_secs(3), kind: EventKind::Resumed })
            .expect("serializes");
    assert_eq!(json, serde_json::json!({"seq": 4, "elapsed": "3s", "type": "resumed"}));
}
