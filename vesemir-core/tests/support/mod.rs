//! Shared helpers for the core's tests: a fleet of fakes, a request for it, and `check` that
//! runs a deployment on virtual time and returns a readable log.

#![allow(dead_code)]

use std::sync::Arc;

use vesemir_core::event::MemorySink;
use vesemir_core::fake::{FakeExecutor, FakeInventory, FakeLoadBalancer, FakeServer};
use vesemir_core::name::{BackendName, HostName, ServerName};
use vesemir_core::ports::LbEndpoint;
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{render, Control, DeploymentReport, DriverConfig, Event, Ports};

/// The fakes behind a fleet of `n` hosts named `web-01`... behind servers of the same names.
pub struct Fleet {
    pub inventory: FakeInventory,
    pub lb: FakeLoadBalancer,
    pub executor: FakeExecutor,
    pub size: usize,
}

pub fn host(i: usize) -> HostName {
    HostName::new(format!("web-{i:02}")).expect("valid host name")
}

pub fn server(i: usize) -> ServerName {
    ServerName::new(format!("web-{i:02}")).expect("valid server name")
}

pub fn instances() -> Vec<LbEndpoint> {
    vec![
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 },
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9002 },
    ]
}

impl Fleet {
    pub fn new(size: usize) -> Self {
        let servers = (1..=size).map(|i| FakeServer::new(server(i), format!("127.0.1.{i}"))).collect();
        Self {
            inventory: FakeInventory::new(),
            lb: FakeLoadBalancer::new(BackendName::new("be_web").expect("valid"), instances(), servers),
            executor: FakeExecutor::new(),
            size,
        }
    }

    pub fn ports(&self) -> Ports {
        Ports {
            inventory: Arc::new(self.inventory.clone()),
            load_balancer: Arc::new(self.lb.clone()),
            executor: Arc::new(self.executor.clone()),
        }
    }

    /// A request for the whole fleet; `extra` is appended TOML (a `[strategy]` table...).
    pub fn request(&self, extra: &str) -> DeploymentRequest {
        let text = self.request_toml(extra);
        DeploymentRequest::from_toml(&text, &RequestPolicy::permissive())
            .unwrap_or_else(|e| panic!("request does not validate: {e}\n{text}"))
    }

    pub fn request_toml(&self, extra: &str) -> String {
        let hosts: Vec<String> = (1..=self.size)
            .map(|i| format!("{{ name = \"{}\", address = \"127.0.1.{i}\" }}", host(i)))
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
