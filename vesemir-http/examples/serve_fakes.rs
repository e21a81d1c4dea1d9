//! Runs the server by hand over in-memory fake ports: every request's listed hosts become
//! servers of a fake load balancer, and every command succeeds after `--latency` (default
//! 200 ms). Try it with curl:
//!
//! ```text
//! cargo run -p vesemir-http --example serve_fakes -- vesemir-http/examples/serve_fakes.toml
//! curl -H 'Authorization: Bearer demo-token' -d @vesemir-http/examples/request.json \
//!      http://127.0.0.1:8080/v1/deployments
//! curl -N -H 'Authorization: Bearer demo-token' http://127.0.0.1:8080/v1/deployments/1/events
//! ```

use std::sync::Arc;
use std::time::Duration;

use vesemir_core::fake::{FakeExecutor, FakeInventory, FakeLoadBalancer, FakeServer};
use vesemir_core::name::ServerName;
use vesemir_core::request::{DeploymentRequest, LbInstances, Targets};
use vesemir_core::Ports;
use vesemir_http::{PortsError, PortsFactory, ServerConfig};

/// A fresh fake fleet for each request.
struct Fakes {
    latency: Duration,
}

impl PortsFactory for Fakes {
    fn ports(&self, request: &DeploymentRequest) -> Result<Ports, PortsError> {
        let Targets::Hosts(hosts) = &request.targets else {
            let reason = "this demo deploys only to listed hosts (targets.hosts)".into();
            return Err(PortsError::Unsupported { reason });
        };
        let LbInstances::Listed(instances) = &request.load_balancer.instances else {
            let reason = "this demo needs listed load balancer instances".into();
            return Err(PortsError::Unsupported { reason });
        };
        let servers = hosts
            .iter()
            .map(|h| {
                let name = ServerName::new(h.name.as_str()).map_err(|e| PortsError::Unsupported {
                    reason: format!("host {} cannot be a server name: {e}", h.name),
                })?;
                Ok(FakeServer::new(name, h.address.clone()))
            })
            .collect::<Result<Vec<_>, PortsError>>()?;
        let executor = FakeExecutor::new();
        executor.set_latency(self.latency);
        Ok(Ports {
            inventory: Arc::new(FakeInventory::new()),
            load_balancer: Arc::new(FakeLoadBalancer::new(
                request.load_balancer.backend.clone(),
                instances.clone(),
                servers,
            )),
            executor: Arc::new(executor),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: serve_fakes CONFIG.toml [--latency 200ms]")?;
    let latency = match (args.next().as_deref(), args.next()) {
        (Some("--latency"), Some(value)) => humantime::parse_duration(&value)?,
        _ => Duration::from_millis(200),
    };
    let config = ServerConfig::from_toml(&std::fs::read_to_string(&path)?)?;
    vesemir_http::serve(config, Arc::new(Fakes { latency })).await?;
    Ok(())
}
