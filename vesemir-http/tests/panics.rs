//! A panic in a deployment's task, through the real server in-process: the deployment is
//! recorded as failed with an internal error naming the hosts that may be out of rotation,
//! never left `running`.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use support::*;
use vesemir_core::ports::{Executor, ExitStatus, FileUpload, Inventory, OutputSink, RemoteCommand, Selector};
use vesemir_core::{Host, PortError, Ports};
use vesemir_http::{FixedPorts, Server};

/// A panic payload whose drop panics: the driver drops the payload of a panicked port call in
/// its own task, so this puts a panic in the rollout task itself, mid-rollout.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("a panic in the rollout task");
    }
}

/// The fleet's executor, except that the install step panics with a [`Bomb`].
#[derive(Debug)]
struct BombAtInstall(Arc<dyn Executor>);

#[async_trait::async_trait]
impl Executor for BombAtInstall {
    async fn connect(&self, host: &Host) -> Result<(), PortError> {
        self.0.connect(host).await
    }

    async fn run(
        &self,
        host: &Host,
        command: &RemoteCommand,
        output: OutputSink,
    ) -> Result<ExitStatus, PortError> {
        if command.script.starts_with("install-app") {
            std::panic::panic_any(Bomb);
        }
        self.0.run(host, command, output).await
    }

    async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError> {
        self.0.upload(host, upload).await
    }

    async fn close(&self, host: &Host) {
        self.0.close(host).await;
    }
}

/// An inventory whose search panics: a panic while the deployment is prepared.
#[derive(Debug)]
struct PanickingInventory;

#[async_trait::async_trait]
impl Inventory for PanickingInventory {
    async fn discover(&self, _selector: &Selector) -> Result<Vec<Host>, PortError> {
        panic!("a panic while preparing");
    }
}

async fn server_over(ports: Ports, fleet: Fleet) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(&dir.path().join("vesemir.db"));
    let server = Server::open(&config, Arc::new(FixedPorts(ports))).await.expect("server opens");
    let router = server.router();
    TestServer { server, router, fleet, dir }
}

#[tokio::test]
async fn a_panic_mid_rollout_is_a_failed_deployment_naming_the_hosts_left_out() {
    let fleet = Fleet::new(3);
    let mut ports = fleet.ports();
    ports.executor = Arc::new(BombAtInstall(ports.executor.clone()));
    let server = server_over(ports, fleet.clone()).await;
    let reply = server.post(PAYMENTS, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let deployment = server.wait_finished(id_of(&reply)).await;

    assert_eq!(deployment["status"], "failed", "{deployment}");
    let error = deployment["error"].as_str().unwrap_or_default();
    assert_eq!(error, "internal error: a panic in the rollout task (a bug: please report)", "{deployment}");
    assert_eq!(deployment["out_of_rotation"], serde_json::json!(["web-01"]), "{deployment}");
    let out: Vec<String> = fleet.lb.out_of_rotation().iter().map(ToString::to_string).collect();
    assert_eq!(out, ["web-01"], "the load balancer agrees");
}

#[tokio::test]
async fn a_panic_while_preparing_is_a_failed_deployment_with_nothing_left_out() {
    let fleet = Fleet::new(2);
    let mut ports = fleet.ports();
    ports.inventory = Arc::new(PanickingInventory);
    let server = server_over(ports, fleet.clone()).await;
    let body = fleet.body("shop", "production", "payments");
    let reply = server.post(PAYMENTS, &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let deployment = server.wait_finished(id_of(&reply)).await;

    assert_eq!(deployment["status"], "failed", "{deployment}");
    assert_eq!(
        deployment["error"], "internal error: a panic while preparing (a bug: please report)",
        "{deployment}"
    );
    assert_eq!(deployment["out_of_rotation"], serde_json::json!([]), "{deployment}");
    assert!(fleet.lb.out_of_rotation().is_empty());
}
