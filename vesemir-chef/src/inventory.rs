//! [`ChefInventory`]: the `Inventory` port over Chef server search, and the discovery of
//! HAProxy boxes as runtime API endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::OnceCell;
use vesemir_core::host::validate_address;
use vesemir_core::name::HostName;
use vesemir_core::ports::{Inventory, Selector};
use vesemir_core::{Host, PortError};

use crate::client::ChefClient;
use crate::config::{ChefConfig, ConfigError, ServerFlavor};
use crate::error::ChefError;
use crate::query;
use crate::search::{self, NodeRow, ADDRESS_KEY, EXTRA_PREFIX};

/// Finds hosts by Chef search. See [`ChefConfig`] for what it can be told.
#[derive(Debug, Clone)]
pub struct ChefInventory {
    client: ChefClient,
    flavor: ServerFlavor,
    detected: Arc<OnceCell<ServerFlavor>>,
    page_size: usize,
    address_attribute: String,
    extra_attributes: Vec<String>,
    allow_empty: bool,
    keys: Value,
}

impl ChefInventory {
    /// An inventory reading the server `config` names. Makes no request yet.
    pub fn new(config: ChefConfig) -> Result<Self, ConfigError> {
        if config.page_size == 0 || config.page_size > 10_000 {
            return Err(ConfigError::Invalid(format!(
                "page_size {} is out of range: use 1 to 10000 rows",
                config.page_size
            )));
        }
        let path_ok = |p: &str| !p.is_empty() && p.split('.').all(|s| !s.is_empty());
        for path in std::iter::once(&config.address_attribute).chain(&config.extra_attributes) {
            if !path_ok(path) {
                return Err(ConfigError::Invalid(format!(
                    "attribute path {path:?} is not a dotted path such as `ipaddress` or `cloud.local_ipv4`"
                )));
            }
        }
        let client = ChefClient::new(&config)?;
        let keys = search::partial_keys(&config.address_attribute, &config.extra_attributes);
        Ok(Self {
            client,
            flavor: config.flavor,
            detected: Arc::new(OnceCell::new()),
            page_size: config.page_size,
            address_attribute: config.address_attribute,
            extra_attributes: config.extra_attributes,
            allow_empty: config.allow_empty,
            keys,
        })
    }

    /// The signed API client this inventory searches with.
    pub fn client(&self) -> &ChefClient {
        &self.client
    }

    fn to_host(&self, row: NodeRow) -> Result<Host, ChefError> {
        let invalid = |reason: String| ChefError::InvalidNode { node: row.name.clone(), reason };
        let name = HostName::new(&row.name).map_err(|e| {
            invalid(format!(
                "its name is not a valid host name ({}); rename the node or narrow the search",
                e.rule
            ))
        })?;
        let address = match row.data.get(ADDRESS_KEY) {
            Some(Value::String(address)) if !address.is_empty() => address.clone(),
            _ => {
                return Err(invalid(format!(
                    "it has no `{}` attribute to take its address from; run chef-client on it or configure \
                     another address attribute",
                    self.address_attribute
                )))
            }
        };
        validate_address(&address)
            .map_err(|e| invalid(format!("its `{}` attribute: {e}", self.address_attribute)))?;
        let mut attributes = BTreeMap::new();
        for key in ["chef_environment", "fqdn", "ipaddress"] {
            if let Some(text) = row.data.get(key).and_then(attribute_text) {
                attributes.insert(key.to_owned(), text);
            }
        }
        for extra in &self.extra_attributes {
            if let Some(text) = row.data.get(&format!("{EXTRA_PREFIX}{extra}")).and_then(attribute_text) {
                attributes.insert(extra.clone(), text);
            }
        }
        Ok(Host { name, address, attributes })
    }

    /// The server flavor: as configured, or detected once and remembered.
    pub async fn flavor(&self) -> Result<ServerFlavor, PortError> {
        if self.flavor != ServerFlavor::Auto {
            return Ok(self.flavor);
        }
        self.detected.get_or_try_init(|| self.client.detect_flavor()).await.copied()
    }

    async fn search(&self, selector: &Selector, flavor: ServerFlavor) -> Result<Vec<Host>, ChefError> {
        let query = query::build(selector, flavor);
        let rows = search::search_nodes(&self.client, flavor, self.page_size, &query, &self.keys).await?;
        let (matching, other): (Vec<NodeRow>, Vec<NodeRow>) =
            rows.into_iter().partition(|row| search::row_matches(row, selector));
        if !other.is_empty() {
            // Expected with goiardi, whose query is wider than the selector (see `query`).
            tracing::debug!(count = other.len(), %selector, "search rows that do not match the selector exactly were left out");
        }
        let hosts = matching.into_iter().map(|row| self.to_host(row)).collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() && !self.allow_empty {
            return Err(ChefError::NoHosts {
                selector: selector.to_string(),
                server: self.client.server_url().to_owned(),
            });
        }
        tracing::debug!(count = hosts.len(), %selector, %query, "Chef search");
        Ok(hosts)
    }
}

#[async_trait]
impl Inventory for ChefInventory {
    async fn discover(&self, selector: &Selector) -> Result<Vec<Host>, PortError> {
        if selector.is_empty() {
            return Err(PortError::rejected(
                self.client.server_url(),
                "the selector names no tags, roles, recipes or query: refusing to select every node",
            ));
        }
        let flavor = self.flavor().await?;
        Ok(self.search(selector, flavor).await?)
    }
}

/// An attribute's value as text: strings as they are, numbers and booleans printed, lists
/// and maps as JSON; absent or null gives nothing.
fn attribute_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}
