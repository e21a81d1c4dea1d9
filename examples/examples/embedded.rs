//! Embedding Vesemir as a library: validate a request, prepare it over ports, run it with a
//! sink that prints each event, and print the summary.
//!
//! The ports here are the core's in-memory fakes (one host is made to fail its install step),
//! so this runs anywhere in a second. A real tool passes the Chef, HAProxy and SSH adapters
//! instead; nothing else changes.
//!
//! Run: `cargo run -p vesemir-examples --example embedded`

use std::sync::Arc;

use vesemir_core::event::{Event, EventSink};
use vesemir_core::fake::{FakeExecutor, FakeInventory, FakeLoadBalancer, FakeServer};
use vesemir_core::name::{BackendName, HostName, ServerName};
use vesemir_core::ports::LbEndpoint;
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::static_inventory::StaticHost;
use vesemir_core::{render, Control, DriverConfig, Host, Ports};

const REQUEST: &str = r#"
application = "shop"
environment = "production"
team = "payments"
version = "2.4.1"
requested_by = "example"

[targets]
tags = ["shop-web"]

[load_balancer]
backend = "be_shop"
instances = [{ address = "127.0.0.1", port = 9001 }, { address = "127.0.0.1", port = 9002 }]
ramp = [{ weight = "25%", hold = "200ms" }]

[strategy]
concurrency = 2
max_failures = 1

[changeset]
steps = [
  { name = "install", run = "apt-get install -y shop={version}", timeout = "5m" },
  { name = "restart", run = "systemctl restart shop" },
]
[changeset.health]
command = "curl -fsS http://127.0.0.1:8080/health"
timeout = "2s"
interval = "200ms"
"#;

/// Prints every event as a timestamped line.
struct Printer;

impl EventSink for Printer {
    fn emit(&self, event: &Event) {
        if let Some(line) = render::line(event) {
            println!("{line}");
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let request = DeploymentRequest::from_toml(REQUEST, &RequestPolicy::permissive())?;

    let inventory = FakeInventory::new();
    let mut servers = Vec::new();
    for i in 1..=5 {
        let name = HostName::new(format!("web-{i}"))?;
        let host = Host::new(name, format!("10.0.0.{i}"))?;
        inventory.add(StaticHost::tagged(host, &["shop-web"]).in_environment("production".parse()?));
        servers.push(FakeServer::new(ServerName::new(format!("web-{i}"))?, format!("10.0.0.{i}")));
    }
    let instances = vec![
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 },
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9002 },
    ];
    let load_balancer = FakeLoadBalancer::new(BackendName::new("be_shop")?, instances, servers);
    let executor = FakeExecutor::new();
    executor.fail_command(&HostName::new("web-3")?, "apt-get install", 100);

    let ports = Ports {
        inventory: Arc::new(inventory),
        load_balancer: Arc::new(load_balancer),
        executor: Arc::new(executor),
    };
    let config = DriverConfig::default();
    let prepared = vesemir_core::prepare(Arc::new(request), &ports, &config).await?;
    let report = vesemir_core::run(&prepared, &ports, &Printer, &Control::new(), &config).await;
    println!("\n{}", render::summary(&report));
    Ok(())
}
