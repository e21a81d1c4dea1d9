//! Promotion: a version that succeeds on every host of shop/staging is deployed to
//! shop/production (after the hold), requested by the same identity, and the history links the
//! two; a failure stops the chain; the catalog's chains are checked.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};

use serde_json::{json, Value};
use support::*;
use vesemir_http::{FixedPorts, Server, ServerConfig};

async fn promoting(hold: Option<&str>) -> TestServer {
    let hold = hold.map(|h| humantime::parse_duration(h).expect("a duration"));
    TestServer::start_with(Fleet::new(2), move |config| {
        for unit in &mut config.units {
            if unit.application == "shop" && unit.environment == "staging" {
                unit.promote_to = Some("production".into());
                unit.promote_hold = hold;
            }
        }
    })
    .await
}

/// Waits until shop/production has a deployment, and answers it.
async fn production(t: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = t.get(ADMIN, "/v1/deployments?application=shop&environment=production").await;
        if let Some(found) = list.json["deployments"].as_array().and_then(|d| d.first()) {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "nothing was promoted to production: {}", list.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_on_staging_deploys_the_same_version_to_production_after_the_hold() {
    let t = promoting(Some("1s")).await;
    let mut body = t.fleet.body("shop", "staging", "payments");
    body["version"] = json!("4.2.0");
    let accepted = t.post(PAYMENTS, &body).await;
    let staging = id_of(&accepted);
    let done = t.wait_finished(staging).await;
    let succeeded_at = Instant::now();
    assert_eq!(done["status"], "succeeded", "{done}");
    let promoted = production(&t).await;
    assert!(succeeded_at.elapsed() >= Duration::from_millis(800), "the hold was not kept");
    assert_eq!(promoted["version"], "4.2.0", "{promoted}");
    assert_eq!(promoted["requested_by"], "payments-ci", "{promoted}");
    let id = promoted["id"].as_i64().expect("an id");
    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let history = t.get(PAYMENTS, "/v1/applications/shop/environments/production/history").await;
    assert_eq!(history.json["deployments"][0]["promoted_from"], staging.to_string(), "{}", history.text);
    // Production promotes nowhere: one deployment there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = t.get(ADMIN, "/v1/deployments?application=shop").await;
    assert_eq!(list.json["deployments"].as_array().expect("a list").len(), 2, "{}", list.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_stops_the_chain() {
    let t = promoting(None).await;
    t.fleet.executor.fail_command(&vesemir_core::fake::FakeFleet::host(1), "'6.6.6'", 7);
    let mut body = t.fleet.body("shop", "staging", "payments");
    body["version"] = json!("6.6.6");
    let failed = id_of(&t.post(PAYMENTS, &body).await);
    let done = t.wait_finished(failed).await;
    assert_ne!(done["status"], "succeeded", "{done}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = t.get(ADMIN, "/v1/deployments?application=shop&environment=production").await;
    assert_eq!(list.json["deployments"], json!([]), "a failure was promoted: {}", list.text);
}

#[test]
fn promotion_chains_are_checked() {
    let text = format!(
        "database = \"v.db\"\n{}{PLAYBOOK}",
        units_toml()
            .replacen("environment = \"production\"\n", "environment = \"production\"\npromote_to = \"staging\"\n", 1)
            .replacen("environment = \"staging\"\n", "environment = \"staging\"\npromote_to = \"shop/production\"\n", 1)
            .replacen(
                "application = \"ledger\"\nenvironment = \"production\"\n",
                "application = \"ledger\"\nenvironment = \"production\"\npromote_to = \"qa\"\npromote_hold = \"8d\"\n",
                1
            )
            .replacen(
                "application = \"till\"\nenvironment = \"production\"\n",
                "application = \"till\"\nenvironment = \"production\"\npromote_hold = \"1m\"\n",
                1
            )
            .replacen(
                "application = \"cart\"\nenvironment = \"production\"\n",
                "application = \"cart\"\nenvironment = \"production\"\npromote_confirm = true\n",
                1
            )
            .replacen(
                "application = \"skipper\"\nenvironment = \"production\"\n",
                "application = \"skipper\"\nenvironment = \"production\"\npromote_to = \"a2/production\"\n\
                 promote_hold = \"1m\"\npromote_confirm = true\npromote_confirm_within = \"8d\"\n",
                1
            )
            .replacen(
                "application = \"a1\"\nenvironment = \"production\"\n",
                "application = \"a1\"\nenvironment = \"production\"\npromote_confirm_within = \"1h\"\n",
                1
            )
    );
    let errors = ServerConfig::from_toml(&text).expect_err("invalid");
    let fields: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let joined = fields.join("\n");
    for expected in [
        "units[0].promote_to: makes a promotion chain that loops back",
        "units[1].promote_to: makes a promotion chain that loops back",
        "units[2].promote_hold: must be at most 7d",
        "units[2].promote_to: names no unit of team payments: ledger/qa",
        "units[5].promote_hold: is set without promote_to",
        "units[3].promote_confirm: is set without promote_to",
        "units[4].promote_confirm: is set with promote_hold: choose one",
        "units[4].promote_confirm_within: must be above 0 and at most 7d",
        "units[6].promote_confirm_within: is set without promote_confirm = true",
    ] {
        assert!(joined.contains(expected), "{expected} missing from:\n{joined}");
    }
    assert_eq!(fields.len(), 9, "{joined}");
}

/// A reader of team payments (no deploy role).
const READER: &str = "tok-payments-reader-0123456789";

/// shop/staging promotes to shop/production once a person confirms it (within `within`), with
/// a read-only payments token besides the usual ones.
fn confirming(config: &mut ServerConfig, within: Option<Duration>) {
    for unit in &mut config.units {
        if unit.application == "shop" && unit.environment == "staging" {
            unit.promote_to = Some("production".into());
            unit.promote_confirm = true;
            unit.promote_confirm_within = within;
        }
    }
    config.tokens.push(vesemir_http::TokenConfig {
        roles: vec![vesemir_http::Role::Read],
        ..token("payments-reader", READER, Some("payments"))
    });
}

/// Deploys `version` to shop/staging, waits until it succeeded, and answers its id.
async fn staging_succeeds(t: &TestServer, version: &str) -> i64 {
    let mut body = t.fleet.body("shop", "staging", "payments");
    body["version"] = json!(version);
    let id = id_of(&t.post(PAYMENTS, &body).await);
    let done = t.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    id
}

/// Waits until deployment `id`'s promotion has `status`, and answers the deployment.
async fn promotion_is(t: &TestServer, id: i64, status: &str) -> Value {
    t.wait_for(id, &format!("promotion {status}"), |d| d["promotion"]["status"] == status).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_waits_for_a_person_across_a_restart_and_starts_when_confirmed() {
    let t = TestServer::start_with(Fleet::new(2), |c| confirming(c, None)).await;
    let staging = staging_succeeds(&t, "4.3.0").await;
    let waiting = promotion_is(&t, staging, "waiting_confirmation").await;
    let promotion = &waiting["promotion"];
    assert_eq!(promotion["to"], "shop/production", "{waiting}");
    assert_eq!(promotion["confirm"], format!("/v1/deployments/{staging}/promotion/confirm"));
    assert_eq!(promotion["decline"], format!("/v1/deployments/{staging}/promotion/decline"));
    assert!(promotion["expires_at"].is_string(), "{waiting}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = t.get(ADMIN, "/v1/deployments?application=shop&environment=production").await;
    assert_eq!(list.json["deployments"], json!([]), "promoted without a confirmation: {}", list.text);
    let history = t.get(PAYMENTS, "/v1/applications/shop/environments/staging/history").await;
    let waits = &history.json["promotions"][staging.to_string()];
    assert_eq!(waits["status"], "waiting_confirmation", "{}", history.text);

    // The waiting promotion is in the database: a restarted server still has it.
    t.server.shutdown().await;
    let mut settings = config(&t.dir.path().join("vesemir.db"));
    confirming(&mut settings, None);
    let server = Server::open(&settings, Arc::new(FixedPorts(t.fleet.ports()))).await.expect("reopens");
    let t = TestServer { router: server.router(), server, ..t };
    let path = format!("/v1/deployments/{staging}/promotion/confirm");
    let read_only = t.call(Method::POST, &path, Some(READER), None).await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN, "{}", read_only.text);
    let other_team = t.call(Method::POST, &path, Some(SEARCH), None).await;
    assert_eq!(other_team.status, StatusCode::NOT_FOUND, "{}", other_team.text);
    let view = t.get(PAYMENTS, &format!("/v1/deployments/{staging}")).await;
    assert_eq!(view.json["promotion"]["status"], "waiting_confirmation", "{}", view.text);

    let confirmed = t.call(Method::POST, &path, Some(ADMIN), None).await;
    assert_eq!(confirmed.status, StatusCode::ACCEPTED, "{}", confirmed.text);
    assert_eq!(confirmed.json["promotion"]["status"], "started", "{}", confirmed.text);
    assert_eq!(confirmed.json["promotion"]["decided_by"], "root", "{}", confirmed.text);
    assert!(confirmed.json["promotion"].get("confirm").is_none(), "{}", confirmed.text);
    let production = confirmed.json["promotion"]["deployment"].as_i64().expect("the promoted deployment");
    let done = t.wait_finished(production).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!((done["version"].clone(), done["requested_by"].clone()), (json!("4.3.0"), json!("root")));
    assert_eq!(
        (done["application"].clone(), done["environment"].clone()),
        (json!("shop"), json!("production"))
    );
    let history = t.get(PAYMENTS, "/v1/applications/shop/environments/production/history").await;
    assert_eq!(history.json["deployments"][0]["promoted_from"], staging.to_string(), "{}", history.text);
    let history = t.get(PAYMENTS, "/v1/applications/shop/environments/staging/history").await;
    let started = &history.json["promotions"][staging.to_string()];
    assert_eq!(
        (started["status"].clone(), started["deployment"].clone()),
        (json!("started"), json!(production))
    );
    // Decided once.
    let again = t.call(Method::POST, &path, Some(PAYMENTS), None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.json["detail"].as_str().is_some_and(|d| d.contains("is started")), "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_superseded_or_expired_promotion_starts_nothing() {
    let t = TestServer::start_with(Fleet::new(2), |c| confirming(c, Some(Duration::from_secs(2)))).await;
    let first = staging_succeeds(&t, "5.0.0").await;
    promotion_is(&t, first, "waiting_confirmation").await;
    // A newer success of staging waits in its place.
    let second = staging_succeeds(&t, "5.0.1").await;
    promotion_is(&t, second, "waiting_confirmation").await;
    let superseded = promotion_is(&t, first, "superseded").await;
    assert!(superseded["promotion"].get("confirm").is_none(), "{superseded}");
    let confirm = |id: i64| format!("/v1/deployments/{id}/promotion/confirm");
    let stale = t.call(Method::POST, &confirm(first), Some(PAYMENTS), None).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.text);
    assert!(stale.json["detail"].as_str().is_some_and(|d| d.contains("superseded")), "{}", stale.text);

    let declined = t
        .call(Method::POST, &format!("/v1/deployments/{second}/promotion/decline"), Some(PAYMENTS), None)
        .await;
    assert_eq!(declined.status, StatusCode::ACCEPTED, "{}", declined.text);
    assert_eq!(declined.json["promotion"]["status"], "declined", "{}", declined.text);
    assert_eq!(declined.json["promotion"]["decided_by"], "payments-ci", "{}", declined.text);
    let late = t.call(Method::POST, &confirm(second), Some(PAYMENTS), None).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.text);

    // Not confirmed within 2 s: expired.
    let third = staging_succeeds(&t, "5.0.2").await;
    promotion_is(&t, third, "waiting_confirmation").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    promotion_is(&t, third, "expired").await;
    let expired = t.call(Method::POST, &confirm(third), Some(PAYMENTS), None).await;
    assert_eq!(expired.status, StatusCode::CONFLICT, "{}", expired.text);
    assert!(expired.json["detail"].as_str().is_some_and(|d| d.contains("expired")), "{}", expired.text);
    let list = t.get(ADMIN, "/v1/deployments?application=shop&environment=production").await;
    assert_eq!(list.json["deployments"], json!([]), "something was promoted: {}", list.text);
}
