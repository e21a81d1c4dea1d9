//! The provisioning workflow's `ChefRegistry` port over the signed [`ChefClient`]: a new VM's API client
//! (the server makes its key pair) and node (environment, run list, address), registered all or
//! nothing, unregistered idempotently, and found by search in its environment.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::{ChefClient, NodeSpec, RegistryError, RunListItem};
use vesemir_core::name::{EnvironmentName, HostName};
use vesemir_core::provision::{ChefClientKey, ChefNode, ChefRegistry, Fqdn};
use vesemir_core::PortError;

use async_trait::async_trait;

/// The `ChefRegistry` port. The client it is given signs as a Chef user or client allowed to
/// create and delete clients and nodes (an admin client).
#[derive(Debug, Clone)]
pub struct ChefNodes {
    client: ChefClient,
}

impl ChefNodes {
    /// A registry writing through `client`.
    pub fn new(client: ChefClient) -> Self {
        Self { client }
    }
}

/// The node's (and its client's) name in Chef: the VM's DNS name.
fn node_name(fqdn: &Fqdn) -> Result<HostName, PortError> {
    HostName::new(fqdn.to_string())
        .map_err(|e| PortError::rejected(format!("Chef node {fqdn}"), format!("not a Chef name: {e}")))
}

fn port_error(error: RegistryError) -> PortError {
    let target = "Chef server";
    match error {
        error
        @ (RegistryError::Exists { .. } | RegistryError::Missing { .. } | RegistryError::Refused(_)) => {
            PortError::rejected(target, error.to_string())
        }
        RegistryError::Denied(reason) => PortError::Unauthorized { target: target.to_owned(), reason },
        RegistryError::Unavailable(reason) => PortError::unreachable(target, reason),
        other => PortError::Adapter { adapter: "chef", source: other.to_string().into() },
    }
}

#[async_trait]
impl ChefRegistry for ChefNodes {
    async fn register(&self, node: &ChefNode) -> Result<ChefClientKey, PortError> {
        let name = node_name(&node.fqdn)?;
        let run_list = node
            .run_list
            .iter()
            .map(|entry| RunListItem::parse(&entry.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PortError::rejected(format!("Chef node {name}"), e.to_string()))?;
        let spec = NodeSpec {
            name: name.clone(),
            environment: node.environment.clone(),
            run_list,
            ipaddress: node.address.to_string(),
            fqdn: node.fqdn.to_string(),
            tags: Vec::new(),
        };
        let client = self.client.create_client(&name).await.map_err(port_error)?;
        if let Err(error) = self.client.create_node(&spec).await {
            // All or nothing: the client made a moment ago goes again. The node is not touched:
            // a node that exists belongs to someone else.
            if let Err(undo) = self.client.delete_client(&name).await {
                return Err(PortError::Adapter {
                    adapter: "chef",
                    source: format!(
                        "{error}; and client {name} made for it could not be deleted again: {undo}"
                    )
                    .into(),
                });
            }
            return Err(port_error(error));
        }
        Ok(ChefClientKey::new(client.pem.expose()))
    }

    async fn unregister(&self, fqdn: &Fqdn) -> Result<(), PortError> {
        let name = node_name(fqdn)?;
        let node = self.client.delete_node(&name).await.map_err(port_error);
        let client = self.client.delete_client(&name).await.map_err(port_error);
        node.and(client).map(drop)
    }

    async fn find(&self, fqdn: &Fqdn, environment: &EnvironmentName) -> Result<bool, PortError> {
        let name = node_name(fqdn)?;
        self.client.find_node(&name, environment).await.map_err(port_error)
    }

    async fn addresses(&self) -> Result<BTreeSet<Ipv4Addr>, PortError> {
        self.client.node_addresses().await.map_err(port_error)
    }
}
