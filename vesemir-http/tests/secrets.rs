//! Secret variables: used on the hosts, and never stored (the SQLite file's bytes), logged (at
//! debug level) or shown by the API (every answer, the event stream included).

mod secret_unit;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use secret_unit::{config, SECRET};
use serde_json::json;
use support::*;
use vesemir_http::{FixedPorts, LogConfig, Server};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime: the scoped subscriber sees the spawned deployment tasks too.
#[tokio::test(flavor = "current_thread")]
async fn a_secret_variable_reaches_the_host_and_nothing_else() {
    let buffer = Buffer::default();
    let logs = LogConfig { json: true, level: Some("debug".into()) };
    let _guard = tracing::subscriber::set_default(vesemir_http::telemetry::subscriber(&logs, buffer.clone()));
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::new(2);
    let server = Server::open(&config(&dir.path().join("v.db")), Arc::new(FixedPorts(fleet.ports())))
        .await
        .expect("opens");
    let router = server.router();
    let mut answers = Vec::new();

    let body = json!({ "team": "payments", "application": "vault", "environment": "production",
                       "version": "1.0.0", "variables": { "db_password": SECRET } });
    let accepted =
        call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body.to_string()), &[]).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let id = id_of(&accepted);
    answers.push(accepted.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let done = loop {
        let reply =
            call(&router, Method::GET, &format!("/v1/deployments/{id}"), Some(PAYMENTS), None, &[]).await;
        if !matches!(reply.json["status"].as_str(), Some("queued" | "running")) {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.json["status"], "succeeded", "{}", done.text);
    answers.push(done.text);
    for path in ["/v1/deployments", &format!("/v1/deployments/{id}/events")] {
        answers.push(call(&router, Method::GET, path, Some(PAYMENTS), None, &[]).await.text);
    }
    // A secret outside its pattern is refused without being echoed.
    let bad = json!({ "team": "payments", "application": "vault", "environment": "production",
                      "version": "1.0.1", "variables": { "db_password": "short!" } });
    let refused =
        call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&bad.to_string()), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(
        refused.text.contains("variables.db_password") && !refused.text.contains("short!"),
        "{}",
        refused.text
    );

    let commands = fleet.executor.commands(&vesemir_core::fake::FakeFleet::host(1));
    assert!(commands.iter().any(|c| c.script.contains(SECRET)), "the host got it: {commands:?}");
    for answer in &answers {
        assert!(!answer.contains(SECRET), "an API answer shows the secret: {answer}");
    }
    assert!(
        answers.iter().any(|a| a.contains("\"events\"") || a.contains("deployment_finished")),
        "{answers:?}"
    );
    drop(server);
    drop(router);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = String::from_utf8(buffer.0.lock().expect("not poisoned").clone()).expect("utf-8");
    assert!(logs.contains("\"level\":\"DEBUG\""), "debug logs were captured:\n{logs}");
    assert!(!logs.contains(SECRET), "the logs show the secret:\n{logs}");
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("reads");
        files += 1;
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
    assert!(files >= 1, "the database file was read");
}
