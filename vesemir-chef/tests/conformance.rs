//! The shared `Inventory` conformance suite against the core's fake, the core's static
//! inventory and the Chef adapter over a real goiardi.

mod common;

use std::collections::BTreeSet;

use vesemir_core::fake::{FakeInventory, InventoryEntry};
use vesemir_core::name::{EnvironmentName, HostName};
use vesemir_core::static_inventory::{StaticHost, StaticInventory};
use vesemir_core::Host;
use vesemir_testkit::conformance::inventory::{fleet, run_all};

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[tokio::test]
async fn fake_inventory_conforms() {
    let entries = fleet().into_iter().map(|node| InventoryEntry {
        host: Host::new(HostName::new(node.name).expect("name"), node.address).expect("host"),
        tags: set(node.tags),
        roles: set(node.roles),
        recipes: set(node.recipes),
        environment: Some(EnvironmentName::new(node.environment).expect("env")),
    });
    run_all(&FakeInventory::with_entries(entries)).await;
}

#[tokio::test]
async fn static_inventory_conforms() {
    let hosts = fleet()
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
        .collect();
    run_all(&StaticInventory::new(hosts).expect("valid hosts")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chef_inventory_on_goiardi_conforms() {
    let (_server, inventory) = common::fleet_server().await;
    run_all(&inventory).await;
}
