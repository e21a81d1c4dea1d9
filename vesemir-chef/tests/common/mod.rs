//! Shared helpers of the goiardi tests: a server, signed clients, nodes made through the API.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use vesemir_chef::{ChefClient, ChefConfig, ChefInventory, ClientKey, ServerFlavor, SignVersion};
use vesemir_testkit::conformance::inventory::FleetNode;
use vesemir_testkit::goiardi::Goiardi;

/// A node to create.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub tags: Vec<String>,
    pub roles: Vec<String>,
    pub recipes: Vec<String>,
    pub environment: String,
}

impl Node {
    pub fn new(name: &str, address: &str, tags: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            address: address.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            roles: Vec::new(),
            recipes: Vec::new(),
            environment: "_default".to_owned(),
        }
    }

    pub fn from_fleet(node: &FleetNode) -> Self {
        Self {
            name: node.name.to_owned(),
            address: node.address.to_owned(),
            tags: node.tags.iter().map(|t| (*t).to_owned()).collect(),
            roles: node.roles.iter().map(|t| (*t).to_owned()).collect(),
            recipes: node.recipes.iter().map(|t| (*t).to_owned()).collect(),
            environment: node.environment.to_owned(),
        }
    }

    /// The node as chef-client would save it: tags as normal attributes, roles and recipes
    /// expanded into automatic attributes by ohai/chef-client.
    pub fn to_json(&self) -> Value {
        let mut run_list: Vec<String> = self.roles.iter().map(|r| format!("role[{r}]")).collect();
        run_list.extend(self.recipes.iter().map(|r| format!("recipe[{r}]")));
        json!({
            "name": self.name,
            "chef_type": "node",
            "json_class": "Chef::Node",
            "chef_environment": self.environment,
            "run_list": run_list,
            "default": {},
            "override": {},
            "normal": { "tags": self.tags },
            "automatic": {
                "ipaddress": self.address,
                "fqdn": format!("{}.example.com", self.name),
                "roles": self.roles,
                "recipes": self.recipes,
                "rack": { "row": format!("row-{}", self.name.len()) },
            },
        })
    }
}

/// A config for `client` with `key` at `url`, with fast retries for tests.
pub fn config(url: &str, client: &str, key: ClientKey) -> ChefConfig {
    let mut config = ChefConfig::new(url, client, key);
    config.retries = 2;
    config.retry_backoff = Duration::from_millis(50);
    config.max_retry_backoff = Duration::from_millis(200);
    config.request_timeout = Duration::from_secs(30);
    config
}

/// The `admin` client goiardi made, signing with `version`.
pub fn admin(server: &Goiardi, version: SignVersion) -> ChefClient {
    let key = ClientKey::from_file(&server.admin_key_path).expect("goiardi's admin key");
    let mut config = config(&server.url, "admin", key);
    config.sign_version = version;
    config.flavor = ServerFlavor::Goiardi;
    ChefClient::new(&config).expect("admin client")
}

/// Creates an API client (not an admin) and answers its new private key.
pub async fn create_client(admin: &ChefClient, name: &str) -> ClientKey {
    let answer =
        admin.post("/clients", &[], &json!({ "name": name, "admin": false })).await.expect("create client");
    let pem = answer.get("private_key").and_then(Value::as_str).expect("the server made a key");
    ClientKey::from_pem(pem.as_bytes()).expect("a PEM key")
}

/// Creates the environments the nodes are in.
pub async fn create_environments(admin: &ChefClient, names: &[&str]) {
    for name in names {
        admin
            .post(
                "/environments",
                &[],
                &json!({
                    "name": name, "json_class": "Chef::Environment", "chef_type": "environment",
                    "description": "", "default_attributes": {}, "override_attributes": {}, "cookbook_versions": {},
                }),
            )
            .await
            .expect("create environment");
    }
}

/// Creates `nodes` through signed API calls, `concurrency` at a time, and waits until the
/// search index holds them all: goiardi indexes a saved node in a goroutine after answering
/// (`indexer.IndexObj` is `go objIndex.SaveItem(...)`), and Chef Infra Server's Solr commits
/// with a delay too, so a search right after a save may not see it yet.
pub async fn create_nodes(admin: &ChefClient, nodes: Vec<Node>, concurrency: usize) {
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for node in nodes {
        let admin = admin.clone();
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            admin
                .post("/nodes", &[], &node.to_json())
                .await
                .map_err(|e| format!("{}: {}", node.name, e.chain()))
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task ran").expect("node created");
    }
    wait_indexed(admin, &names).await;
}

/// Waits (at most 60 s) until a search of every node finds all of `names`.
pub async fn wait_indexed(admin: &ChefClient, names: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let keys = json!({ "name": ["name"] });
    loop {
        let answer = admin
            .post("/search/node", &[("q", "*:*"), ("rows", "1000000"), ("start", "0")], &keys)
            .await
            .expect("search");
        let found: BTreeSet<&str> = answer["rows"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r["data"]["name"].as_str()).collect())
            .unwrap_or_default();
        let missing = names.iter().filter(|n| !found.contains(n.as_str())).count();
        if missing == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{missing} nodes still not indexed after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An inventory signing as `client` with `key`.
pub fn inventory(server: &Goiardi, client: &str, key: ClientKey) -> ChefInventory {
    ChefInventory::new(config(&server.url, client, key)).expect("inventory")
}

/// goiardi with the conformance fleet, and an inventory reading it as a non-admin client.
pub async fn fleet_server() -> (Goiardi, ChefInventory) {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    create_environments(&admin, &["production", "staging"]).await;
    let nodes = vesemir_testkit::conformance::inventory::fleet().iter().map(Node::from_fleet).collect();
    create_nodes(&admin, nodes, 8).await;
    let key = create_client(&admin, "vesemir").await;
    let inventory = inventory(&server, "vesemir", key);
    (server, inventory)
}
