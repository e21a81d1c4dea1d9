//! Shared helpers for the core's tests: a fleet of fakes, a request for it, and `check` that
//! runs a deployment on virtual time and returns a readable log.

#![allow(dead_code)]

use std::sync::Arc;

use vesemir_core::event::MemorySink;
use vesemir_core::fake::FakeFleet;
use vesemir_core::name::{HostName, ServerName};
use vesemir_core::plan::PlannedHost;
use vesemir_core::ports::{AdminState, InstanceState, LbEndpoint, Operational, ServerState, ServerStatus};
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{render, Control, DeploymentReport, DriverConfig, Event};

/// The fakes behind a fleet of `n` hosts named `web-01`... behind servers of the same names.
pub type Fleet = FakeFleet;

pub fn host(i: usize) -> HostName {
    FakeFleet::host(i)
}

pub fn server(i: usize) -> ServerName {
    FakeFleet::server(i)
}

pub fn instances() -> Vec<LbEndpoint> {
    vec![
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 },
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9002 },
    ]
}

/// A fleet of `size` hosts behind the two test instances.
pub fn fleet(size: usize) -> Fleet {
    FakeFleet::new(size, instances())
}

/// Requests for a fleet's hosts.
pub trait FleetRequests {
    /// A request for the whole fleet; `extra` is appended TOML (a `[strategy]` table...).
    fn request(&self, extra: &str) -> DeploymentRequest;
    /// The TOML of that request.
    fn request_toml(&self, extra: &str) -> String;
}

impl FleetRequests for Fleet {
    fn request(&self, extra: &str) -> DeploymentRequest {
        let text = self.request_toml(extra);
        DeploymentRequest::from_toml(&text, &RequestPolicy::permissive())
            .unwrap_or_else(|e| panic!("request does not validate: {e}\n{text}"))
    }

    fn request_toml(&self, extra: &str) -> String {
        let hosts: Vec<String> = (1..=self.size)
            .map(|i| format!("{{ name = \"{}\", address = \"{}\" }}", host(i), FakeFleet::address(i)))
            .collect();
        let has = |table: &str| extra.contains(table);
        let mut text = format!(
            r#"application = "shop"
environment = "production"
team = "payments"
version = "2.0.0"
requested_by = "tests"

[targets]
hosts = [{}]
"#,
            hosts.join(", ")
        );
        if !has("[load_balancer]") {
            text.push_str(
                r#"
[load_balancer]
backend = "be_web"
instances = [{ address = "127.0.0.1", port = 9001 }, { address = "127.0.0.1", port = 9002 }]
"#,
            );
        }
        if !has("[changeset]") {
            text.push_str(
                r#"
[changeset]
steps = [{ name = "install", run = "install-shop {version}", timeout = "1m" }]
[changeset.health]
command = "check-shop"
timeout = "10s"
interval = "1s"
"#,
            );
        }
        text.push_str(extra);
        text
    }
}

/// What a deployment did: its log lines, events and report.
pub struct Outcome {
    pub log: String,
    pub events: Vec<Event>,
    pub report: DeploymentReport,
}

impl Outcome {
    pub fn host(&self, name: &str) -> &vesemir_core::report::HostReport {
        self.report.hosts.iter().find(|h| h.name.as_str() == name).unwrap_or_else(|| panic!("no host {name}"))
    }
}

/// Prepares and runs `request` on `fleet` (virtual time), with `control`.
pub async fn check_with(fleet: &Fleet, request: DeploymentRequest, control: Control) -> Outcome {
    let ports = fleet.ports();
    let config = DriverConfig::default();
    let prepared = vesemir_core::prepare(Arc::new(request), &ports, &config).await.expect("prepares");
    let sink = MemorySink::new();
    let report = vesemir_core::run(&prepared, &ports, &sink, &control, &config).await;
    let events = sink.events();
    let log = events.iter().filter_map(render::line).collect::<Vec<_>>().join("\n");
    Outcome { log, events, report }
}

pub async fn check(fleet: &Fleet, request: DeploymentRequest) -> Outcome {
    check_with(fleet, request, Control::new()).await
}

/// The backend as one load balancer instance lists `hosts`' servers: all in rotation at full
/// weight (what the rollout's backend reads see when a test answers actions by hand).
pub fn serving(hosts: &[PlannedHost]) -> Vec<ServerState> {
    let instance = LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9999 };
    ServerState::gather(hosts.iter().map(|h| {
        let state = InstanceState {
            instance: instance.clone(),
            status: ServerStatus::Up,
            weight: 100,
            configured_weight: 100,
            sessions: 0,
            admin: AdminState::Ready,
            operational: Operational::Up,
            check: None,
            address: Some(h.host.address.clone()),
        };
        (h.server.clone(), state)
    }))
}
