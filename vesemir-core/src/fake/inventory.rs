//! A fake [`Inventory`]: hosts with tags, roles, recipes and an environment, matched like a
//! Chef search would match them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::lock;
use crate::error::PortError;
use crate::host::Host;
use crate::name::EnvironmentName;
use crate::ports::{Inventory, Selector, TermKind};

/// A host as the fake inventory knows it.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    /// The host a matching search answers.
    pub host: Host,
    /// Its tags. A selector's tags, roles and recipes must all be among the entry's.
    pub tags: BTreeSet<String>,
    /// Its roles (Chef roles).
    pub roles: BTreeSet<String>,
    /// The recipes of its run list.
    pub recipes: BTreeSet<String>,
    /// The deployment environment it is in, matched against the selector's.
    pub environment: Option<EnvironmentName>,
}

impl InventoryEntry {
    /// A host with these tags and nothing else.
    pub fn tagged(host: Host, tags: &[&str]) -> Self {
        Self {
            host,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            roles: BTreeSet::new(),
            recipes: BTreeSet::new(),
            environment: None,
        }
    }

    /// The same entry in `environment`.
    pub fn in_environment(mut self, environment: EnvironmentName) -> Self {
        self.environment = Some(environment);
        self
    }

    fn matches(&self, selector: &Selector) -> bool {
        let has = |kind, term: &str| match kind {
            TermKind::Tag => self.tags.contains(term),
            TermKind::Role => self.roles.contains(term),
            TermKind::Recipe => self.recipes.contains(term),
        };
        selector.matches(has, self.environment.as_ref().map(EnvironmentName::as_str))
    }
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, InventoryEntry>,
    unreachable: bool,
    searches: usize,
}

/// A fake inventory. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeInventory {
    state: Arc<Mutex<State>>,
}

impl FakeInventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An inventory of these entries.
    pub fn with_entries(entries: impl IntoIterator<Item = InventoryEntry>) -> Self {
        let inventory = Self::new();
        for entry in entries {
            inventory.add(entry);
        }
        inventory
    }

    /// Adds (or replaces) a host.
    pub fn add(&self, entry: InventoryEntry) {
        lock(&self.state).entries.insert(entry.host.name.to_string(), entry);
    }

    /// Makes every search fail as if the server were down (`true`) or work again (`false`).
    pub fn set_unreachable(&self, unreachable: bool) {
        lock(&self.state).unreachable = unreachable;
    }

    /// How many searches were made.
    pub fn searches(&self) -> usize {
        lock(&self.state).searches
    }
}

#[async_trait]
impl Inventory for FakeInventory {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        let mut state = lock(&self.state);
        state.searches += 1;
        if state.unreachable {
            return Err(PortError::unreachable("fake inventory", "injected fault: inventory down"));
        }
        if selector.raw_query.is_some() {
            return Err(PortError::rejected("fake inventory", "raw queries are not supported by the fake"));
        }
        // Like the real adapters: a selector that names nothing would select every host.
        if selector.is_empty() {
            return Err(PortError::rejected(
                "fake inventory",
                "the selector names no tags, roles, recipes or query: refusing to select every host",
            ));
        }
        let hosts: Vec<Host> =
            state.entries.values().filter(|e| e.matches(selector)).map(|e| e.host.clone()).collect();
        if hosts.is_empty() {
            return Err(PortError::not_found(format!("hosts matching {selector}")));
        }
        Ok(hosts)
    }
}
