//! The server's stop over fake ports: admissions refused with 503 (a POST racing with the stop
//! is refused or recorded, never admitted and then lost), deployments past the grace aborted
//! and recorded `interrupted` with exactly the servers out of rotation, which `recover` then
//! puts back. The same on the real lab: `vesemir-cli/tests/lab_shutdown.rs`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::{call, id_of, Fleet, TestServer, ADMIN, PAYMENTS};
use vesemir_http::{FixedPorts, Server};

/// The names the fake load balancer holds out of rotation now, sorted.
fn out_now(fleet: &Fleet) -> Vec<String> {
    fleet.lb.out_of_rotation().iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_stop_refuses_admissions_aborts_past_the_grace_and_records_every_server_out() {
    let fleet = Fleet::new(6);
    fleet.executor.set_latency(Duration::from_secs(30));
    let grace = Duration::from_millis(400);
    let t = TestServer::start_with(fleet.clone(), |c| {
        c.limits.shutdown_grace = grace;
        c.limits.max_concurrent_deployments = 1;
    })
    .await;
    let mut body = fleet.body("shop", "production", "payments");
    body["strategy"]["concurrency"] = 2.into();
    let running = id_of(&t.post(PAYMENTS, &body).await);
    let queued = id_of(&t.post(PAYMENTS, &fleet.body("ledger", "production", "payments")).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while out_now(&fleet).len() < 2 {
        assert!(Instant::now() < deadline, "two hosts never went out: {:?}", out_now(&fleet));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // POSTs keep coming while the server stops: each is refused (503) or was admitted before
    // the stop, and then ends recorded.
    let router = t.router.clone();
    let storm = tokio::spawn(async move {
        let mut answers = Vec::new();
        for i in 0..200 {
            let application = ["a1", "a2", "a3"][i % 3];
            let body = serde_json::json!({
                "application": application, "environment": "production", "team": "payments",
                "version": "2.0.0", "playbook": "web"
            })
            .to_string();
            let reply =
                call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &[]).await;
            let stopped = reply.status == StatusCode::SERVICE_UNAVAILABLE;
            answers.push(reply);
            if stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let began = Instant::now();
    let stopped = t.server.shutdown().await;
    let took = began.elapsed();
    let answers = storm.await.expect("the storm ends");

    assert!(stopped.in_flight >= 2, "{stopped:?}");
    assert_eq!((stopped.aborted, stopped.unrecorded), (1, 0), "{stopped:?}");
    assert!(took < grace + Duration::from_secs(3), "the stop took {took:?}");
    let refused = answers.last().expect("answers");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text);
    assert_eq!(refused.headers["retry-after"], "30");
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert!(
        refused.json["detail"].as_str().unwrap_or_default().contains("shutting down"),
        "{}",
        refused.text
    );
    for reply in &answers {
        match reply.status {
            StatusCode::ACCEPTED => {
                let id = id_of(reply);
                let record = t.get(ADMIN, &format!("/v1/deployments/{id}")).await.json;
                assert!(
                    ["cancelled", "interrupted"].contains(&record["status"].as_str().unwrap_or("")),
                    "{record}"
                );
            }
            // Another deployment of the same application was still queued or running.
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected answer {other}: {}", reply.text),
        }
    }

    // The running one was aborted: interrupted, naming exactly the servers out; the queued one
    // was cancelled.
    let record = t.get(ADMIN, &format!("/v1/deployments/{running}")).await.json;
    assert_eq!(record["status"], "interrupted", "{record}");
    let out = out_now(&fleet);
    assert_eq!(out.len(), 2, "{out:?}");
    let recorded: Vec<String> = serde_json::from_value(record["out_of_rotation"].clone()).expect("a list");
    assert_eq!(recorded, out, "{record}");
    assert!(record["error"].as_str().unwrap_or_default().contains("shutdown_grace"), "{record}");
    assert_eq!(t.get(ADMIN, &format!("/v1/deployments/{queued}")).await.json["status"], "cancelled");

    // Nothing is admitted any more, and the server says it is not ready.
    let late = t.post(PAYMENTS, &fleet.body("till", "production", "payments")).await;
    assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE, "{}", late.text);
    let recover =
        t.call(Method::POST, &format!("/v1/deployments/{running}/recover"), Some(PAYMENTS), None).await;
    assert_eq!(recover.status, StatusCode::SERVICE_UNAVAILABLE, "{}", recover.text);
    assert_eq!(t.get(ADMIN, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);

    // The next server recovers exactly those servers from the record.
    fleet.executor.set_latency(Duration::ZERO);
    let config = support::config(&t.dir.path().join("vesemir.db"));
    let next = Server::open(&config, Arc::new(FixedPorts(fleet.ports()))).await.expect("reopens");
    let reply = support::call(
        &next.router(),
        Method::POST,
        &format!("/v1/deployments/{running}/recover"),
        Some(PAYMENTS),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["out_of_rotation"], Value::Array(Vec::new()), "{}", reply.text);
    assert!(out_now(&fleet).is_empty(), "{:?}", out_now(&fleet));
}

#[tokio::test]
async fn serving_over_a_socket_answers_503_during_the_stop_and_returns_once_deployments_ended() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_millis(1500));
    let t = TestServer::start(fleet.clone()).await;
    let served = support::Loopback::serve(&t.server).await;
    let body = fleet.body("shop", "production", "payments").to_string();
    let accepted = served.call("POST", "/v1/deployments", Some(PAYMENTS), Some(&body)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let id = id_of(&accepted);
    let deadline = Instant::now() + Duration::from_secs(20);
    while out_now(&fleet).is_empty() {
        assert!(Instant::now() < deadline, "no host went out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let address = served.address;
    let stopping = tokio::spawn(served.stop());
    // The listener still answers while the host in flight finishes: a POST gets 503.
    let probe = support::Loopback { address, stop: None, serving: tokio::spawn(async { Ok(()) }) };
    let mut refused = None;
    for _ in 0..100 {
        let reply = probe.call("POST", "/v1/deployments", Some(PAYMENTS), Some(&body)).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = refused.expect("a POST during the stop is refused with 503");
    assert_eq!(refused.headers["retry-after"], "30");
    let status = probe.call("GET", &format!("/v1/deployments/{id}"), Some(ADMIN), None).await;
    assert_eq!(status.status, StatusCode::OK, "GETs are still answered: {}", status.text);
    stopping.await.expect("stops");
    let done = t.get(ADMIN, &format!("/v1/deployments/{id}")).await.json;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(out_now(&fleet).is_empty(), "the host in flight finished: {:?}", out_now(&fleet));
    assert!(std::net::TcpStream::connect(address).is_err(), "the listener is closed");
}
