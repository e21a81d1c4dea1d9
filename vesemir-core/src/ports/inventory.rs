//! The `Inventory` port: find the hosts a selector names.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::PortError;
use crate::host::Host;
use crate::name::{ChefTerm, EnvironmentName};

/// Which hosts to find: every listed term must match (tags AND roles AND recipes AND the
/// environment), or an operator's raw query is used as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Tags a host must all carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<ChefTerm>,
    /// Roles a host must all have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<ChefTerm>,
    /// Recipes a host's run list must all contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipes: Vec<ChefTerm>,
    /// The inventory's environment the hosts must be in (Chef's `chef_environment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentName>,
    /// A raw query in the inventory's own language. Only from operator configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_query: Option<String>,
}

/// Which of a host's lists a selector term is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermKind {
    /// The host's tags (Chef `tags`).
    Tag,
    /// The host's roles (Chef `roles`, expanded from the run list).
    Role,
    /// The recipes of its run list.
    Recipe,
}

impl Selector {
    /// Whether the selector names nothing at all (which would match every host).
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.roles.is_empty() && self.recipes.is_empty() && self.raw_query.is_none()
    }

    /// Whether a host matches every term exactly: each wanted tag, role and recipe is one the
    /// host `has`, and the host is in the selector's environment if it names one. The one
    /// matching rule for inventories that match in memory (the static inventory, the fake, the
    /// Chef adapter's check of search rows). A raw query is the inventory's own language and
    /// matches nothing here.
    pub fn matches(&self, has: impl Fn(TermKind, &str) -> bool, environment: Option<&str>) -> bool {
        let all = |kind, wanted: &[ChefTerm]| wanted.iter().all(|w| has(kind, w.as_str()));
        self.raw_query.is_none()
            && all(TermKind::Tag, &self.tags)
            && all(TermKind::Role, &self.roles)
            && all(TermKind::Recipe, &self.recipes)
            && self.environment.as_ref().is_none_or(|env| environment == Some(env.as_str()))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(raw) = &self.raw_query {
            return write!(f, "query {raw:?}");
        }
        let mut parts = Vec::new();
        let mut list = |label: &str, terms: &[ChefTerm]| {
            if !terms.is_empty() {
                let names: Vec<&str> = terms.iter().map(ChefTerm::as_str).collect();
                parts.push(format!("{label} {}", names.join(", ")));
            }
        };
        list("tags", &self.tags);
        list("roles", &self.roles);
        list("recipes", &self.recipes);
        if let Some(env) = &self.environment {
            parts.push(format!("environment {env}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Finds hosts. An adapter answers with every matching host exactly once; an empty answer is
/// an error unless the adapter was configured to allow it.
#[async_trait]
pub trait Inventory: Send + Sync + Debug {
    /// Every host that matches `selector`.
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError>;
}

#[async_trait]
impl<T: Inventory + ?Sized> Inventory for &T {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        (**self).discover(selector).await
    }
}

#[async_trait]
impl<T: Inventory + ?Sized> Inventory for Box<T> {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        (**self).discover(selector).await
    }
}

#[async_trait]
impl<T: Inventory + ?Sized> Inventory for Arc<T> {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        (**self).discover(selector).await
    }
}
