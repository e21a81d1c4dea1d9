//! Limits per team and per token on the real server over SQLite: a team over its queue quota
//! gets 429 naming it (another team does not), a token over its event-stream cap gets 429 until
//! one of its streams closes, and events past the retention are pruned (410 on the event
//! stream, the deployment and its hosts kept); all of it in `/metrics`.

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use support::{id_of, Fleet, TestServer, ADMIN, PAYMENTS, SEARCH};
use tower::ServiceExt;

async fn metrics(t: &TestServer) -> String {
    t.get(ADMIN, "/metrics").await.text
}

#[tokio::test]
async fn a_team_over_its_queue_quota_gets_429_naming_it_and_other_teams_do_not() {
    let fleet = Fleet::new(1);
    fleet.executor.set_latency(Duration::from_millis(400));
    let t = TestServer::start_with(fleet.clone(), |c| {
        c.limits.max_concurrent_deployments = 1;
        c.limits.max_queued_per_team = 1;
    })
    .await;
    let running = id_of(&t.post(PAYMENTS, &fleet.body("shop", "production", "payments")).await);
    t.wait_for(running, "running", |d| d["status"] == "running").await;
    let queued = t.post(PAYMENTS, &fleet.body("shop", "staging", "payments")).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.text);
    assert!(metrics(&t).await.contains("vesemir_team_deployments_queued{team=\"payments\"} 1"));

    let over = t.post(PAYMENTS, &fleet.body("ledger", "production", "payments")).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
    assert_eq!(over.headers["content-type"], "application/problem+json");
    assert_eq!(over.json["problems"][0]["field"], "limits.max_queued_per_team", "{}", over.text);
    assert!(over.json["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("team payments has 1 deployments queued"));

    let other = t.post(SEARCH, &fleet.body("finder", "production", "search")).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "another team has its own quota: {}", other.text);
    let text = metrics(&t).await;
    assert!(text.contains("vesemir_team_deployments_queued{team=\"search\"} 1"), "{text}");

    // Once the queued one has started, the team may queue again.
    t.wait_for(id_of(&queued), "started", |d| d["status"] != "queued").await;
    let again = t.post(PAYMENTS, &fleet.body("ledger", "production", "payments")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
}

/// Opens `GET /v1/deployments/{id}/events` and keeps the answer (its body unread: the stream
/// stays open).
async fn open_stream(t: &TestServer, token: &str, id: i64) -> axum::response::Response {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("/v1/deployments/{id}/events"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    t.router.clone().oneshot(request).await.expect("answers")
}

#[tokio::test]
async fn a_token_over_its_event_stream_cap_gets_429_until_one_closes() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_secs(5));
    let t = TestServer::start_with(fleet.clone(), |c| c.limits.max_event_streams_per_token = 2).await;
    let id = id_of(&t.post(PAYMENTS, &fleet.body("shop", "production", "payments")).await);
    let first = open_stream(&t, PAYMENTS, id).await;
    let second = open_stream(&t, PAYMENTS, id).await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    assert!(metrics(&t).await.contains("vesemir_event_streams_open 2"));

    let third = t.get(PAYMENTS, &format!("/v1/deployments/{id}/events")).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS, "{}", third.text);
    assert_eq!(third.json["problems"][0]["field"], "limits.max_event_streams_per_token", "{}", third.text);
    assert!(third.json["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("payments-ci has 2 event streams open"));
    // Another token has its own cap.
    let admin = open_stream(&t, ADMIN, id).await;
    assert_eq!(admin.status(), StatusCode::OK);

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = open_stream(&t, PAYMENTS, id).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream's slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((second, admin));
    t.call(Method::POST, &format!("/v1/deployments/{id}/cancel"), Some(PAYMENTS), None).await;
}

#[tokio::test]
async fn events_past_the_retention_are_pruned_and_the_api_says_so() {
    let fleet = Fleet::new(2);
    let retention = Duration::from_secs(3);
    let t = TestServer::start_with(fleet.clone(), |c| c.limits.event_retention = retention).await;
    let old = id_of(&t.post(PAYMENTS, &fleet.body("shop", "production", "payments")).await);
    assert_eq!(t.wait_finished(old).await["status"], "succeeded");
    let events = t.get(PAYMENTS, &format!("/v1/deployments/{old}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    assert!(events.text.contains("deployment_finished"), "{}", events.text);

    // Past the retention, the periodic task (every tenth of it here) deletes its events.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&t).await;
        let pruned = text
            .lines()
            .find(|l| l.starts_with("vesemir_events_pruned_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default();
        if pruned > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing was pruned:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recent = id_of(&t.post(PAYMENTS, &fleet.body("shop", "staging", "payments")).await);
    assert_eq!(t.wait_finished(recent).await["status"], "succeeded");

    let gone = t.get(PAYMENTS, &format!("/v1/deployments/{old}/events")).await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.text);
    assert!(gone.json["detail"].as_str().unwrap_or_default().contains("were pruned"), "{}", gone.text);
    let record = t.get(PAYMENTS, &format!("/v1/deployments/{old}")).await;
    assert_eq!(record.status, StatusCode::OK);
    assert_eq!(record.json["status"], "succeeded", "{}", record.text);
    assert_eq!(record.json["hosts"].as_array().map(Vec::len), Some(2), "{}", record.text);
    let kept = t.get(PAYMENTS, &format!("/v1/deployments/{recent}/events")).await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.text);
    assert!(kept.text.contains("deployment_finished"), "a recent deployment keeps its events");
}
