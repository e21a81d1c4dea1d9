//! Registers the lab in its Chef server (goiardi): the hosts as nodes tagged [`WEB_TAG`], the
//! HAProxy boxes as nodes tagged [`HAPROXY_TAG`], all in the [`ENVIRONMENT`] environment with
//! their `ipaddress`; then waits until search finds them all.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vesemir_chef::{ChefClient, ChefConfig, ChefInventory, ClientKey, ServerFlavor};
use vesemir_core::name::{ChefTerm, EnvironmentName};
use vesemir_core::ports::{Inventory, Selector};

use vesemir_testkit::goiardi::Goiardi;

use super::error::{Context, LabError, LabResult};

/// The tag of the lab's hosts.
pub const WEB_TAG: &str = "lab-web";

/// The tag of the hosts of the lab's second backend, when it has one
/// (`LabOptions::second_backend`): a search for [`WEB_TAG`] does not find them.
pub const SECOND_WEB_TAG: &str = "lab-web-2";
/// The tag of the lab's HAProxy boxes.
pub const HAPROXY_TAG: &str = "lab-haproxy";
/// The Chef environment of every lab node (and the deployments' `environment`).
pub const ENVIRONMENT: &str = "lab";

/// The admin client's configuration for `server`.
pub fn admin_config(server: &Goiardi) -> LabResult<ChefConfig> {
    let key =
        ClientKey::from_file(&server.admin_key_path).context(|| "cannot read goiardi's admin key".into())?;
    let mut config = ChefConfig::new(&server.url, "admin", key);
    config.flavor = ServerFlavor::Goiardi;
    config.request_timeout = Duration::from_secs(20);
    Ok(config)
}

/// Creates the environment and the nodes `(name, address, tag)`, then waits until both searches
/// find every node.
pub async fn register(server: &Goiardi, nodes: &[(String, String, &'static str)]) -> LabResult<()> {
    let config = admin_config(server)?;
    let client = ChefClient::new(&config).context(|| "cannot make a Chef client".into())?;
    let environment = json!({
        "name": ENVIRONMENT, "json_class": "Chef::Environment", "chef_type": "environment",
        "description": "Vesemir lab", "default_attributes": {}, "override_attributes": {}, "cookbook_versions": {},
    });
    client
        .post("/environments", &[], &environment)
        .await
        .context(|| "cannot create the lab environment".into())?;
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
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(LabError::new(format!("cannot register a lab node in Chef: {e}"))),
            Err(e) => return Err(LabError::new(format!("registering a lab node in Chef failed: {e}"))),
        }
    }
    let inventory = ChefInventory::new(config).context(|| "cannot make a Chef inventory".into())?;
    for tag in [WEB_TAG, HAPROXY_TAG] {
        let expected = nodes.iter().filter(|(_, _, t)| *t == tag).count();
        let selector = selector(tag)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = inventory.discover(&selector).await.map(|h| h.len()).unwrap_or(0);
            if found == expected {
                break;
            }
            if Instant::now() >= deadline {
                return Err(LabError::new(format!(
                    "Chef search found {found} of {expected} nodes tagged {tag} after 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn selector(tag: &str) -> LabResult<Selector> {
    Ok(Selector {
        tags: vec![ChefTerm::new(tag).context(|| format!("tag {tag}"))?],
        environment: Some(
            EnvironmentName::new(ENVIRONMENT).context(|| format!("environment {ENVIRONMENT}"))?,
        ),
        ..Selector::default()
    })
}

fn node(name: &str, address: &str, tag: &str) -> Value {
    json!({
        "name": name, "chef_type": "node", "json_class": "Chef::Node", "chef_environment": ENVIRONMENT,
        "run_list": [], "default": {}, "override": {}, "normal": { "tags": [tag] },
        "automatic": { "ipaddress": address, "fqdn": format!("{name}.lab.invalid") },
    })
}
