//! A panic in the rollout task is caught by `run_catching_panics` and answered as a `Crash`
//! naming the hosts that may be out of rotation.

mod support;

use std::sync::Arc;

use support::{fleet, FleetRequests};
use vesemir_core::event::{EventKind, Phase};
use vesemir_core::{run_catching_panics, Control, DriverConfig, Event, EventSink};

/// A sink with a bug: it panics at the first step of a host.
struct PanicsAtStep;

impl EventSink for PanicsAtStep {
    fn emit(&self, event: &Event) {
        if let EventKind::HostPhase { host, phase: Phase::Step { .. } } = &event.kind {
            panic!("sink bug at {host}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_rollout_task_is_a_crash_naming_the_hosts_that_may_be_out() {
    let fleet = fleet(3);
    let ports = fleet.ports();
    let config = DriverConfig::default();
    let request = fleet.request("[strategy]\nconcurrency = 2\n");
    let prepared = vesemir_core::prepare(Arc::new(request), &ports, &config).await.expect("prepares");
    let crash = run_catching_panics(&prepared, &ports, &PanicsAtStep, &Control::new(), &config)
        .await
        .expect_err("the sink panicked");
    assert_eq!(crash.message, "sink bug at web-01");
    assert_eq!(crash.to_string(), "internal error: sink bug at web-01 (a bug: please report)");
    let out: Vec<String> = crash.out_of_rotation().iter().map(ToString::to_string).collect();
    assert!(out.contains(&"web-01".to_owned()), "{out:?}");
    assert!(!out.contains(&"web-03".to_owned()), "web-03 had not started: {out:?}");
    for server in fleet.lb.out_of_rotation() {
        assert!(out.contains(&server.to_string()), "{server} is out but not named: {out:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_panic_the_report_comes_back() {
    let fleet = fleet(2);
    let ports = fleet.ports();
    let config = DriverConfig::default();
    let prepared =
        vesemir_core::prepare(Arc::new(fleet.request("")), &ports, &config).await.expect("prepares");
    let sink = vesemir_core::event::MemorySink::new();
    let report =
        run_catching_panics(&prepared, &ports, &sink, &Control::new(), &config).await.expect("no panic");
    assert!(report.succeeded());
}
