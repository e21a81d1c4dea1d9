//! [`StaticInventory`]: an [`Inventory`] over hosts the operator lists up front, matched
//! against a selector by [`Selector::matches`] (the way Chef search matches nodes). For users
//! without a Chef server. Pure: reading the list from a file is the front end's business.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::PortError;
use crate::host::{validate_address, Host};
use crate::name::{EnvironmentName, HostName};
use crate::ports::{Inventory, Selector, TermKind};

/// One listed host: its name and address, the terms a selector finds it by, and attributes
/// handed on in [`Host::attributes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHost {
    /// The host's name, as events and reports show it.
    pub name: HostName,
    /// Its IP address or DNS name (checked by [`StaticInventory::new`]).
    pub address: String,
    /// Its tags. A selector's tags, roles and recipes must all be among the host's.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Its roles (Chef roles, or any grouping the operator uses).
    #[serde(default)]
    pub roles: BTreeSet<String>,
    /// The recipes of its run list.
    #[serde(default)]
    pub recipes: BTreeSet<String>,
    /// The deployment environment it belongs to, also handed on as the `chef_environment`
    /// attribute.
    #[serde(default)]
    pub environment: Option<EnvironmentName>,
    /// Extra attributes handed on in [`Host::attributes`].
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl StaticHost {
    /// `host` (its name, address and attributes) with these tags and nothing else.
    pub fn tagged(host: Host, tags: &[&str]) -> Self {
        Self {
            name: host.name,
            address: host.address,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            roles: BTreeSet::new(),
            recipes: BTreeSet::new(),
            environment: None,
            attributes: host.attributes,
        }
    }

    /// The same host in `environment`.
    pub fn in_environment(mut self, environment: EnvironmentName) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Whether `selector` finds this host: [`Selector::matches`] over its terms and environment.
    pub fn matches(&self, selector: &Selector) -> bool {
        let has = |kind, term: &str| match kind {
            TermKind::Tag => self.tags.contains(term),
            TermKind::Role => self.roles.contains(term),
            TermKind::Recipe => self.recipes.contains(term),
        };
        selector.matches(has, self.environment.as_ref().map(EnvironmentName::as_str))
    }

    /// The host a search answers: its attributes, plus `chef_environment` when it has one.
    pub fn to_host(&self) -> Host {
        let mut attributes = self.attributes.clone();
        if let Some(env) = &self.environment {
            attributes.insert("chef_environment".to_owned(), env.to_string());
        }
        Host { name: self.name.clone(), address: self.address.clone(), attributes }
    }
}

/// Answers `selector` from a list of hosts, as [`StaticInventory`] and the fake inventory do:
/// raw queries and selectors that name nothing are refused (`who` names the inventory in the
/// error), the matching hosts come sorted by name, and no match is an error unless
/// `allow_empty`.
pub(crate) fn select<'a>(
    who: &'static str,
    hosts: impl IntoIterator<Item = &'a StaticHost>,
    selector: &Selector,
    allow_empty: bool,
) -> Result<Vec<Host>, PortError> {
    if selector.raw_query.is_some() {
        return Err(PortError::rejected(
            who,
            "raw queries need a Chef server; select static hosts by tags, roles, recipes and environment",
        ));
    }
    if selector.is_empty() {
        return Err(PortError::rejected(
            who,
            "the selector names no tags, roles or recipes: refusing to select every host",
        ));
    }
    let mut hosts: Vec<Host> =
        hosts.into_iter().filter(|h| h.matches(selector)).map(StaticHost::to_host).collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    if hosts.is_empty() && !allow_empty {
        return Err(PortError::not_found(format!(
            "no hosts match {selector} in the {who}: refusing to deploy to nothing"
        )));
    }
    Ok(hosts)
}

/// Why a list of hosts cannot make a static inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaticInventoryError {
    /// A host's address is not an IP address or DNS name.
    #[error("static host {host}: {reason}")]
    Address {
        /// The host whose address was refused.
        host: HostName,
        /// Why it was refused.
        reason: String,
    },
    /// Two hosts share a name.
    #[error("static host {host} is listed twice: host names must be unique")]
    Duplicate {
        /// The name listed more than once.
        host: HostName,
    },
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
                host: host.name.clone(),
                reason: e.to_string(),
            })?;
            if !seen.insert(host.name.clone()) {
                return Err(StaticInventoryError::Duplicate { host: host.name.clone() });
            }
        }
        Ok(Self { hosts, allow_empty: false })
    }

    /// Answer an empty match with no hosts instead of an error.
    pub fn allow_empty(mut self, allow: bool) -> Self {
        self.allow_empty = allow;
        self
    }
}

#[async_trait]
impl Inventory for StaticInventory {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        select("static inventory", &self.hosts, selector, self.allow_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::ChefTerm;

    fn host(name: &str, address: &str, tags: &[&str]) -> StaticHost {
        StaticHost {
            name: HostName::new(name).expect("name"),
            address: address.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            roles: BTreeSet::from(["web".to_owned()]),
            recipes: BTreeSet::new(),
            environment: None,
            attributes: BTreeMap::new(),
        }
    }

    fn inventory() -> StaticInventory {
        let mut first = host("web-01", "10.0.0.1", &["shop", "blue green"]);
        first.environment = Some(EnvironmentName::new("production").expect("env"));
        first.attributes.insert("rack".into(), "a1".into());
        StaticInventory::new(vec![host("web-02", "web-02.example.com", &["shop"]), first]).expect("valid")
    }

    fn tags(values: &[&str]) -> Selector {
        Selector {
            tags: values.iter().map(|v| ChefTerm::new(v).expect("term")).collect(),
            ..Selector::default()
        }
    }

    #[tokio::test]
    async fn hosts_are_matched_by_selector_sorted_by_name() {
        let inventory = inventory();
        let hosts = inventory.discover(&tags(&["shop"])).await.expect("match");
        assert_eq!(hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["web-01", "web-02"]);
        let hosts = inventory.discover(&tags(&["blue green"])).await.expect("match");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].address, "10.0.0.1");
        assert_eq!(hosts[0].attributes.get("rack").map(String::as_str), Some("a1"));
        assert_eq!(hosts[0].attributes.get("chef_environment").map(String::as_str), Some("production"));
        let mut in_staging = tags(&["shop"]);
        in_staging.environment = Some(EnvironmentName::new("staging").expect("env"));
        assert!(inventory.clone().allow_empty(true).discover(&in_staging).await.expect("ok").is_empty());
    }

    #[tokio::test]
    async fn raw_queries_are_refused_with_a_clear_message() {
        let raw = Selector { raw_query: Some("tags:shop".into()), ..Selector::default() };
        match inventory().discover(&raw).await {
            Err(PortError::Rejected { reason, .. }) => {
                assert!(reason.contains("raw queries need a Chef server"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_match_is_an_error_unless_allowed() {
        let error = inventory().discover(&tags(&["nope"])).await.expect_err("no match");
        assert!(matches!(error, PortError::NotFound { .. }), "{error}");
        let lenient = inventory().allow_empty(true);
        assert!(lenient.discover(&tags(&["nope"])).await.expect("allowed").is_empty());
    }

    #[test]
    fn bad_hosts_are_refused_with_the_reason() {
        let bad_address = StaticInventory::new(vec![host("a", "$(id)", &[])]);
        assert!(bad_address.expect_err("bad address").to_string().contains("static host a"));
        let twice = StaticInventory::new(vec![host("a", "10.0.0.1", &[]), host("a", "10.0.0.2", &[])]);
        assert!(twice.expect_err("duplicate").to_string().contains("listed twice"));
    }
}
