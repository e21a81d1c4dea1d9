//! The API in process over fake ports: lifecycle, listing, validation, auth and team scoping,
//! conflicts, idempotency, cancel, the queue, metrics and health.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::*;
use vesemir_core::name::HostName;

fn problems(reply: &Reply) -> Vec<(String, String)> {
    reply.json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {} {}", reply.status, reply.text))
        .iter()
        .map(|p| {
            (p["field"].as_str().unwrap_or("").to_owned(), p["message"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn host(name: &str) -> HostName {
    HostName::new(name).expect("valid")
}

#[tokio::test]
async fn a_deployment_runs_in_the_background_and_its_status_shows_hosts_timings_and_requester() {
    let t = TestServer::start(Fleet::new(3)).await;
    let reply = t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = id_of(&reply);
    assert_eq!(reply.headers["location"], format!("/v1/deployments/{id}"));
    assert_eq!(reply.json["links"]["events"], format!("/v1/deployments/{id}/events"));
    assert_eq!(reply.json["requested_by"], "payments-ci");

    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["requested_by"], "payments-ci");
    assert_eq!(done["playbook"], "web");
    assert_eq!(done["query"], "tags web; environment fleet");
    assert_eq!(done["host_count"], 3);
    assert_eq!(done["totals"]["succeeded"], 3);
    let hosts = done["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3);
    for h in hosts {
        assert_eq!(h["outcome"], "succeeded", "{h}");
        assert_eq!(h["rotation"], "in_rotation", "{h}");
        assert!(h["finished_seconds"].is_number(), "{h}");
    }
    for key in ["created_at", "started_at", "finished_at", "duration_seconds", "queued_seconds"] {
        assert!(!done["timings"][key].is_null(), "timings.{key} missing: {done}");
    }
    let commands = t.fleet.executor.commands(&host("web-02"));
    assert!(commands.iter().any(|c| c.script == "install-app 'shop' '2.0.0' 'stable'"), "{commands:?}");
    assert!(t.fleet.lb.out_of_rotation().is_empty());
}

#[tokio::test]
async fn the_list_filters_by_application_environment_team_and_status_newest_first_in_pages() {
    let t = TestServer::start(Fleet::new(1)).await;
    let mut shop = Vec::new();
    for _ in 0..3 {
        let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
        t.wait_finished(id).await;
        shop.push(id);
    }
    // One after the other: both run on the fleet's one host, and a host takes one rollout at a
    // time (the second would be refused by the host lock).
    let staging = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "staging", "payments")).await);
    t.wait_finished(staging).await;
    let search = id_of(&t.post(SEARCH, &t.fleet.body("finder", "production", "search")).await);
    t.wait_finished(search).await;

    let page = t.get(ADMIN, "/v1/deployments?application=shop&environment=production&limit=2").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let ids: Vec<i64> = page.json["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![shop[2], shop[1]]);
    let next = page.json["next"].as_str().expect("a next page");
    let page2 = t.get(ADMIN, next).await;
    let ids: Vec<i64> = page2.json["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![shop[0]]);
    assert!(page2.json["next"].is_null());

    let by_team = t.get(ADMIN, "/v1/deployments?team=search").await;
    let ids: Vec<i64> = by_team.json["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![search]);
    let by_status = t.get(ADMIN, "/v1/deployments?status=succeeded").await;
    assert_eq!(by_status.json["deployments"].as_array().expect("list").len(), 5);
    let running = t.get(ADMIN, "/v1/deployments?status=running").await;
    assert_eq!(running.json["deployments"].as_array().expect("list").len(), 0);

    let bad = t.get(ADMIN, "/v1/deployments?status=happy").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(problems(&bad)[0].0, "status");
    let unknown = t.get(ADMIN, "/v1/deployments?colour=red").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.text.contains("colour"), "{}", unknown.text);
}

#[tokio::test]
async fn malformed_unknown_field_invalid_and_oversized_bodies_get_4xx_naming_the_field() {
    let t = TestServer::start_with(Fleet::new(1), |c| c.limits.max_body_bytes = 4096).await;
    let malformed =
        t.raw(Method::POST, "/v1/deployments", Some(PAYMENTS), Some("{\"application\": "), &[]).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{}", malformed.text);
    assert!(problems(&malformed)[0].1.contains("not valid JSON"), "{}", malformed.text);

    let mut body = t.fleet.body("shop", "production", "payments");
    body["strategy"]["speed"] = json!("fast");
    let unknown = t.post(PAYMENTS, &body).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    assert_eq!(problems(&unknown)[0].0, "strategy.speed", "{}", unknown.text);
    assert!(problems(&unknown)[0].1.contains("unknown field"), "{}", unknown.text);

    let mut body = t.fleet.body("shop", "production", "payments");
    body["version"] = json!("2.0 0");
    body["strategy"]["concurrency"] = json!(0);
    body["playbook"] = json!("nope");
    let invalid = t.post(PAYMENTS, &body).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", invalid.text);
    let fields: Vec<String> = problems(&invalid).into_iter().map(|p| p.0).collect();
    for field in ["version", "strategy.concurrency", "playbook"] {
        assert!(fields.iter().any(|f| f == field), "{field} not named in {fields:?}");
    }

    let mut body = t.fleet.body("shop", "production", "payments");
    body.as_object_mut().expect("object").remove("playbook");
    body["changeset"] = json!({ "steps": [{ "name": "x", "run": "rm -rf /" }] });
    let inline = t.post(PAYMENTS, &body).await;
    assert_eq!(inline.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", inline.text);
    assert!(problems(&inline).iter().any(|p| p.0 == "changeset.steps"), "{}", inline.text);

    let mut body = t.fleet.body("shop", "production", "payments");
    body["targets"] = json!({ "query": "name:*" });
    let raw = t.post(PAYMENTS, &body).await;
    assert_eq!(raw.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", raw.text);
    assert!(
        problems(&raw).iter().any(|p| p.0 == "targets.query" && p.1.contains("operator")),
        "{}",
        raw.text
    );

    let mut body = t.fleet.body("shop", "production", "payments");
    body["requested_by"] = json!("someone-else");
    let impostor = t.post(PAYMENTS, &body).await;
    assert_eq!(impostor.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", impostor.text);
    assert_eq!(problems(&impostor)[0].0, "requested_by");

    let mut body = t.fleet.body("shop", "production", "payments");
    body["variables"]["padding"] = json!("x".repeat(8000));
    let oversized = t.post(PAYMENTS, &body).await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", oversized.text);
    assert!(oversized.json["detail"].as_str().expect("error").contains("4096"), "{}", oversized.text);

    let list = t.get(ADMIN, "/v1/deployments").await;
    assert_eq!(list.json["deployments"].as_array().expect("list").len(), 0, "nothing refused was stored");
}

#[tokio::test]
async fn servers_not_in_rotation_are_refused_with_422_naming_each_state_before_anything_is_stored() {
    use vesemir_core::fake::FakeFleet;
    use vesemir_core::ports::{AdminState, Operational};
    let fleet = Fleet::new(3);
    fleet
        .lb
        .set_initial(&FakeFleet::server(2), None, AdminState::Maint, Operational::Down, 100)
        .expect("maint");
    let t = TestServer::start(fleet).await;
    let body = t.fleet.body("shop", "production", "payments");
    let refused = t.post(PAYMENTS, &body).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert_eq!(
        problems(&refused),
        [(
            "load_balancer.servers_not_in_rotation".to_owned(),
            "not in rotation: web-02 (host web-02): MAINT down, weight 100/100 on 127.0.0.1:9001".to_owned()
        )]
    );
    let list = t.get(ADMIN, "/v1/deployments").await;
    assert_eq!(list.json["deployments"].as_array().expect("list").len(), 0, "nothing refused was stored");
    assert!(t.fleet.lb.rotation_log().changes.is_empty(), "nothing changed");

    // A unit whose operator set servers_not_in_rotation = "skip".
    let mut body = t.fleet.body("skipper", "production", "payments");
    body["strategy"]["concurrency"] = json!(2);
    let accepted = t.post(PAYMENTS, &body).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
}

#[tokio::test]
async fn tokens_are_required_and_scoped_to_their_team() {
    let t = TestServer::start(Fleet::new(1)).await;
    let body = t.fleet.body("shop", "production", "payments");

    let none = t.call(Method::POST, "/v1/deployments", None, Some(&body)).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert!(none.json["detail"].as_str().expect("error").contains("Authorization: Bearer"), "{}", none.text);
    let wrong = t.post("not-a-token", &body).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.json["detail"].as_str().expect("error").contains("not known"), "{}", wrong.text);

    let other_team = t.post(SEARCH, &body).await;
    assert_eq!(other_team.status, StatusCode::FORBIDDEN, "{}", other_team.text);
    assert_eq!(problems(&other_team)[0].0, "team", "{}", other_team.text);
    // `ledger` is payments' unit in the catalog: search has none, and cannot claim it.
    let claimed = t.post(SEARCH, &t.fleet.body("ledger", "production", "search")).await;
    assert_eq!(claimed.status, StatusCode::FORBIDDEN, "{}", claimed.text);
    assert_eq!(problems(&claimed)[0].0, "application", "{}", claimed.text);
    assert!(!claimed.text.contains("payments"), "the owner is not named: {}", claimed.text);

    let id = id_of(&t.post(PAYMENTS, &body).await);
    t.wait_finished(id).await;
    let admin_id = id_of(&t.post(ADMIN, &t.fleet.body("finder", "production", "search")).await);
    let admin_done = t.wait_finished(admin_id).await;
    assert_eq!(admin_done["requested_by"], "root");

    // Another team's deployment is not found, exactly as one that does not exist.
    let peek = t.get(SEARCH, &format!("/v1/deployments/{id}")).await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
    assert_eq!(peek.json["detail"], format!("no deployment {id}"));
    assert!(!peek.text.contains("payments"), "{}", peek.text);
    let cancel = t.call(Method::POST, &format!("/v1/deployments/{id}/cancel"), Some(SEARCH), None).await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    let events = t.get(SEARCH, &format!("/v1/deployments/{id}/events")).await;
    assert_eq!(events.status, StatusCode::NOT_FOUND);
    let own = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await;
    assert_eq!(own.status, StatusCode::OK);

    let listed = t.get(SEARCH, "/v1/deployments").await;
    let teams: Vec<&str> = listed.json["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["team"].as_str().expect("team"))
        .collect();
    assert_eq!(teams, vec!["search"]);
    let snoop = t.get(SEARCH, "/v1/deployments?team=payments").await;
    assert_eq!(snoop.status, StatusCode::FORBIDDEN);
    let all = t.get(ADMIN, "/v1/deployments").await;
    assert_eq!(all.json["deployments"].as_array().expect("list").len(), 2);
}

#[tokio::test]
async fn a_second_deployment_of_the_same_application_and_environment_gets_409_naming_the_running_one() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_millis(300));
    let t = TestServer::start(fleet).await;
    let first = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    let second = t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
    assert_eq!(second.json["running"]["id"], first);
    assert!(second.json["detail"]
        .as_str()
        .expect("error")
        .contains(&format!("deployment {first} of shop in production")));
    let elsewhere = t.post(PAYMENTS, &t.fleet.body("shop", "staging", "payments")).await;
    assert_eq!(elsewhere.status, StatusCode::ACCEPTED, "another environment is no conflict");
    t.wait_finished(first).await;
    let after = t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await;
    assert_eq!(after.status, StatusCode::ACCEPTED, "{}", after.text);
    t.wait_finished(id_of(&after)).await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_deployment() {
    let fleet = Fleet::new(1);
    fleet.executor.set_latency(Duration::from_millis(200));
    let t = TestServer::start(fleet).await;
    let body = t.fleet.body("shop", "production", "payments").to_string();
    let key = [("idempotency-key", "release-42")];
    let first = t.raw(Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    // While it runs: the same key is the same deployment, not a conflict.
    let again = t.raw(Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &key).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(id_of(&again), id_of(&first));
    t.wait_finished(id_of(&first)).await;
    let later = t.raw(Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &key).await;
    assert_eq!(id_of(&later), id_of(&first));
    assert_eq!(later.json["status"], "succeeded");

    let other = t.fleet.body("shop", "staging", "payments").to_string();
    let reused = t.raw(Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&other), &key).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reused.text);
    assert_eq!(problems(&reused)[0].0, "Idempotency-Key");
    let list = t.get(ADMIN, "/v1/deployments").await;
    assert_eq!(list.json["deployments"].as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn cancel_stops_a_running_deployment_and_an_ended_one_gets_409() {
    let fleet = Fleet::new(4);
    fleet.executor.set_latency(Duration::from_millis(150));
    let t = TestServer::start(fleet).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    t.wait_for(id, "running", |d| d["status"] == "running").await;
    let cancel = t.call(Method::POST, &format!("/v1/deployments/{id}/cancel"), Some(PAYMENTS), None).await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);
    assert_eq!(cancel.json["cancel_requested"], true);
    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(done["totals"]["cancelled"].as_u64().expect("count") >= 1, "{done}");
    assert!(t.fleet.lb.out_of_rotation().is_empty(), "hosts in flight finished");
    let again = t.call(Method::POST, &format!("/v1/deployments/{id}/cancel"), Some(PAYMENTS), None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.json["detail"].as_str().expect("error").contains("already ended"));
    let missing = t.call(Method::POST, "/v1/deployments/999/cancel", Some(PAYMENTS), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deployments_beyond_the_concurrency_limit_wait_queued_and_can_be_cancelled_there() {
    let fleet = Fleet::new(1);
    fleet.executor.set_latency(Duration::from_millis(300));
    let t = TestServer::start_with(fleet, |c| c.limits.max_concurrent_deployments = 1).await;
    let first = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    let second = id_of(&t.post(PAYMENTS, &t.fleet.body("cart", "production", "payments")).await);
    let third = id_of(&t.post(PAYMENTS, &t.fleet.body("till", "production", "payments")).await);
    t.wait_for(first, "running", |d| d["status"] == "running").await;
    let waiting = t.get(PAYMENTS, &format!("/v1/deployments/{second}")).await;
    assert_eq!(waiting.json["status"], "queued", "{}", waiting.text);
    let metrics = t.raw(Method::GET, "/metrics", Some(ADMIN), None, &[]).await;
    assert!(metrics.text.contains("vesemir_deployments_queued 2"), "{}", metrics.text);
    assert!(metrics.text.contains("vesemir_deployments_in_flight 1"), "{}", metrics.text);
    let cancel = t.call(Method::POST, &format!("/v1/deployments/{third}/cancel"), Some(PAYMENTS), None).await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    assert_eq!(t.wait_finished(third).await["status"], "cancelled");
    assert_eq!(t.wait_finished(first).await["status"], "succeeded");
    let second_done = t.wait_finished(second).await;
    assert_eq!(second_done["status"], "succeeded");
    assert!(second_done["timings"]["queued_seconds"].as_f64().expect("queued") > 0.1, "{second_done}");
}

#[tokio::test]
async fn a_full_queue_refuses_with_429() {
    let fleet = Fleet::new(1);
    fleet.executor.set_latency(Duration::from_millis(300));
    let t = TestServer::start_with(fleet, |c| {
        c.limits.max_concurrent_deployments = 1;
        c.limits.max_queued_deployments = 1;
    })
    .await;
    let first = id_of(&t.post(PAYMENTS, &t.fleet.body("a1", "production", "payments")).await);
    t.wait_for(first, "running", |d| d["status"] == "running").await;
    let second = t.post(PAYMENTS, &t.fleet.body("a2", "production", "payments")).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    let third = t.post(PAYMENTS, &t.fleet.body("a3", "production", "payments")).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS, "{}", third.text);
    assert!(third.json["detail"].as_str().expect("error").contains("queued already"));
    t.wait_finished(id_of(&second)).await;
}

#[tokio::test]
async fn a_deployment_that_cannot_be_prepared_fails_and_changes_nothing() {
    let t = TestServer::start(Fleet::new(1)).await;
    // A unit whose backend the load balancer does not have.
    let body = t.fleet.body("broken", "production", "payments");
    let id = id_of(&t.post(PAYMENTS, &body).await);
    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().expect("error").contains("nothing was changed"), "{done}");
    assert!(t.fleet.executor.commands(&host("web-01")).is_empty());
}

#[tokio::test]
async fn metrics_count_deployments_by_outcome_hosts_and_durations() {
    let fleet = Fleet::new(2);
    fleet.executor.fail_command(&host("web-02"), "install-app", 3);
    let t = TestServer::start(fleet).await;
    let mut body = t.fleet.body("shop", "production", "payments");
    body["strategy"]["max_failures"] = json!(1);
    let id = id_of(&t.post(PAYMENTS, &body).await);
    assert_eq!(t.wait_finished(id).await["status"], "completed_with_failures");
    // web-02 was left out of rotation by that failure: include it (and leave room for it).
    // The `cart` unit includes servers found out of rotation.
    let mut body = t.fleet.body("cart", "production", "payments");
    body["strategy"]["concurrency"] = json!(2);
    let id = id_of(&t.post(PAYMENTS, &body).await);
    assert_eq!(t.wait_finished(id).await["status"], "stopped");

    // The in-flight gauge drops just after the final status is written: poll briefly.
    let mut metrics = t.raw(Method::GET, "/metrics", Some(ADMIN), None, &[]).await;
    for _ in 0..100 {
        if metrics.text.contains("vesemir_deployments_in_flight 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        metrics = t.raw(Method::GET, "/metrics", Some(ADMIN), None, &[]).await;
    }
    assert_eq!(metrics.status, StatusCode::OK);
    let text = &metrics.text;
    let has = |needle: &str| assert!(text.contains(needle), "{needle} missing from\n{text}");
    has(
        r#"vesemir_deployments_total{application="shop",environment="production",team="payments",outcome="completed_with_failures"} 1"#,
    );
    has(
        r#"vesemir_deployments_total{application="cart",environment="production",team="payments",outcome="stopped"} 1"#,
    );
    has(
        r#"vesemir_hosts_total{application="shop",environment="production",team="payments",outcome="succeeded"} 1"#,
    );
    has(
        r#"vesemir_hosts_total{application="shop",environment="production",team="payments",outcome="failed"} 1"#,
    );
    has("vesemir_deployment_duration_seconds_bucket");
    // Each host taken out (the one that succeeded and the one that failed mid-changeset).
    has(
        r#"vesemir_host_out_of_rotation_seconds_count{application="shop",environment="production",team="payments"} 2"#,
    );
    has("vesemir_host_out_of_rotation_seconds_bucket");
    has("vesemir_deployments_in_flight 0");
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let t = TestServer::start(Fleet::new(1)).await;
    let health = t.raw(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!((health.status, health.json["status"].as_str()), (StatusCode::OK, Some("ok")));
    let team_metrics = t.raw(Method::GET, "/metrics", Some(PAYMENTS), None, &[]).await;
    assert_eq!(team_metrics.status, StatusCode::FORBIDDEN, "/metrics is for admins: {}", team_metrics.text);
    let anonymous_metrics = t.raw(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(anonymous_metrics.status, StatusCode::UNAUTHORIZED);
    let ready = t.raw(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!((ready.status, ready.json["status"].as_str()), (StatusCode::OK, Some("ok")));
    let missing = t.raw(Method::GET, "/v2/nothing", None, None, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json["detail"].as_str().expect("error").contains("openapi"));
    let bad_id = t.get(ADMIN, "/v1/deployments/abc").await;
    assert_eq!(bad_id.status, StatusCode::NOT_FOUND);
    let none = t.get(ADMIN, "/v1/deployments/12345").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(none.json["detail"], "no deployment 12345");
}

#[tokio::test]
async fn the_server_refuses_an_invalid_configuration_naming_the_fields() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&dir.path().join("v.db"));
    config.tokens[0].sha256 = "abc".into();
    config.playbooks.get_mut("web").expect("web").steps.clear();
    let error = vesemir_http::Server::open(
        &config,
        std::sync::Arc::new(vesemir_http::FixedPorts(Fleet::new(1).ports())),
    )
    .await
    .expect_err("invalid config");
    let text = error.to_string();
    assert!(text.contains("tokens[0].sha256") && text.contains("playbooks.web.steps"), "{text}");
    let debug = format!("{:?}", config.tokens[1]);
    assert!(!debug.contains(&vesemir_http::auth::sha256_hex(SEARCH.as_bytes())), "{debug}");
}

#[tokio::test]
async fn a_deployment_running_past_the_deployment_timeout_is_aborted() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_secs(30));
    let t = TestServer::start_with(fleet, |c| c.limits.deployment_timeout = Duration::from_millis(300)).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    let done = t.wait_finished(id).await;
    assert!(done["error"].as_str().expect("error").contains("deployment_timeout"), "{done}");
    assert_ne!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn shutdown_cancels_deployments_in_flight_and_waits_for_them() {
    let fleet = Fleet::new(4);
    fleet.executor.set_latency(Duration::from_millis(100));
    let t = TestServer::start(fleet).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    t.wait_for(id, "running", |d| d["status"] == "running").await;
    let stopped = t.server.shutdown().await;
    assert_eq!((stopped.in_flight, stopped.aborted), (1, 0), "every deployment ended within the grace");
    let done = t.get(ADMIN, &format!("/v1/deployments/{id}")).await;
    assert_eq!(done.json["status"], "cancelled", "{}", done.text);
    assert!(t.fleet.lb.out_of_rotation().is_empty(), "hosts in flight finished");
}

#[tokio::test]
async fn a_canary_waiting_for_confirmation_goes_on_when_confirmed() {
    let t = TestServer::start(Fleet::new(3)).await;
    let mut body = t.fleet.body("shop", "production", "payments");
    body["strategy"]["canary"] = json!({ "hosts": 1, "confirm": true });
    let id = id_of(&t.post(PAYMENTS, &body).await);
    let waiting = t.wait_for(id, "the canary done", |d| d["hosts"][0]["outcome"] == "succeeded").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let still = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await;
    assert_eq!(still.json["status"], "running", "{waiting}");
    assert!(still.json["hosts"][1]["outcome"].is_null(), "the rest wait for confirmation: {}", still.text);
    let other = t.call(Method::POST, &format!("/v1/deployments/{id}/confirm"), Some(SEARCH), None).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let confirm = t.call(Method::POST, &format!("/v1/deployments/{id}/confirm"), Some(PAYMENTS), None).await;
    assert_eq!(confirm.status, StatusCode::ACCEPTED, "{}", confirm.text);
    assert_eq!(t.wait_finished(id).await["status"], "succeeded");
    let late = t.call(Method::POST, &format!("/v1/deployments/{id}/confirm"), Some(PAYMENTS), None).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_servers_driver_checks_while_out_reaches_its_deployments() {
    let text = format!(
        "database = \"unused\"\n[driver]\nchecks_while_out = true\n{}{PLAYBOOK}load_balancer_up = true\n",
        units_toml()
    );
    let read = vesemir_http::ServerConfig::from_toml(&text).expect("valid config");
    assert!(read.driver.checks_while_out);
    let t = TestServer::start_with(Fleet::new(2), |config| {
        config.driver = read.driver.clone();
        config.playbooks = read.playbooks.clone();
    })
    .await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    assert_eq!(t.wait_finished(id).await["status"], "succeeded");
    let marked: Vec<String> =
        t.fleet.lb.rotation_log().marked_down.iter().map(|(server, _)| server.to_string()).collect();
    assert_eq!(marked.len(), 2, "each host marked DOWN after its changeset, checks kept running: {marked:?}");

    let wrong =
        vesemir_http::ServerConfig::from_toml("database = \"x\"\n[driver]\nchecks_while_out = \"yes\"\n")
            .expect_err("not a boolean");
    let fields: Vec<String> = wrong.errors().iter().map(|p| p.field.clone()).collect();
    assert_eq!(fields, ["driver.checks_while_out"], "{wrong}");
}
