//! The shared `Inventory` conformance suite against the core's fake, the core's static
//! inventory and the Chef adapter over a real goiardi.

mod common;

use std::collections::BTreeSet;

use vesemir_core::fake::FakeInventory;
use vesemir_core::name::{EnvironmentName, HostName};
use vesemir_core::static_inventory::{StaticHost, StaticInventory};
use vesemir_testkit::conformance::inventory::{fleet, run_all};

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// The conformance fleet as listed hosts, for the fake and the static inventory alike.
fn listed() -> Vec<StaticHost> {
    fleet()
        .into_iter()
        .map(|node| StaticHost {
            name: HostName::new(node.name).expect("name"),
            address: node.address.to_owned(),
            tags: set(node.tags),
            roles: set(node.roles),
            recipes: set(node.recipes),
            environment: Some(EnvironmentName::new(node.environment).expect("env")),
            attributes: Default::default(),
        })
        .collect()
}

#[tokio::test]
async fn fake_inventory_conforms() {
    run_all(&FakeInventory::with_hosts(listed())).await;
}

#[tokio::test]
async fn static_inventory_conforms() {
    run_all(&StaticInventory::new(listed()).expect("valid hosts")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chef_inventory_on_goiardi_conforms() {
    let (_server, inventory) = common::fleet_server().await;
    run_all(&inventory).await;
}
