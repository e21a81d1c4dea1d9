//! Registers the lab in its Chef server (goiardi): the hosts as nodes tagged [`WEB_TAG`], the
//! HAProxy boxes as nodes tagged [`HAPROXY_TAG`], all in the [`ENVIRONMENT`] environment with
//! their `ipaddress`; then waits until search finds them all.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vesemir_chef::{ChefClient, ChefConfig, ChefInventory, ClientKey, ServerFlavor};
use vesemir_core::name::{ChefTerm, EnvironmentName};
use vesemir_core::ports::{Inventory, Selector};

use crate::goiardi::Goiardi;

/// The tag of the lab's hosts.
pub const WEB_TAG: &str = "lab-web";
/// The tag of the lab's HAProxy boxes.
pub const HAPROXY_TAG: &str = "lab-haproxy";
/// The Chef environment of every lab node (and the deployments' `environment`).
pub const ENVIRONMENT: &str = "lab";

/// The admin client's configuration for `server`.
pub fn admin_config(server: &Goiardi) -> ChefConfig {
    let key = ClientKey::from_file(&server.admin_key_path)
        .unwrap_or_else(|e| panic!("cannot read goiardi's admin key: {e}"));
    let mut config = ChefConfig::new(&server.url, "admin", key);
    config.flavor = ServerFlavor::Goiardi;
    config.request_timeout = Duration::from_secs(20);
    config
}

/// Creates the environment and the nodes `(name, address, tag)`, then waits until both searches
/// find every node.
pub async fn register(server: &Goiardi, nodes: &[(String, String, &'static str)]) {
    let config = admin_config(server);
    let client = ChefClient::new(&config).unwrap_or_else(|e| panic!("cannot make a Chef client: {e}"));
    let environment = json!({
        "name": ENVIRONMENT, "json_class": "Chef::Environment", "chef_type": "environment",
        "description": "Vesemir lab", "default_attributes": {}, "override_attributes": {}, "cookbook_versions": {},
    });
    client
        .post("/environments", &[], &environment)
        .await
        .unwrap_or_else(|e| panic!("cannot create the lab environment: {e}"));
    let mut tasks = tokio::task::JoinSet::new();
    for (name, address, tag) in nodes {
        let client = client.clone();
        let node = node(name, address, tag);
        let name = name.clone();
        tasks.spawn(
            async move { client.post("/nodes", &[], &node).await.map_err(|e| format!("{name}: {e}")) },
        );
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            panic!("cannot register a lab node in Chef: {e}");
        }
    }
    let inventory =
        ChefInventory::new(config).unwrap_or_else(|e| panic!("cannot make a Chef inventory: {e}"));
    for tag in [WEB_TAG, HAPROXY_TAG] {
        let expected = nodes.iter().filter(|(_, _, t)| *t == tag).count();
        let selector = selector(tag);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = inventory.discover(&selector).await.map(|h| h.len()).unwrap_or(0);
            if found == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Chef search found {found} of {expected} nodes tagged {tag} after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn selector(tag: &str) -> Selector {
    Selector {
        tags: vec![ChefTerm::new(tag).unwrap_or_else(|e| panic!("tag {tag}: {e}"))],
        environment: Some(EnvironmentName::new(ENVIRONMENT).unwrap_or_else(|e| panic!("environment: {e}"))),
        ..Selector::default()
    }
}

fn node(name: &str, address: &str, tag: &str) -> Value {
    json!({
        "name": name, "chef_type": "node", "json_class": "Chef::Node", "chef_environment": ENVIRONMENT,
        "run_list": [], "default": {}, "override": {}, "normal": { "tags": [tag] },
        "automatic": { "ipaddress": address, "fqdn": format!("{name}.lab.invalid") },
    })
}
