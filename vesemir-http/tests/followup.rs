//! After something went wrong, through the API on a fleet of fakes: the history of an
//! application in an environment, retry of the hosts a deployment did not finish, rollback to the
//! previous version (asked for, and by `strategy.on_failure = "rollback"`), restore of the servers
//! a deployment left out, and the view's links to each when they apply.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use support::{id_of, Fleet, TestServer, ADMIN, PAYMENTS, SEARCH};
use vesemir_core::fake::FakeFleet;

async fn post(t: &TestServer, token: &str, path: &str, body: Option<&Value>) -> support::Reply {
    t.call(Method::POST, path, Some(token), body).await
}

async fn deploy(t: &TestServer, version: &str, strategy: Value) -> Value {
    let mut body = t.fleet.body("shop", "production", "payments");
    body["version"] = json!(version);
    body["strategy"] = strategy;
    let reply = t.post(PAYMENTS, &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    t.wait_finished(id_of(&reply)).await
}

async fn history(t: &TestServer) -> Value {
    let reply = t.get(PAYMENTS, "/v1/applications/shop/environments/production/history").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

/// The newest deployment of the history that matches `wanted` once it has ended (at most 10 s).
async fn wait_history(t: &TestServer, wanted: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..500 {
        let shown = history(t).await;
        let found = shown["deployments"].as_array().into_iter().flatten().find(|d| wanted(d)).cloned();
        if let Some(d) = found.filter(|d| d["outcome"] != "running") {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("never in the history: {}", history(t).await)
}

fn host_names(d: &Value) -> Vec<String> {
    d["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_retry_runs_only_the_hosts_left_and_puts_back_the_ones_left_out() {
    let fleet = Fleet::new(3);
    fleet.executor.fail_command(&FakeFleet::host(2), "'2.0.0' 'stable'", 7);
    let t = TestServer::start(fleet).await;
    let failed = deploy(&t, "2.0.0", json!({ "concurrency": 1 })).await;
    let id = failed["id"].as_i64().expect("an id");
    assert_eq!(failed["status"], "stopped", "{failed}");
    assert_eq!(failed["links"]["retry"], format!("/v1/deployments/{id}/retry"), "{failed}");
    assert_eq!(failed["links"]["restore"], format!("/v1/deployments/{id}/restore"), "{failed}");
    assert_eq!(failed["links"]["rollback"], "/v1/applications/shop/environments/production/rollback");
    assert_eq!(t.fleet.lb.out_of_rotation().len(), 1, "web-02 is left out");

    let path = format!("/v1/deployments/{id}/retry");
    assert_eq!(post(&t, SEARCH, &path, None).await.status, StatusCode::NOT_FOUND, "another team's");
    let malformed = post(&t, PAYMENTS, &path, Some(&json!({ "hosts": ["web-01"] }))).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{}", malformed.text);
    // The fault is in the stable channel: the retry takes the beta one.
    let accepted = post(&t, PAYMENTS, &path, Some(&json!({ "variables": { "channel": "beta" } }))).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let retry = t.wait_finished(id_of(&accepted)).await;
    assert_eq!(retry["status"], "succeeded", "{retry}");
    // First the server the parent left out (taken as it is, then put back), then the others:
    // with concurrency 1, web-02 out would leave no room for web-03.
    assert_eq!(host_names(&retry), ["web-02"], "{retry}");
    assert!(retry["links"].get("retry").is_none(), "{retry}");
    let second = wait_history(&t, |d| {
        d["retry_of"].as_str() == Some(id.to_string().as_str()) && d["hosts"][0]["host"] == "web-03"
    })
    .await;
    assert_eq!(second["outcome"], "succeeded", "{second}");
    assert!(t.fleet.lb.out_of_rotation().is_empty(), "web-02 is back in rotation");
    let first = t.get(PAYMENTS, &format!("/v1/deployments/{}", id_of(&accepted))).await.json;
    let note =
        format!("the other hosts (web-03) go on in deployment {}", second["id"].as_str().unwrap_or_default());
    assert!(first["error"].as_str().unwrap_or_default().contains(&note), "{first}");
    let last = t.fleet.executor.commands(&FakeFleet::host(2));
    assert!(last.iter().any(|c| c.script.contains("'2.0.0' 'beta'")), "{last:?}");
    let parent = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await.json;
    assert_eq!(parent["out_of_rotation"], json!([]), "the parent left nothing out now: {parent}");

    let shown = history(&t).await;
    assert_eq!(shown["deployments"][0]["retry_of"], id.to_string(), "{shown}");
    assert_eq!(shown["deployments"][1]["retry_of"], id.to_string(), "{shown}");
    assert_eq!(shown["deployments"][2]["outcome"], "stopped", "{shown}");
    for host in ["web-01", "web-02", "web-03"] {
        assert_eq!(shown["hosts"][host]["version"], "2.0.0", "{shown}");
    }
    let again = post(
        &t,
        PAYMENTS,
        &format!("/v1/deployments/{}/retry", second["id"].as_str().unwrap_or_default()),
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.json["detail"].as_str().unwrap_or_default().contains("nothing to retry"), "{}", again.text);
    // Another team sees none of payments' deployments, as if there were none.
    let other_team = t.get(SEARCH, "/v1/applications/shop/environments/production/history").await;
    assert_eq!(other_team.status, StatusCode::OK, "{}", other_team.text);
    assert_eq!(other_team.json["deployments"], json!([]), "{}", other_team.text);
}

#[tokio::test]
async fn rollback_by_hand_and_on_failure() {
    let fleet = Fleet::new(3);
    fleet.executor.fail_command(&FakeFleet::host(2), "'3.0.0'", 7);
    let t = TestServer::start(fleet).await;
    let rollback_path = "/v1/applications/shop/environments/production/rollback";
    let none = post(&t, PAYMENTS, rollback_path, None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);

    deploy(&t, "1.0.0", json!({ "concurrency": 1 })).await;
    let only = post(&t, PAYMENTS, rollback_path, None).await;
    assert_eq!(only.status, StatusCode::CONFLICT, "nothing before 1.0.0: {}", only.text);
    let second = deploy(&t, "2.0.0", json!({ "concurrency": 1 })).await;
    let rolled = post(&t, PAYMENTS, rollback_path, Some(&json!({}))).await;
    assert_eq!(rolled.status, StatusCode::ACCEPTED, "{}", rolled.text);
    let rolled = t.wait_finished(id_of(&rolled)).await;
    assert_eq!((rolled["version"].as_str(), rolled["status"].as_str()), (Some("1.0.0"), Some("succeeded")));
    assert_eq!(
        history(&t).await["deployments"][0]["rollback_of"],
        second["id"].as_i64().expect("id").to_string()
    );

    // 3.0.0 fails on web-02 after web-01 moved: both go back to 1.0.0, web-03 was never touched.
    let failed = deploy(&t, "3.0.0", json!({ "concurrency": 1, "on_failure": "rollback" })).await;
    assert_eq!(failed["status"], "stopped", "{failed}");
    let failed_id = failed["id"].as_i64().expect("id").to_string();
    // First web-02, which 3.0.0 left out, then web-01: both back on 1.0.0; web-03 untouched.
    let second =
        wait_history(&t, |d| d["rollback_of"] == failed_id.as_str() && d["hosts"][0]["host"] == "web-01")
            .await;
    assert_eq!(
        (second["outcome"].as_str(), second["version"].as_str()),
        (Some("succeeded"), Some("1.0.0")),
        "{second}"
    );
    let shown = history(&t).await;
    let first = &shown["deployments"][1];
    assert_eq!(first["rollback_of"], failed_id.as_str(), "{shown}");
    assert_eq!(first["hosts"][0]["host"], "web-02", "{shown}");
    assert_eq!(first["outcome"], "succeeded", "{shown}");
    assert!(t.fleet.lb.out_of_rotation().is_empty(), "all in rotation");
    for host in [1, 2] {
        let last = t
            .fleet
            .executor
            .commands(&FakeFleet::host(host))
            .into_iter()
            .rev()
            .find(|c| c.script.contains("install-app"));
        assert!(last.is_some_and(|c| c.script.contains("'1.0.0'")), "web-0{host} is on 1.0.0");
    }
    let last = t
        .fleet
        .executor
        .commands(&FakeFleet::host(3))
        .into_iter()
        .rev()
        .find(|c| c.script.contains("install-app"));
    assert!(last.is_some_and(|c| c.script.contains("'1.0.0'")), "web-03 was never moved from 1.0.0");
    let failed = t.get(PAYMENTS, &format!("/v1/deployments/{failed_id}")).await.json;
    let note = format!("rolled back by deployment {}", first["id"].as_str().unwrap_or_default());
    assert!(failed["error"].as_str().unwrap_or_default().contains(&note), "{failed}");
    assert_eq!(post(&t, SEARCH, rollback_path, None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn restore_puts_back_a_healthy_host_and_leaves_an_unhealthy_one_out() {
    let fleet = Fleet::new(3);
    fleet.executor.fail_command(&FakeFleet::host(1), "install-app", 7);
    fleet.executor.fail_command(&FakeFleet::host(2), "install-app", 7);
    fleet.executor.fail_command(&FakeFleet::host(2), "check-app", 1);
    let t = TestServer::start(fleet).await;
    let failed = deploy(&t, "2.0.0", json!({ "concurrency": 2, "max_failures": 1 })).await;
    let id = failed["id"].as_i64().expect("id");
    assert_eq!(t.fleet.lb.out_of_rotation().len(), 2, "{failed}");
    let path = format!("/v1/deployments/{id}/restore");
    let bad = post(&t, PAYMENTS, &path, Some(&json!({ "hosts": ["web-01;reload"] }))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let reply = post(&t, PAYMENTS, &path, Some(&json!({ "hosts": ["web-01", "web-02"] }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let result = |host: &str| {
        reply.json["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["host"] == host)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(result("web-01")["result"], "restored", "{}", reply.text);
    assert_eq!(result("web-02")["result"], "left_out", "{}", reply.text);
    assert!(
        result("web-02")["reason"].as_str().unwrap_or_default().contains("health command failed"),
        "{}",
        reply.text
    );
    assert_eq!(reply.json["out_of_rotation"], json!(["web-02"]));
    assert_eq!(t.fleet.lb.out_of_rotation().len(), 1, "web-02 stays out");
    let view = t.get(ADMIN, &format!("/v1/deployments/{id}")).await.json;
    assert_eq!(view["links"]["restore"], path, "{view}");
}
