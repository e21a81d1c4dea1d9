//! A fake [`Inventory`]: [`StaticHost`]s matched exactly as the core's [`StaticInventory`]
//! matches them (one selector rule), plus fault injection: a search can fail as if the server
//! were down, and searches are counted.
//!
//! [`StaticInventory`]: crate::static_inventory::StaticInventory

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::lock;
use crate::error::PortError;
use crate::host::Host;
use crate::name::HostName;
use crate::ports::{Inventory, Selector};
use crate::static_inventory::{select, StaticHost};

#[derive(Debug, Default)]
struct State {
    hosts: BTreeMap<HostName, StaticHost>,
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

    /// An inventory of these hosts (unlike [`StaticInventory::new`], a name listed twice
    /// replaces the earlier host, and addresses are not checked).
    ///
    /// [`StaticInventory::new`]: crate::static_inventory::StaticInventory::new
    pub fn with_hosts(hosts: impl IntoIterator<Item = StaticHost>) -> Self {
        let inventory = Self::new();
        for host in hosts {
            inventory.add(host);
        }
        inventory
    }

    /// Adds (or replaces, by name) a host.
    pub fn add(&self, host: StaticHost) {
        lock(&self.state).hosts.insert(host.name.clone(), host);
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
        select("fake inventory", state.hosts.values(), selector, false)
    }
}
