//! Bounded inputs: every duration of a request has an upper bound (7 days), with an error
//! naming the field, the value and the limit.

mod support;

use support::{fleet, FleetRequests};
use vesemir_core::request::{DeploymentRequest, RequestPolicy, MAX_REQUEST_DURATION};

fn problems(text: &str) -> Vec<String> {
    match DeploymentRequest::from_toml(text, &RequestPolicy::permissive()) {
        Ok(_) => panic!("should have been refused:\n{text}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_huge_pause_is_refused_naming_the_field_and_the_limit() {
    let fleet = fleet(2);
    let text = fleet.request_toml("[strategy]\npause_between_batches = \"10000000000000000000s\"\n");
    assert_eq!(
        problems(&text),
        ["strategy.pause_between_batches: 10000000000000000000s is above the limit of 7d"]
    );
}

#[test]
fn every_request_duration_is_bounded_at_seven_days() {
    let fleet = fleet(2);
    let text = fleet.request_toml(
        r#"
[load_balancer]
backend = "be_web"
instances = [{ address = "127.0.0.1", port = 9001 }]
drain_timeout = "8d"
ramp = [{ weight = "10%", hold = "9999999999h" }]

[strategy]
canary = { hosts = 1, hold = "7d 1s" }

[changeset]
steps = [{ name = "install", run = "install", timeout = "200000000000000000000000s" }]
[changeset.health]
command = "check"
timeout = "1000000d"
interval = "8d"
up_timeout = "400w"
"#,
    );
    let problems = problems(&text);
    let fields: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap_or("")).collect();
    assert_eq!(
        fields,
        [
            "load_balancer.drain_timeout",
            "load_balancer.ramp[0].hold",
            "strategy.canary.hold",
            "changeset.steps[0].timeout",
            "changeset.health.timeout",
            "changeset.health.interval",
            "changeset.health.up_timeout",
        ],
        "{problems:#?}"
    );
    assert!(problems[0].ends_with("8d is above the limit of 7d"), "{problems:#?}");
    // Too large for a duration at all: refused as not a duration, still naming the field.
    assert!(problems[3].contains("is not a duration"), "{problems:#?}");
    let at_limit = fleet.request_toml("[strategy]\npause_between_batches = \"7d\"\n");
    let request =
        DeploymentRequest::from_toml(&at_limit, &RequestPolicy::permissive()).expect("7d is allowed");
    assert_eq!(request.strategy.pause_between_batches, MAX_REQUEST_DURATION);
}
