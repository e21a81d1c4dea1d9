//! Step retries: a step that declares `retries` runs again after a transient failure (listed
//! exit codes, an unreachable host), waiting longer each time, with an event per try; anything
//! else (another exit code, a timeout, tries spent) fails the host as before.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{check, fleet, host, serving, FleetRequests};
use vesemir_core::event::{DeploymentOutcome, Event, EventKind, HostOutcome, Phase, Rotation};
use vesemir_core::host::Host;
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::plan::{Plan, PlannedHost};
use vesemir_core::ports::ExitStatus;
use vesemir_core::request::{
    Amount, DeploymentRequest, DrainTimeoutPolicy, RequestPolicy, StepRetries, Strategy as RolloutStrategy,
};
use vesemir_core::rollout::{Action, ActionResult, ErrorKind, HostError, Rollout, RolloutConfig, StepLimit};

const RETRIES: &str = r#"
[changeset]
steps = [{ name = "install", run = "install-shop {version}", timeout = "1m", retries = { count = 2, delay = "2s", exit_codes = [75] } }]
[changeset.health]
command = "check-shop"
timeout = "10s"
interval = "1s"
"#;

/// The step-retry events of a run: (elapsed, attempt, attempts, reason, delay).
fn retries(events: &[Event]) -> Vec<(Duration, u32, u32, String, Duration)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepRetry { attempt, attempts, reason, delay, .. } => {
                Some((e.elapsed, *attempt, *attempts, reason.clone(), *delay))
            }
            _ => None,
        })
        .collect()
}

/// When web-01's health check first started (elapsed): the step has passed by then.
fn first_health_check(events: &[Event]) -> Option<Duration> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::HostPhase { host, phase: Phase::HealthCheck { .. } } if host.as_str() == "web-01" => {
            Some(e.elapsed)
        }
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn a_step_failing_with_a_listed_code_runs_again_after_a_growing_wait_and_the_host_succeeds() {
    let fleet = fleet(2);
    fleet.executor.fail_command_times(&host(1), "install-shop", 75, 2);
    let out = check(&fleet, fleet.request(RETRIES)).await;

    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let installs =
        fleet.executor.commands(&host(1)).iter().filter(|c| c.script.contains("install-shop")).count();
    assert_eq!(installs, 3, "the first try and two retries");
    let seen = retries(&out.events);
    let what: Vec<_> = seen.iter().map(|(_, a, n, r, d)| (*a, *n, r.as_str(), *d)).collect();
    assert_eq!(
        what,
        [
            (1, 3, "the command ended with exit code 75", Duration::from_secs(2)),
            (2, 3, "the command ended with exit code 75", Duration::from_secs(4)),
        ]
    );
    // Each next try began only after the wait announced: the next failure (or the health
    // check, after the last try passed) comes no earlier.
    let mut after = seen.iter().map(|(at, ..)| *at).skip(1).collect::<Vec<_>>();
    after.push(first_health_check(&out.events).expect("a health check"));
    for ((announced, .., delay), next) in seen.iter().zip(&after) {
        assert!(*next >= *announced + *delay, "next try at {next:?}, announced at {announced:?}");
    }
    assert!(
        out.log.contains("web-01: step \"install\" failed (the command ended with exit code 75), try 1 of 3: trying again in 2s"),
        "{}",
        out.log
    );
    assert_eq!(out.host("web-01").rotation, Rotation::InRotation);
    let other =
        fleet.executor.commands(&host(2)).iter().filter(|c| c.script.contains("install-shop")).count();
    assert_eq!(other, 1, "a healthy host runs its step once");
}

#[tokio::test(start_paused = true)]
async fn an_exit_code_not_listed_fails_at_once() {
    let fleet = fleet(1);
    fleet.executor.fail_command_times(&host(1), "install-shop", 1, 1);
    let out = check(&fleet, fleet.request(RETRIES)).await;

    let h = out.host("web-01");
    assert_eq!(h.outcome, Some(HostOutcome::Failed), "{}", out.log);
    assert_eq!(h.error.as_deref(), Some("the command ended with exit code 1"));
    assert!(retries(&out.events).is_empty());
    assert_eq!(
        fleet.executor.commands(&host(1)).iter().filter(|c| c.script.contains("install-shop")).count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_tries_are_spent_the_host_fails_naming_the_last_try() {
    let fleet = fleet(1);
    fleet.executor.fail_command(&host(1), "install-shop", 75);
    let out = check(&fleet, fleet.request(RETRIES)).await;

    let h = out.host("web-01");
    assert_eq!(h.outcome, Some(HostOutcome::Failed), "{}", out.log);
    assert_eq!(h.phase, Phase::Step { number: 1, name: "install".into() });
    assert_eq!(h.error.as_deref(), Some("the command ended with exit code 75 (attempt 3, the last)"));
    assert_eq!(h.rotation, Rotation::OutOfRotation);
    assert_eq!(retries(&out.events).len(), 2);
    assert_eq!(
        fleet.executor.commands(&host(1)).iter().filter(|c| c.script.contains("install-shop")).count(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn without_exit_codes_every_non_zero_code_is_retried() {
    let fleet = fleet(1);
    fleet.executor.fail_command_times(&host(1), "install-shop", 3, 1);
    let request = fleet.request(&RETRIES.replace(", exit_codes = [75]", ""));
    let out = check(&fleet, request).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert_eq!(retries(&out.events).len(), 1);
}

/// Drives a one-host rollout by hand, answering its step with `step_results` in turn (then 0)
/// and everything else with success; returns its events.
fn drive_one_host(retries: Option<StepRetries>, step_results: Vec<ActionResult>) -> Vec<Event> {
    let planned = vec![PlannedHost::new(
        Host::new(HostName::new("web-01").expect("name"), "127.0.1.1").expect("host"),
        ServerName::new("web-01").expect("name"),
    )];
    let strategy = RolloutStrategy {
        concurrency: Amount::Count(1),
        max_failures: Amount::Count(0),
        pause_between_batches: Duration::ZERO,
        canary: None,
        on_failure: vesemir_core::request::OnFailure::Stop,
        on_takeover: vesemir_core::request::OnTakeover::Resume,
        window: vesemir_core::request::Window::Sliding,
        retry_unreachable: false,
    };
    let plan = Arc::new(Plan::new(planned, &strategy).expect("plan"));
    let backend = serving(&plan.hosts);
    let config = RolloutConfig {
        steps: vec![StepLimit {
            name: "install".into(),
            timeout: Duration::from_secs(60),
            retries,
            stage: false,
        }],
        health_http: None,
        health_command: None,
        load_balancer_up: None,
        drain_timeout: Duration::from_secs(10),
        on_drain_timeout: DrainTimeoutPolicy::Fail,
        ramp: Vec::new(),
        pause_between_batches: Duration::ZERO,
        canary_gate: None,
        retry_unreachable: false,
        checks_while_out: false,
    };
    let mut now = Instant::now();
    let mut machine = Rollout::new(plan, config, now);
    let mut step_results = step_results.into_iter();
    let mut events = Vec::new();
    for _ in 0..10_000 {
        while let Some(action) = machine.poll_action() {
            let host = action.host();
            let result = match action {
                Action::RunStep { .. } => {
                    step_results.next().unwrap_or(ActionResult::Exited(ExitStatus::code(0)))
                }
                Action::ReadBackend { .. } => ActionResult::Backend(backend.clone()),
                _ => ActionResult::Done,
            };
            machine.handle_result(host, result, now);
        }
        while let Some(event) = machine.poll_event() {
            events.push(event);
        }
        if machine.is_finished() {
            return events;
        }
        if let Some(at) = machine.poll_timeout() {
            now = now.max(at);
            machine.handle_timeout(now);
        }
    }
    panic!("the rollout does not end: {events:#?}");
}

fn retries_of(count: u32) -> Option<StepRetries> {
    Some(StepRetries { count, delay: Duration::from_millis(500), exit_codes: vec![75] })
}

fn host_outcome(events: &[Event]) -> Option<(HostOutcome, Option<String>)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::HostFinished { outcome, error, .. } => Some((*outcome, error.clone())),
        _ => None,
    })
}

#[test]
fn a_host_that_could_not_be_reached_during_a_step_is_tried_again() {
    let lost = ActionResult::Failed(HostError::new(ErrorKind::Unreachable, "connection reset by peer"));
    let events = drive_one_host(retries_of(1), vec![lost]);
    assert_eq!(host_outcome(&events), Some((HostOutcome::Succeeded, None)));
    assert_eq!(retries(&events).len(), 1);
    assert_eq!(retries(&events)[0].3, "connection reset by peer");
}

#[test]
fn a_step_that_timed_out_or_was_killed_is_never_tried_again() {
    let timed_out = ActionResult::Failed(HostError::new(ErrorKind::Timeout, "the step took longer than 1m"));
    let events = drive_one_host(retries_of(3), vec![timed_out]);
    assert_eq!(host_outcome(&events).map(|(o, _)| o), Some(HostOutcome::Failed));
    assert!(retries(&events).is_empty());

    let killed = ActionResult::Exited(ExitStatus { code: None, signal: Some("KILL".into()) });
    let events = drive_one_host(retries_of(3), vec![killed]);
    assert_eq!(host_outcome(&events).map(|(o, _)| o), Some(HostOutcome::Failed));
    assert!(retries(&events).is_empty());
}

#[test]
fn without_retries_an_unreachable_step_fails_the_host_as_before() {
    let lost = ActionResult::Failed(HostError::new(ErrorKind::Unreachable, "connection reset by peer"));
    let events = drive_one_host(None, vec![lost]);
    assert_eq!(
        host_outcome(&events),
        Some((HostOutcome::Failed, Some("connection reset by peer".to_owned())))
    );
}

fn problems(toml_retries: &str) -> Vec<(String, String)> {
    let fleet = fleet(1);
    let text = fleet.request_toml(&RETRIES.replace(
        "retries = { count = 2, delay = \"2s\", exit_codes = [75] }",
        &format!("retries = {toml_retries}"),
    ));
    match DeploymentRequest::from_toml(&text, &RequestPolicy::permissive()) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors().iter().map(|f| (f.field.clone(), f.message.clone())).collect(),
    }
}

#[test]
fn bad_retries_are_refused_naming_the_field_and_the_fix() {
    let field = "changeset.steps[0].retries";
    let p = problems("{ count = 0 }");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, format!("{field}.count"));
    assert!(p[0].1.contains("must be 1 to 10"), "{p:?}");

    let p = problems("{ count = 2, delay = \"5m\" }");
    assert_eq!(p[0].0, format!("{field}.delay"), "{p:?}");
    assert!(p[0].1.contains("at most 1m"), "{p:?}");

    let p = problems("{ count = 2, exit_codes = [75, 0, 300] }");
    let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, [format!("{field}.exit_codes[1]"), format!("{field}.exit_codes[2]")], "{p:?}");

    let p = problems("{ count = 2, exit_codes = [] }");
    assert_eq!(p[0].0, format!("{field}.exit_codes"), "{p:?}");

    let p = problems("{ count = 2, backoff = \"1s\" }");
    assert!(p.iter().any(|(f, m)| f.contains("retries") && m.contains("unknown field")), "{p:?}");

    assert!(problems("{ count = 3 }").is_empty());
}
