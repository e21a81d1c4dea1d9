//! Time arithmetic past any bound: a rollout given durations no validation would allow (an
//! embedder building its own `RolloutConfig` or `DeploymentRequest`, bypassing validation)
//! never panics computing a deadline.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{check, fleet, serving, FleetRequests};
use vesemir_core::event::{DeploymentOutcome, EventKind};
use vesemir_core::host::Host;
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::plan::{Plan, PlannedHost};
use vesemir_core::ports::{ExitStatus, Weight};
use vesemir_core::request::{
    Amount, Canary, CanaryGate, DrainTimeoutPolicy, OnFailure, RampStep, Strategy, Window,
};
use vesemir_core::rollout::{Action, ActionResult, HealthRetry, Rollout, RolloutConfig, StepLimit};

fn planned(n: usize) -> Vec<PlannedHost> {
    (1..=n)
        .map(|i| {
            PlannedHost::new(
                Host::new(HostName::new(format!("web-{i:02}")).expect("name"), format!("127.0.0.{i}"))
                    .expect("host"),
                ServerName::new(format!("web-{i:02}")).expect("name"),
            )
        })
        .collect()
}

/// A rollout whose every duration is `Duration::MAX`, driven by answering each action at once
/// and jumping to each timer: it must end without a panic.
fn drive_unbounded(health_fails_first: bool) -> Vec<EventKind> {
    let strategy = Strategy {
        concurrency: Amount::Count(1),
        max_failures: Amount::Count(10),
        pause_between_batches: Duration::MAX,
        canary: Some(Canary { hosts: 1, gate: CanaryGate::Hold(Duration::MAX) }),
        on_failure: OnFailure::Stop,
        on_takeover: Default::default(),
        window: Window::Batches,
        retry_unreachable: false,
    };
    let plan = Arc::new(Plan::new(planned(3), &strategy).expect("plan"));
    let config = RolloutConfig {
        steps: vec![StepLimit {
            name: "install".into(),
            timeout: Duration::MAX,
            stage: false,
            retries: None,
        }],
        health_http: None,
        health_command: Some(HealthRetry { timeout: Duration::MAX, interval: Duration::MAX }),
        load_balancer_up: Some(Duration::MAX),
        drain_timeout: Duration::MAX,
        on_drain_timeout: DrainTimeoutPolicy::Fail,
        ramp: vec![RampStep { weight: Weight::percent(10).expect("weight"), hold: Duration::MAX }],
        pause_between_batches: Duration::MAX,
        canary_gate: Some(CanaryGate::Hold(Duration::MAX)),
        retry_unreachable: false,
        checks_while_out: false,
    };
    let mut now = Instant::now();
    let mut machine = Rollout::new(plan, config, now);
    let mut events = Vec::new();
    let mut health_attempts = 0;
    for _ in 0..10_000 {
        while let Some(action) = machine.poll_action() {
            let result = match action {
                Action::ReadBackend { .. } => ActionResult::Backend(serving(&planned(3))),
                Action::RunStep { .. } => ActionResult::Exited(ExitStatus::code(0)),
                Action::RunHealthCheck { .. } => {
                    health_attempts += 1;
                    let code = if health_fails_first && health_attempts % 2 == 1 { 1 } else { 0 };
                    ActionResult::Exited(ExitStatus::code(code))
                }
                _ => ActionResult::Done,
            };
            machine.handle_result(action.host(), result, now);
        }
        while let Some(event) = machine.poll_event() {
            events.push(event.kind);
        }
        if machine.is_finished() {
            return events;
        }
        let at = machine.poll_timeout().expect("a rollout that waits has a timer");
        now = now.max(at);
        machine.handle_timeout(now);
    }
    panic!("the rollout did not end: {events:#?}");
}

#[test]
fn a_rollout_config_with_duration_max_everywhere_never_panics() {
    let events = drive_unbounded(false);
    assert!(
        events.iter().any(|e| matches!(
            e,
            EventKind::DeploymentFinished { outcome: DeploymentOutcome::Succeeded, .. }
        )),
        "{events:#?}"
    );
    // A failed health check with a retry interval past any clock: the retry cannot come in
    // time, so the host fails instead of the arithmetic.
    let events = drive_unbounded(true);
    assert!(events.iter().any(|e| matches!(e, EventKind::DeploymentFinished { .. })), "{events:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_request_built_with_duration_max_runs_through_the_driver_without_panic() {
    let fleet = fleet(2);
    let mut request = fleet.request("");
    request.strategy.pause_between_batches = Duration::MAX;
    request.load_balancer.drain_timeout = Duration::MAX;
    request.load_balancer.ramp =
        vec![RampStep { weight: Weight::percent(50).expect("weight"), hold: Duration::from_secs(1) }];
    for step in &mut request.changeset.steps {
        step.timeout = Duration::MAX;
    }
    if let Some(health) = &mut request.changeset.health.command {
        health.timeout = Duration::MAX;
        health.interval = Duration::MAX;
    }
    request.changeset.health.load_balancer_up = Some(Duration::MAX);
    let out = check(&fleet, request).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
}
