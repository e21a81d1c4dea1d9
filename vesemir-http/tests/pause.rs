//! Pause, resume and confirm through the API: a paused deployment starts no host until resumed
//! (measured from its events), shows as paused in its view, its links and `/metrics`; a canary
//! confirmed while paused waits for the resume.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use support::{id_of, parse_sse, Fleet, TestServer, ADMIN, PAYMENTS, SEARCH};

async fn order(t: &TestServer, token: &str, id: i64, what: &str) -> support::Reply {
    t.call(Method::POST, &format!("/v1/deployments/{id}/{what}"), Some(token), None).await
}

async fn events(t: &TestServer, id: i64) -> Vec<Value> {
    let reply = t.get(ADMIN, &format!("/v1/deployments/{id}/events")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    parse_sse(&reply.text).into_iter().map(|e| e.data).collect()
}

fn elapsed(event: &Value) -> Duration {
    humantime::parse_duration(event["elapsed"].as_str().expect("elapsed")).expect("a duration")
}

async fn metric(t: &TestServer, line: &str) -> bool {
    t.raw(Method::GET, "/metrics", Some(ADMIN), None, &[]).await.text.lines().any(|l| l == line)
}

#[tokio::test]
async fn a_paused_deployment_starts_no_host_until_resumed() {
    let fleet = Fleet::new(4);
    fleet.executor.set_latency(Duration::from_millis(150));
    let t = TestServer::start(fleet).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    let running = t.wait_for(id, "running", |d| d["status"] == "running").await;
    assert_eq!(running["paused"], false);
    assert_eq!(running["links"]["pause"], format!("/v1/deployments/{id}/pause"), "{running}");
    assert!(running["links"].get("resume").is_none(), "{running}");

    assert_eq!(order(&t, SEARCH, id, "pause").await.status, StatusCode::NOT_FOUND, "another team's");
    let paused = order(&t, PAYMENTS, id, "pause").await;
    assert_eq!(paused.status, StatusCode::ACCEPTED, "{}", paused.text);
    assert_eq!(paused.json["paused"], true, "{}", paused.text);
    assert_eq!(paused.json["status"], "running", "the status stays: {}", paused.text);
    assert_eq!(paused.json["links"]["resume"], format!("/v1/deployments/{id}/resume"));
    assert!(paused.json["links"].get("pause").is_none(), "{}", paused.text);
    assert_eq!(order(&t, PAYMENTS, id, "pause").await.status, StatusCode::ACCEPTED, "pausing twice is fine");
    assert!(metric(&t, "vesemir_deployments_paused 1").await);

    // The host in flight finishes (about 0.3 s at this latency; its rows reach the store a
    // little later, so a read right after the pause may not show it started yet); then nothing
    // moves.
    t.wait_for(id, "the host in flight done", |d| {
        let hosts = d["hosts"].as_array().cloned().unwrap_or_default();
        hosts.iter().all(|h| !h["outcome"].is_null() || h["phase"] == "pending")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let settled = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await.json;
    let done =
        |d: &Value| d["hosts"].as_array().map_or(0, |h| h.iter().filter(|h| !h["outcome"].is_null()).count());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let still = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await;
    assert_eq!(done(&still.json), done(&settled), "no host started while paused: {}", still.text);
    assert!(done(&still.json) < 4, "{}", still.text);
    assert_eq!(still.json["paused"], true);

    let resumed = order(&t, PAYMENTS, id, "resume").await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.text);
    assert_eq!(resumed.json["paused"], false);
    let again = order(&t, PAYMENTS, id, "resume").await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.json["detail"].as_str().is_some_and(|e| e.contains("not paused")), "{}", again.text);
    assert_eq!(t.wait_finished(id).await["status"], "succeeded");
    assert!(metric(&t, "vesemir_deployments_paused 0").await);
    assert_eq!(order(&t, PAYMENTS, id, "pause").await.status, StatusCode::CONFLICT, "ended");

    let events = events(&t, id).await;
    let at = |kind: &str| events.iter().filter(|e| e["type"] == kind).map(elapsed).collect::<Vec<_>>();
    let (paused, resumed) = (at("paused"), at("resumed"));
    assert_eq!((paused.len(), resumed.len()), (1, 1), "{events:#?}");
    assert!(resumed[0] - paused[0] >= Duration::from_millis(800));
    let starts: Vec<Duration> = events
        .iter()
        .filter(|e| e["type"] == "host_phase" && e["phase"]["phase"] == "connecting")
        .map(elapsed)
        .collect();
    assert_eq!(starts.len(), 4);
    assert!(starts.iter().all(|s| !(*s > paused[0] && *s < resumed[0])), "{starts:?} {paused:?} {resumed:?}");
    assert!(starts.iter().any(|s| *s >= resumed[0]), "hosts started after the resume");
}

#[tokio::test]
async fn a_canary_confirmed_while_paused_goes_on_once_resumed() {
    let t = TestServer::start(Fleet::new(3)).await;
    let mut body = t.fleet.body("shop", "production", "payments");
    body["strategy"]["canary"] = json!({ "hosts": 1, "confirm": true });
    let id = id_of(&t.post(PAYMENTS, &body).await);
    let waiting = t
        .wait_for(id, "the canary waiting", |d| {
            d["links"]["confirm"] == format!("/v1/deployments/{id}/confirm")
                && d["hosts"][0]["outcome"] == "succeeded"
        })
        .await;
    assert!(waiting["hosts"][1]["outcome"].is_null(), "{waiting}");
    assert_eq!(order(&t, PAYMENTS, id, "pause").await.status, StatusCode::ACCEPTED);
    let confirmed = order(&t, PAYMENTS, id, "confirm").await;
    assert_eq!(confirmed.status, StatusCode::ACCEPTED, "{}", confirmed.text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await;
    assert_eq!(still.json["paused"], true, "{}", still.text);
    assert!(still.json["links"].get("confirm").is_none(), "confirmed: {}", still.text);
    assert!(
        still.json["hosts"][1]["outcome"].is_null() && still.json["hosts"][1]["phase"] == "pending",
        "{}",
        still.text
    );
    assert_eq!(order(&t, PAYMENTS, id, "resume").await.status, StatusCode::ACCEPTED);
    assert_eq!(t.wait_finished(id).await["status"], "succeeded");
}

#[tokio::test]
async fn cancel_while_paused_ends_the_deployment() {
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(100));
    let t = TestServer::start(fleet).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    t.wait_for(id, "running", |d| d["status"] == "running").await;
    assert_eq!(order(&t, PAYMENTS, id, "pause").await.status, StatusCode::ACCEPTED);
    assert_eq!(order(&t, PAYMENTS, id, "cancel").await.status, StatusCode::ACCEPTED);
    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["paused"], false, "an ended deployment is not paused");
    assert!(t.fleet.lb.out_of_rotation().is_empty());
    assert!(metric(&t, "vesemir_deployments_paused 0").await);
}
