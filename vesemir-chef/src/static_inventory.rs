//! [`StaticInventory`]: hosts listed by the operator (in code or a TOML file), matched against a
//! selector the way Chef search matches nodes. For users without a Chef server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vesemir_core::host::validate_address;
use vesemir_core::name::{EnvironmentName, HostName};
use vesemir_core::ports::{Inventory, Selector};
use vesemir_core::{Host, PortError};

/// One host of a static inventory: where it is and what it is tagged with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHost {
    /// The host's name.
    pub name: HostName,
    /// Its IP address or DNS name.
    pub address: String,
    /// Its tags.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Its roles.
    #[serde(default)]
    pub roles: BTreeSet<String>,
    /// Its recipes.
    #[serde(default)]
    pub recipes: BTreeSet<String>,
    /// Its environment.
    #[serde(default)]
    pub environment: Option<EnvironmentName>,
    /// Extra attributes handed on in [`Host::attributes`].
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl StaticHost {
    fn matches(&self, selector: &Selector) -> bool {
        let all = |wanted: &[vesemir_core::name::ChefTerm], have: &BTreeSet<String>| {
            wanted.iter().all(|w| have.contains(w.as_str()))
        };
        all(&selector.tags, &self.tags)
            && all(&selector.roles, &self.roles)
            && all(&selector.recipes, &self.recipes)
            && selector.environment.as_ref().is_none_or(|env| self.environment.as_ref() == Some(env))
    }

    fn to_host(&self) -> Host {
        let mut attributes = self.attributes.clone();
        if let Some(env) = &self.environment {
            attributes.insert("chef_environment".to_owned(), env.to_string());
        }
        Host { name: self.name.clone(), address: self.address.clone(), attributes }
    }
}

/// Why a static inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StaticInventoryError {
    /// The file could not be read.
    #[error("cannot read the static inventory {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields or invalid names.
    #[error("the static inventory is not valid: {0}")]
    Parse(String),
    /// A host's address is not an IP address or DNS name.
    #[error("static host {host}: {reason}")]
    Address {
        /// The host.
        host: String,
        /// Why its address was refused.
        reason: String,
    },
    /// Two hosts share a name.
    #[error("static host {0} is listed twice: host names must be unique")]
    Duplicate(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticFile {
    #[serde(default)]
    hosts: Vec<StaticHost>,
}

/// An inventory of hosts listed up front. Matches tags, roles, recipes and the environment
/// exactly; refuses raw queries (there is no query language to run them in).
#[derive(Debug, Clone, Default)]
pub struct StaticInventory {
    hosts: Vec<StaticHost>,
    allow_empty: bool,
}

impl StaticInventory {
    /// An inventory of `hosts`, checked: valid addresses and unique names.
    pub fn new(hosts: Vec<StaticHost>) -> Result<Self, StaticInventoryError> {
        let mut seen = BTreeSet::new();
        for host in &hosts {
            validate_address(&host.address).map_err(|e| StaticInventoryError::Address {
                host: host.name.to_string(),
                reason: e.to_string(),
            })?;
            if !seen.insert(host.name.clone()) {
                return Err(StaticInventoryError::Duplicate(host.name.to_string()));
            }
        }
        Ok(Self { hosts, allow_empty: false })
    }

    /// Parses TOML with one `[[hosts]]` table per host:
    ///
    /// ```toml
    /// [[hosts]]
    /// name = "web-01"
    /// address = "10.0.0.1"
    /// tags = ["shop"]
    /// roles = ["web"]
    /// recipes = ["shop::web"]
    /// environment = "production"
    /// attributes = { rack = "a1" }
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, StaticInventoryError> {
        let file: StaticFile =
            toml::from_str(text).map_err(|e| StaticInventoryError::Parse(e.to_string()))?;
        Self::new(file.hosts)
    }

    /// Reads [`StaticInventory::from_toml_str`]'s format from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, StaticInventoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| StaticInventoryError::Read { path: path.display().to_string(), source })?;
        Self::from_toml_str(&text)
    }

    /// Answer an empty match with no hosts instead of an error.
    pub fn allow_empty(mut self, allow: bool) -> Self {
        self.allow_empty = allow;
        self
    }

    /// The listed hosts.
    pub fn hosts(&self) -> &[StaticHost] {
        &self.hosts
    }
}

#[async_trait]
impl Inventory for StaticInventory {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        if selector.raw_query.is_some() {
            return Err(PortError::rejected(
                "static inventory",
                "raw queries need a Chef server; select static hosts by tags, roles, recipes and environment",
            ));
        }
        if selector.is_empty() {
            return Err(PortError::rejected(
                "static inventory",
                "the selector names no tags, roles or recipes: refusing to select every host",
            ));
        }
        let mut hosts: Vec<Host> =
            self.hosts.iter().filter(|h| h.matches(selector)).map(StaticHost::to_host).collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        if hosts.is_empty() && !self.allow_empty {
            return Err(PortError::not_found(format!(
                "no hosts match {selector} in the static inventory: refusing to deploy to nothing"
            )));
        }
        Ok(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::name::ChefTerm;

    const FILE: &str = r#"
[[hosts]]
name = "web-01"
address = "10.0.0.1"
tags = ["shop", "blue green"]
roles = ["web"]
environment = "production"
attributes = { rack = "a1" }

[[hosts]]
name = "web-02"
address = "web-02.example.com"
tags = ["shop"]
"#;

    fn tags(values: &[&str]) -> Selector {
        Selector {
            tags: values.iter().map(|v| ChefTerm::new(v).expect("term")).collect(),
            ..Selector::default()
        }
    }

    #[tokio::test]
    async fn toml_file_hosts_are_matched_by_selector() {
        let inventory = StaticInventory::from_toml_str(FILE).expect("valid file");
        let hosts = inventory.discover(&tags(&["shop"])).await.expect("match");
        assert_eq!(hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["web-01", "web-02"]);
        let hosts = inventory.discover(&tags(&["blue green"])).await.expect("match");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].address, "10.0.0.1");
        assert_eq!(hosts[0].attributes.get("rack").map(String::as_str), Some("a1"));
        assert_eq!(hosts[0].attributes.get("chef_environment").map(String::as_str), Some("production"));
    }

    #[tokio::test]
    async fn raw_queries_are_refused_with_a_clear_message() {
        let inventory = StaticInventory::from_toml_str(FILE).expect("valid file");
        let raw = Selector { raw_query: Some("tags:shop".into()), ..Selector::default() };
        match inventory.discover(&raw).await {
            Err(PortError::Rejected { reason, .. }) => {
                assert!(reason.contains("raw queries need a Chef server"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_match_is_an_error_unless_allowed() {
        let inventory = StaticInventory::from_toml_str(FILE).expect("valid file");
        let error = inventory.discover(&tags(&["nope"])).await.expect_err("no match");
        assert!(matches!(error, PortError::NotFound { .. }), "{error}");
        let lenient = inventory.allow_empty(true);
        assert!(lenient.discover(&tags(&["nope"])).await.expect("allowed").is_empty());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let unknown = StaticInventory::from_toml_str(
            "[[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\ncolour = \"red\"\n",
        );
        assert!(unknown.expect_err("unknown field").to_string().contains("colour"));
        let bad_name = StaticInventory::from_toml_str("[[hosts]]\nname = \"a b\"\naddress = \"10.0.0.1\"\n");
        assert!(bad_name.expect_err("bad name").to_string().contains("host name"));
        let bad_address = StaticInventory::from_toml_str("[[hosts]]\nname = \"a\"\naddress = \"$(id)\"\n");
        assert!(bad_address.expect_err("bad address").to_string().contains("static host a"));
        let twice = StaticInventory::from_toml_str(
            "[[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"a\"\naddress = \"10.0.0.2\"\n",
        );
        assert!(twice.expect_err("duplicate").to_string().contains("listed twice"));
    }
}
