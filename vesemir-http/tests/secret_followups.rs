//! Follow-ups of a deployment with a secret variable: only `***` is stored, so a retry or a
//! rollback that would need the value is refused naming the variable; given again, a retry runs
//! with it and stores and shows `***` only. (Apart from `secrets.rs`: that test captures the
//! logs with a scoped subscriber, which another test running beside it in the same binary can
//! disturb.)

mod secret_unit;
mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use secret_unit::{config, SECRET};
use serde_json::json;
use support::*;
use vesemir_http::{FixedPorts, Server};

/// Waits until deployment `id` has ended, and answers its view.
async fn finished(router: &axum::Router, id: i64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply =
            call(router, Method::GET, &format!("/v1/deployments/{id}"), Some(PAYMENTS), None, &[]).await;
        if !matches!(reply.json["status"].as_str(), Some("queued" | "running")) {
            return reply.json;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_follow_up_runs_a_secret_again_only_when_it_is_given_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::new(2);
    let server = Server::open(&config(&dir.path().join("v.db")), Arc::new(FixedPorts(fleet.ports())))
        .await
        .expect("opens");
    let router = server.router();
    let deploy = |version: &str| {
        json!({ "team": "payments", "application": "vault", "environment": "production",
                "version": version, "variables": { "db_password": SECRET } })
        .to_string()
    };
    let post = |path: String, body: Option<String>| {
        let router = router.clone();
        async move { call(&router, Method::POST, &path, Some(PAYMENTS), body.as_deref(), &[]).await }
    };
    let good = post("/v1/deployments".into(), Some(deploy("1.0.0"))).await;
    assert_eq!(finished(&router, id_of(&good)).await["status"], "succeeded");
    // 2.0.0 fails on web-02 with this password.
    let host = vesemir_core::fake::FakeFleet::host(2);
    fleet.executor.fail_command(&host, &format!("'2.0.0' --password '{SECRET}'"), 7);
    let bad = post("/v1/deployments".into(), Some(deploy("2.0.0"))).await;
    let bad = id_of(&bad);
    assert_eq!(finished(&router, bad).await["status"], "stopped");

    // Only *** is stored: neither a retry nor a rollback runs with it.
    for (path, body) in [
        (format!("/v1/deployments/{bad}/retry"), None),
        ("/v1/applications/vault/environments/production/rollback".to_owned(), None),
    ] {
        let refused = post(path, body).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
        assert_eq!(refused.json["problems"][0]["field"], "variables.db_password", "{}", refused.text);
        assert!(refused.text.contains("not stored"), "{}", refused.text);
    }
    let commands = fleet.executor.commands(&host);
    assert!(!commands.iter().any(|c| c.script.contains("***")), "ran with ***: {commands:?}");

    // Given again (a new one), the retry runs with it, and stores and shows *** only.
    const NEW: &str = "N3wS3cretValue77";
    let body = json!({ "variables": { "db_password": NEW } }).to_string();
    let retry = post(format!("/v1/deployments/{bad}/retry"), Some(body)).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.text);
    let done = finished(&router, id_of(&retry)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let commands = fleet.executor.commands(&host);
    assert!(commands.iter().any(|c| c.script.contains(NEW)), "the host got it: {commands:?}");
    let events = call(
        &router,
        Method::GET,
        &format!("/v1/deployments/{}/events", id_of(&retry)),
        Some(PAYMENTS),
        None,
        &[],
    )
    .await;
    for answer in [&retry.text, &done.to_string(), &events.text] {
        assert!(!answer.contains(NEW) && !answer.contains(SECRET), "an answer shows a secret: {answer}");
    }
    drop(server);
    drop(router);
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("reads");
        assert!(!bytes.windows(NEW.len()).any(|w| w == NEW.as_bytes()), "the database holds the new secret");
    }
}
