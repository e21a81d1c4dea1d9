//! Writing to a real Chef server (goiardi, authentication on), as provisioning does: a client
//! made with the key the server answers (and that key signs), a node registered with its
//! environment, run list and automatic attributes and found by the inventory's search in that
//! environment, updated, and everything deleted twice (the second time already gone); a name
//! taken and a wrong key are typed errors; `find_node` finds it by name in its environment only; goiardi does not check a node's environment.

mod common;

use std::collections::BTreeSet;

use common::{admin, create_environments, inventory};
use serde_json::Value;
use vesemir_chef::{ClientKey, Deleted, NodeSpec, RegistryError, RunListItem, SignVersion};
use vesemir_core::name::{EnvironmentName, HostName};
use vesemir_core::ports::Inventory;
use vesemir_testkit::conformance::inventory::selector;
use vesemir_testkit::goiardi::Goiardi;

const TEST_KEY: &str = include_str!("fixtures/test-client.pem");

fn spec(name: &str, environment: &str, address: &str) -> NodeSpec {
    NodeSpec {
        name: HostName::new(name).expect("a name"),
        environment: EnvironmentName::new(environment).expect("an environment"),
        run_list: vec![
            RunListItem::parse("role[web]").expect("entry"),
            RunListItem::parse("recipe[shop::default]").expect("entry"),
        ],
        ipaddress: address.to_owned(),
        fqdn: format!("{name}.lab.example"),
        tags: vec!["vm".to_owned()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_and_a_node_are_registered_found_in_their_environment_and_deleted_twice() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    create_environments(&admin, &["production"]).await;
    let name = HostName::new("vm-alice-1").expect("a name");

    // The client: the server makes its key; it signs requests as that client.
    let client = admin.create_client(&name).await.expect("client made");
    assert!(client.pem.expose().contains("PRIVATE KEY"));
    assert!(!format!("{client:?}").contains("PRIVATE KEY"), "the key never shows in Debug");
    let as_client = inventory(&server, name.as_str(), client.key.clone());
    let signer =
        vesemir_chef::ChefClient::new(&common::config(&server.url, name.as_str(), client.key.clone()))
            .expect("a client");
    signer.get("/nodes", &[]).await.expect("the new client's key signs");
    let again = admin.create_client(&name).await.expect_err("the name is taken");
    assert!(matches!(again, RegistryError::Exists { .. }), "{again:?}");
    assert!(again.to_string().contains("vm-alice-1"), "{again}");

    // The node: in production, with its run list and automatic attributes.
    let node = spec(name.as_str(), "production", "127.0.9.21");
    admin.create_node(&node).await.expect("node made");
    let saved = admin.get("/nodes/vm-alice-1", &[]).await.expect("the node");
    assert_eq!(saved["chef_environment"], "production");
    assert_eq!(saved["run_list"], serde_json::json!(["role[web]", "recipe[shop::default]"]));
    assert_eq!(saved["automatic"]["ipaddress"], "127.0.9.21");
    assert_eq!(saved["automatic"]["fqdn"], "vm-alice-1.lab.example");
    let taken = admin.create_node(&node).await.expect_err("the node exists");
    assert!(matches!(taken, RegistryError::Exists { .. }), "{taken:?}");

    // The inventory's own search finds it in production (by role and by tag), at its address.
    let wanted = selector(&[], &["web"], &[], Some("production"));
    let hosts = wait_found(&as_client, &wanted, 1).await;
    assert_eq!(hosts[0].name.as_str(), "vm-alice-1");
    assert_eq!(hosts[0].address, "127.0.9.21");
    let elsewhere = as_client.discover(&selector(&["vm"], &[], &[], Some("staging"))).await;
    assert!(elsewhere.is_err(), "not in staging: {elsewhere:?}");

    // find_node: found in production only (the search is indexed by now: the inventory saw it).
    let production = EnvironmentName::new("production").expect("an environment");
    let staging = EnvironmentName::new("staging").expect("an environment");
    assert!(admin.find_node(&name, &production).await.expect("a search"));
    assert!(!admin.find_node(&name, &staging).await.expect("a search"));
    let other = HostName::new("vm-alice-10").expect("a name");
    assert!(!admin.find_node(&other, &production).await.expect("a search"), "names match exactly");

    // Every node's address, whatever its environment (what provisioning never hands out).
    let addresses = admin.node_addresses().await.expect("the addresses");
    assert!(addresses.contains(&"127.0.9.21".parse().expect("an address")), "{addresses:?}");

    // Updated in place (a new address), then gone; deleting twice is fine.
    let moved = NodeSpec { ipaddress: "127.0.9.22".into(), ..node.clone() };
    admin.update_node(&moved).await.expect("node updated");
    let saved = admin.get("/nodes/vm-alice-1", &[]).await.expect("the node");
    assert_eq!(saved["automatic"]["ipaddress"], "127.0.9.22");
    assert_eq!(admin.delete_node(&name).await.expect("deleted"), Deleted::Deleted);
    assert_eq!(admin.delete_node(&name).await.expect("already gone"), Deleted::AlreadyGone);
    let missing = admin.update_node(&moved).await.expect_err("no such node");
    assert!(matches!(missing, RegistryError::Missing { .. }), "{missing:?}");
    assert_eq!(admin.delete_client(&name).await.expect("deleted"), Deleted::Deleted);
    assert_eq!(admin.delete_client(&name).await.expect("already gone"), Deleted::AlreadyGone);
    let clients = admin.get("/clients", &[]).await.expect("clients");
    assert!(clients.get("vm-alice-1").is_none(), "{clients}");
    // The deleted client's key no longer signs.
    let refused = signer.get("/nodes", &[]).await.expect_err("the client is gone");
    assert!(refused.chain().contains("401"), "{}", refused.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_makes_nothing_and_goiardi_takes_any_environment() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    create_environments(&admin, &["production"]).await;
    // Signed with a key that is not the admin's: refused, and nothing is made.
    let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("the fixture key");
    let impostor = vesemir_chef::ChefClient::new(&common::config(&server.url, "admin", key)).expect("client");
    let name = HostName::new("vm-bob-1").expect("a name");
    let denied = impostor.create_client(&name).await.expect_err("wrong key");
    assert!(matches!(denied, RegistryError::Denied(_)), "{denied:?}");
    let denied =
        impostor.create_node(&spec("vm-bob-1", "production", "127.0.9.30")).await.expect_err("wrong key");
    assert!(matches!(denied, RegistryError::Denied(_)), "{denied:?}");
    let clients: BTreeSet<String> = match admin.get("/clients", &[]).await.expect("clients") {
        Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("{other}"),
    };
    assert!(!clients.contains("vm-bob-1"), "{clients:?}");
    // An environment the server does not have: goiardi takes the node anyway (Chef Infra Server
    // answers 400), so a node's environment is proven by searching in it, not by this call.
    let nowhere = spec("vm-bob-1", "nowhere", "127.0.9.30");
    admin.create_node(&nowhere).await.expect("goiardi does not check environments");
    assert_eq!(admin.delete_node(&nowhere.name).await.expect("deleted"), Deleted::Deleted);
}

/// Searches until `count` hosts are found (goiardi indexes a new node within moments).
async fn wait_found(
    inventory: &vesemir_chef::ChefInventory,
    selector: &vesemir_core::ports::Selector,
    count: usize,
) -> Vec<vesemir_core::Host> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(hosts) = inventory.discover(selector).await {
            if hosts.len() == count {
                return hosts;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the node was never found by {selector:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
