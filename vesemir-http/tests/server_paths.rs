//! Texts the API gives callers carry no server file path: a host whose SSH key file is refused
//! (its error names the file) shows `<server path>` in the deployment, its hosts, the history
//! and the event stream; the server's store keeps the full text for the operators.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use support::{id_of, parse_sse, Fleet, TestServer, ADMIN, PAYMENTS};
use vesemir_core::fake::FakeExecutor;
use vesemir_core::ports::{Executor, ExitStatus, FileUpload, OutputSink, RemoteCommand};
use vesemir_core::{Host, PortError};

const KEY: &str = "/etc/vesemir/id_ed25519";

/// The fleet's executor, but every connect is refused the way the SSH adapter refuses a key
/// file others may read: naming the file.
#[derive(Debug)]
struct OpenKeyFile(FakeExecutor);

#[async_trait]
impl Executor for OpenKeyFile {
    async fn connect(&self, host: &Host) -> Result<(), PortError> {
        Err(PortError::Unauthorized {
            target: host.name.to_string(),
            reason: format!(
                "UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {KEY} are too open; run `chmod 600 {KEY}`"
            ),
        })
    }

    async fn run(
        &self,
        host: &Host,
        command: &RemoteCommand,
        output: OutputSink,
    ) -> Result<ExitStatus, PortError> {
        self.0.run(host, command, output).await
    }

    async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError> {
        self.0.upload(host, upload).await
    }

    async fn close(&self, host: &Host) {
        self.0.close(host).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_file_reaches_callers_without_its_path() {
    let fleet = Fleet::new(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = support::config(&dir.path().join("vesemir.db"));
    let mut ports = fleet.ports();
    ports.executor = Arc::new(OpenKeyFile(fleet.executor.clone()));
    let server = vesemir_http::Server::open(&config, Arc::new(vesemir_http::FixedPorts(ports)))
        .await
        .expect("server opens");
    let t = TestServer { router: server.router(), server, fleet: fleet.clone(), dir };

    let reply = t.post(PAYMENTS, &fleet.body("shop", "production", "payments")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = id_of(&reply);
    let deployment = t.wait_finished(id).await;
    let shown = deployment.to_string();
    assert!(shown.contains("UNPROTECTED PRIVATE KEY FILE: permissions 0644 for <server path>"), "{shown}");
    assert!(shown.contains("chmod 600 <server path>"), "{shown}");
    assert!(!shown.contains("/etc/vesemir"), "{shown}");

    let history = t.get(ADMIN, "/v1/applications/shop/environments/production/history").await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    assert!(
        history.text.contains("<server path>") && !history.text.contains("/etc/vesemir"),
        "{}",
        history.text
    );

    let events = t.get(ADMIN, &format!("/v1/deployments/{id}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    let streamed = parse_sse(&events.text);
    assert!(streamed.iter().any(|e| e.data.to_string().contains("<server path>")), "{}", events.text);
    assert!(!events.text.contains("/etc/vesemir"), "{}", events.text);
}
