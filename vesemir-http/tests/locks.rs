//! The server's deployments take host locks shared with every other deployer: a host another
//! deployment holds fails the deployment naming the holder, with nothing changed; a free fleet
//! is deployed and its locks given back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{config, Fleet, PAYMENTS};
use vesemir_core::fake::FakeFleet;
use vesemir_core::lock::LockHolder;
use vesemir_core::request::DeploymentRequest;
use vesemir_core::Ports;
use vesemir_http::{LockSettings, PortsError, PortsFactory, Server};

/// The fleet's ports, with host locks as `vesemir serve` configures them.
struct LockingPorts(Ports);

impl PortsFactory for LockingPorts {
    fn ports(&self, _request: &DeploymentRequest) -> Result<Ports, PortsError> {
        Ok(self.0.clone())
    }

    fn locks(&self) -> Option<LockSettings> {
        Some(LockSettings {
            stale_after: Duration::from_secs(3600),
            wait: Duration::ZERO,
            machine: "vesemir serve on admin-1 pid 7".into(),
        })
    }
}

async fn server(fleet: &Fleet, dir: &tempfile::TempDir) -> axum::Router {
    let config = config(&dir.path().join("vesemir.db"));
    let server = Server::open(&config, Arc::new(LockingPorts(fleet.ports()))).await.expect("server opens");
    server.router()
}

async fn finished(router: &axum::Router, id: i64) -> Value {
    for _ in 0..500 {
        let reply = support::call(
            router,
            axum::http::Method::GET,
            &format!("/v1/deployments/{id}"),
            Some(PAYMENTS),
            None,
            &[],
        )
        .await;
        let status = reply.json["status"].as_str().unwrap_or_default().to_owned();
        if !matches!(status.as_str(), "queued" | "running") {
            return reply.json;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("deployment {id} did not finish");
}

async fn submit(router: &axum::Router, fleet: &Fleet) -> i64 {
    let body = fleet.body("shop", "production", "payments").to_string();
    let reply =
        support::call(router, axum::http::Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &[])
            .await;
    reply.json["id"].as_i64().unwrap_or_else(|| panic!("no id: {}", reply.json))
}

#[tokio::test]
async fn a_host_held_by_another_deployer_fails_the_deployment_naming_it_and_nothing_changes() {
    let fleet = Fleet::new(2);
    let cli = LockHolder {
        deployment: "local-1700000000-311-42".into(),
        requested_by: "alice".into(),
        application: "shop".into(),
        environment: "production".into(),
        machine: LockHolder::machine_of("laptop", 311),
        since_unix: 1_700_000_000,
    };
    fleet.executor.locks().hold(&FakeFleet::host(2), cli);
    let dir = tempfile::tempdir().expect("temp dir");
    let router = server(&fleet, &dir).await;
    let id = submit(&router, &fleet).await;
    let done = finished(&router, id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("nothing was changed: web-02 is locked by deployment local-1700000000-311-42 of shop/production (alice on laptop pid 311)"),
        "{error}"
    );
    assert!(fleet.lb.rotation_log().changes.is_empty(), "nothing changed on the load balancer");
    assert!(fleet.executor.commands(&FakeFleet::host(1)).is_empty(), "nothing ran");
    let locked: Vec<String> = fleet.executor.locks().locked().iter().map(ToString::to_string).collect();
    assert_eq!(locked, ["web-02"], "the server gave back what it took; the other's lock stays");
}

#[tokio::test]
async fn a_free_fleet_is_deployed_under_the_servers_locks_and_they_are_given_back() {
    let fleet = Fleet::new(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let router = server(&fleet, &dir).await;
    let id = submit(&router, &fleet).await;
    let done = finished(&router, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(fleet.executor.locks().locked().is_empty(), "released at the end");
    assert_eq!(fleet.executor.commands(&FakeFleet::host(1)).len(), 2, "install and health ran");
}
