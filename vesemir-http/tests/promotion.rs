//! Promotion: a version that succeeds on every host of shop/staging is deployed to
//! shop/production (after the hold), requested by the same identity, and the history links the
//! two; a failure stops the chain; the catalog's chains are checked.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use vesemir_http::ServerConfig;

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
    ] {
        assert!(joined.contains(expected), "{expected} missing from:\n{joined}");
    }
    assert_eq!(fields.len(), 5, "{joined}");
}
