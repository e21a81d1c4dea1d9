//! `strategy.retry_unreachable` on a fake fleet and virtual time, through the driver (with host
//! locks): a host that could not be reached when its turn came is tried once more after the last
//! batch; it ends deployed if it came back, unreachable (once more, never a third time) if not;
//! a rollout that stopped or was cancelled tries nothing again; without the setting nothing
//! changes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{fleet, host, Fleet, FleetRequests};
use vesemir_core::event::{DeploymentOutcome, EventKind, HostOutcome, MemorySink, Rotation};
use vesemir_core::host_locks::LockPolicy;
use vesemir_core::lock::LockHolder;
use vesemir_core::name::HostName;
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{render, Control, DeploymentReport, DriverConfig, Event, EventSink};

/// Passes events to a memory sink and brings `heal` back once it ended unreachable: a host
/// whose SSH server was down when its turn came and came back later.
struct Healing {
    events: MemorySink,
    fleet: Fleet,
    heal: Option<HostName>,
}

impl EventSink for Healing {
    fn emit(&self, event: &Event) {
        if let EventKind::HostFinished { host, outcome: HostOutcome::Unreachable, .. } = &event.kind {
            if self.heal.as_ref() == Some(host) {
                self.fleet.executor.set_reachable(host);
            }
        }
        self.events.emit(event);
    }
}

struct Run {
    report: DeploymentReport,
    events: Vec<Event>,
    log: String,
}

fn locking() -> DriverConfig {
    let holder = LockHolder {
        deployment: "d-1".into(),
        requested_by: "tests".into(),
        application: "shop".into(),
        environment: "production".into(),
        machine: LockHolder::machine_of("ci-runner-7", 311),
        since_unix: 1_700_000_000,
    };
    let policy =
        LockPolicy { holder, stale_after: Duration::from_secs(600), wait: Duration::ZERO, on_wait: None };
    DriverConfig { locks: Some(policy), ..DriverConfig::default() }
}

/// Runs `extra` on `fleet` with host locks, `down` unreachable from the start, healed after its
/// first end if `heal`.
async fn deploy(fleet: &Fleet, extra: &str, down: usize, heal: bool) -> Run {
    fleet.executor.set_unreachable(&host(down));
    let sink = Healing { events: MemorySink::new(), fleet: fleet.clone(), heal: heal.then(|| host(down)) };
    let ports = fleet.ports();
    let config = locking();
    let prepared =
        vesemir_core::prepare(Arc::new(fleet.request(extra)), &ports, &config).await.expect("prepares");
    let report = vesemir_core::run(&prepared, &ports, &sink, &Control::new(), &config).await;
    let events = sink.events.events();
    let log = events.iter().filter_map(render::line).collect::<Vec<_>>().join("\n");
    Run { report, events, log }
}

fn retries(events: &[Event]) -> Vec<(String, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::HostRetry { host, attempt, .. } => Some((host.to_string(), *attempt)),
            _ => None,
        })
        .collect()
}

fn ends(events: &[Event], name: &str) -> Vec<(u64, HostOutcome)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::HostFinished { host, outcome, .. } if host.as_str() == name => Some((e.seq, *outcome)),
            _ => None,
        })
        .collect()
}

const RETRY: &str = "[strategy]\nretry_unreachable = true\nmax_failures = 1\n";

#[tokio::test(start_paused = true)]
async fn a_host_back_before_the_end_is_tried_again_after_the_last_batch_and_ends_updated() {
    let fleet = fleet(4);
    let run = deploy(&fleet, RETRY, 2, true).await;

    assert_eq!(run.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", run.log);
    assert_eq!(run.report.totals.succeeded, 4);
    assert_eq!(run.report.totals.unreachable, 0);
    let web02 = &run.report.hosts[1];
    assert_eq!(
        (web02.outcome, web02.rotation, web02.attempts),
        (Some(HostOutcome::Succeeded), Rotation::InRotation, 2)
    );
    assert!(run.report.hosts.iter().filter(|h| h.name.as_str() != "web-02").all(|h| h.attempts == 1));
    // Tried once, after every other host ended, with the reason it failed the first time.
    assert_eq!(retries(&run.events), [("web-02".to_owned(), 2)], "{}", run.log);
    let retry_seq = run.events.iter().find(|e| matches!(e.kind, EventKind::HostRetry { .. })).map(|e| e.seq);
    let retry_seq = retry_seq.expect("a retry event");
    for other in ["web-01", "web-03", "web-04"] {
        assert!(
            ends(&run.events, other)[0].0 < retry_seq,
            "{other} ended before the retry round: {}",
            run.log
        );
    }
    let web02_ends = ends(&run.events, "web-02");
    assert_eq!(
        web02_ends.iter().map(|e| e.1).collect::<Vec<_>>(),
        [HostOutcome::Unreachable, HostOutcome::Succeeded]
    );
    assert!(run.log.contains("web-02: trying it again (attempt 2, strategy.retry_unreachable): its first attempt ended unreachable: taking the host lock failed"), "{}", run.log);
    // Every server back in rotation, every lock given back (web-02's claimed on its retry).
    assert!(fleet.lb.out_of_rotation().is_empty());
    assert!(fleet.executor.locks().locked().is_empty(), "{:?}", fleet.executor.locks().locked());
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 1);
    let summary = render::summary(&run.report);
    assert!(
        summary.contains(
            "Tried again after ending unreachable (strategy.retry_unreachable): web-02 updated on attempt 2."
        ),
        "{summary}"
    );
    // The JSON report says so too; hosts tried once keep the shape they had.
    let json = serde_json::to_value(&run.report).expect("json");
    assert_eq!(json["hosts"][1]["attempts"], 2);
    assert!(json["hosts"][0].get("attempts").is_none());
    let event = run.events.iter().find(|e| matches!(e.kind, EventKind::HostRetry { .. })).expect("retry");
    let json = serde_json::to_value(event).expect("json");
    assert_eq!(json["type"], "host_retry");
    assert_eq!(json["host"], "web-02");
    assert_eq!(json["attempt"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_host_still_down_on_its_retry_ends_unreachable_and_is_not_tried_a_third_time() {
    let fleet = fleet(4);
    let run = deploy(&fleet, RETRY, 3, false).await;

    assert_eq!(run.report.outcome, Some(DeploymentOutcome::CompletedWithFailures), "{}", run.log);
    assert_eq!((run.report.totals.succeeded, run.report.totals.unreachable), (3, 1));
    let web03 = &run.report.hosts[2];
    assert_eq!(
        (web03.outcome, web03.rotation, web03.attempts),
        (Some(HostOutcome::Unreachable), Rotation::InRotation, 2)
    );
    assert_eq!(retries(&run.events), [("web-03".to_owned(), 2)], "{}", run.log);
    assert_eq!(ends(&run.events, "web-03").len(), 2);
    // The rest of the fleet serves; nothing is left out or locked.
    assert!(fleet.lb.out_of_rotation().is_empty());
    assert!(fleet.executor.locks().locked().is_empty());
    let summary = render::summary(&run.report);
    assert!(
        summary.contains("web-03 (127.0.1.3) UNREACHABLE during connecting (attempt 2 of 2)"),
        "{summary}"
    );
    assert!(summary.contains("web-03 unreachable on attempt 2"), "{summary}");
}

#[tokio::test(start_paused = true)]
async fn a_rollout_stopped_on_max_failures_tries_nothing_again() {
    let fleet = fleet(4);
    let run = deploy(&fleet, "[strategy]\nretry_unreachable = true\n", 2, true).await;
    assert_eq!(run.report.outcome, Some(DeploymentOutcome::Stopped), "{}", run.log);
    assert!(retries(&run.events).is_empty(), "{}", run.log);
    assert_eq!(run.report.hosts[1].attempts, 1);
    assert!(fleet.executor.locks().locked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_retry_unreachable_nothing_is_tried_again() {
    let fleet = fleet(3);
    let run = deploy(&fleet, "[strategy]\nmax_failures = 1\n", 1, true).await;
    assert_eq!(run.report.outcome, Some(DeploymentOutcome::CompletedWithFailures), "{}", run.log);
    assert!(retries(&run.events).is_empty());
    assert_eq!(
        (run.report.hosts[0].outcome, run.report.hosts[0].attempts),
        (Some(HostOutcome::Unreachable), 1)
    );
    assert!(!render::summary(&run.report).contains("Tried again"));
}

#[tokio::test(start_paused = true)]
async fn a_host_that_went_down_after_its_lock_was_taken_keeps_it_until_its_retry() {
    // web-01 answers while the locks are taken, then its SSH server goes away: its first
    // connect fails, its lock stays held (not refreshed) until it is tried again.
    let fleet = fleet(3);
    let sink = Healing { events: MemorySink::new(), fleet: fleet.clone(), heal: Some(host(1)) };
    let ports = fleet.ports();
    let config = locking();
    let prepared =
        vesemir_core::prepare(Arc::new(fleet.request(RETRY)), &ports, &config).await.expect("prepares");
    fleet.executor.set_unreachable(&host(1));
    let report = vesemir_core::run(&prepared, &ports, &sink, &Control::new(), &config).await;
    let events = sink.events.events();
    let log = events.iter().filter_map(render::line).collect::<Vec<_>>().join("\n");
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded), "{log}");
    assert_eq!(report.hosts[0].attempts, 2);
    assert!(!log.contains("host lock"), "no lock warnings: {log}");
    assert!(fleet.executor.locks().locked().is_empty());
}

#[test]
fn the_setting_is_a_boolean_named_in_errors() {
    let fleet = fleet(1);
    let parse =
        |extra: &str| DeploymentRequest::from_toml(&fleet.request_toml(extra), &RequestPolicy::permissive());
    assert!(!parse("").expect("valid").strategy.retry_unreachable);
    assert!(parse("[strategy]\nretry_unreachable = true\n").expect("valid").strategy.retry_unreachable);
    let err = parse("[strategy]\nretry_unreachable = \"yes\"\n").expect_err("refused").to_string();
    assert!(err.contains("retry_unreachable"), "{err}");
    let json = serde_json::json!({ "concurrency": 1, "retry_unreachable": 2 });
    let err = serde_json::from_value::<vesemir_core::request::spec::StrategySpec>(json).expect_err("refused");
    assert!(err.to_string().contains("expected a boolean"), "{err}");
}
