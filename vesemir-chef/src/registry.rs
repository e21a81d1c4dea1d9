//! Writing to the Chef server, for provisioning: create and delete API clients (the server
//! makes the client's key pair and answers its private key once), create, update and delete
//! nodes with their environment, run list and automatic attributes. Every call is signed and
//! retried like a search ([`ChefClient`]); failures are [`RegistryError`]s a saga can act on
//! (a name that exists, credentials refused, the server out of reach), and a delete of
//! something already gone is [`Deleted::AlreadyGone`], not an error, so that an undo may run
//! twice. [`ChefClient::find_node`] is the search that proves a node is in its environment.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use reqwest::Method;
use serde_json::{json, Value};
use vesemir_core::name::{EnvironmentName, HostName};

use crate::client::ChefClient;

/// Rows per page when a Chef Infra Server is searched for every node's address.
const NODE_PAGE: usize = 1000;
use crate::error::ChefError;
use crate::key::ClientKey;

/// One entry of a node's run list: `role[NAME]` or `recipe[NAME]` (a cookbook's recipe may be
/// `cookbook::recipe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunListItem {
    /// `role[NAME]`.
    Role(String),
    /// `recipe[NAME]`.
    Recipe(String),
}

/// Why a run list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a run list entry: write role[NAME] or recipe[NAME] (NAME: letters, digits, `_`, `-`, `.`, `:`)")]
pub struct RunListError(pub String);

impl RunListItem {
    /// Parses `role[web]` or `recipe[nginx::default]`.
    pub fn parse(text: &str) -> Result<Self, RunListError> {
        let refused = || RunListError(text.to_owned());
        let (kind, rest) = text.split_once('[').ok_or_else(refused)?;
        let name = rest.strip_suffix(']').ok_or_else(refused)?;
        let valid = !name.is_empty()
            && name.len() <= 255
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !valid {
            return Err(refused());
        }
        match kind {
            "role" => Ok(Self::Role(name.to_owned())),
            "recipe" => Ok(Self::Recipe(name.to_owned())),
            _ => Err(refused()),
        }
    }
}

impl fmt::Display for RunListItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Role(name) => write!(f, "role[{name}]"),
            Self::Recipe(name) => write!(f, "recipe[{name}]"),
        }
    }
}

/// A node as provisioning registers it: what chef-client would save after its first run, with
/// the automatic attributes the Chef inventory reads (`ipaddress`, `fqdn`, `hostname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name (the VM's host name).
    pub name: HostName,
    /// Its Chef environment.
    pub environment: EnvironmentName,
    /// Its run list, in order.
    pub run_list: Vec<RunListItem>,
    /// The `ipaddress` automatic attribute: the address the inventory gives for the host.
    pub ipaddress: String,
    /// The `fqdn` automatic attribute.
    pub fqdn: String,
    /// Tags (the `tags` normal attribute), as `knife tag` sets them.
    pub tags: Vec<String>,
}

impl NodeSpec {
    /// The node's JSON, as the nodes API takes it.
    pub fn to_json(&self) -> Value {
        let hostname = self.fqdn.split('.').next().unwrap_or(&self.fqdn).to_owned();
        let roles: Vec<&str> = self
            .run_list
            .iter()
            .filter_map(|i| match i {
                RunListItem::Role(r) => Some(r.as_str()),
                RunListItem::Recipe(_) => None,
            })
            .collect();
        let recipes: Vec<&str> = self
            .run_list
            .iter()
            .filter_map(|i| match i {
                RunListItem::Recipe(r) => Some(r.as_str()),
                RunListItem::Role(_) => None,
            })
            .collect();
        json!({
            "name": self.name.as_str(),
            "chef_type": "node",
            "json_class": "Chef::Node",
            "chef_environment": self.environment.as_str(),
            "run_list": self.run_list.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "default": {},
            "override": {},
            "normal": { "tags": self.tags },
            "automatic": {
                "ipaddress": self.ipaddress,
                "fqdn": self.fqdn,
                "hostname": hostname,
                "roles": roles,
                "recipes": recipes,
            },
        })
    }
}

/// A client's private key in PEM, as the server answered it when the client was made: to be
/// written to the node (`/etc/chef/client.pem`). `Debug` never shows it.
#[derive(Clone)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// The PEM text, for writing it where it belongs and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(***)")
    }
}

/// An API client just made, with the private key the server made for it.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// The client's name.
    pub name: HostName,
    /// Its private key, loaded (to sign as this client).
    pub key: ClientKey,
    /// The same key as PEM text (to place on the node).
    pub pem: PrivateKeyPem,
}

/// How a delete went: both end with the thing gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// It existed and was deleted.
    Deleted,
    /// It did not exist (never made, or an earlier undo deleted it).
    AlreadyGone,
}

/// What kind of Chef object a [`RegistryError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// An API client.
    Client,
    /// A node.
    Node,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Client => "client",
            Self::Node => "node",
        })
    }
}

/// Why a write to the Chef server failed. Never holds key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name is taken (409): another machine or an earlier attempt registered it.
    #[error("Chef {kind} {name:?} already exists: {message}")]
    Exists {
        /// What was being made.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// The server's words.
        message: String,
    },
    /// A node or client to update is not there (404).
    #[error("Chef {kind} {name:?} does not exist: {message}")]
    Missing {
        /// What was being changed.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// The server's words.
        message: String,
    },
    /// The server refused the credentials (401) or the permission (403).
    #[error("{0}")]
    Denied(String),
    /// The server refused the request as malformed (400, 413...), e.g. an environment that does
    /// not exist.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached or kept failing (connect, timeout, 5xx after retries).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (an answer that is not the expected JSON, signing).
    #[error("{0}")]
    Other(String),
}

impl RegistryError {
    fn from_chef(error: ChefError, kind: ObjectKind, name: &str) -> Self {
        let text = error.to_string();
        match error {
            ChefError::BadRequest { status: 409, message, .. } => {
                Self::Exists { kind, name: name.to_owned(), message }
            }
            ChefError::NotFound { message, .. } => Self::Missing { kind, name: name.to_owned(), message },
            ChefError::Unauthorized { .. } | ChefError::Forbidden { .. } => Self::Denied(text),
            ChefError::BadRequest { .. } => Self::Refused(text),
            ChefError::Timeout { .. } | ChefError::Connect { .. } | ChefError::ServerError { .. } => {
                Self::Unavailable(text)
            }
            _ => Self::Other(text),
        }
    }
}

impl ChefClient {
    /// Makes API client `name` (not an admin); the server makes its key pair and answers the
    /// private key, which is not kept anywhere else: lose it and the client must be remade.
    pub async fn create_client(&self, name: &HostName) -> Result<NewClient, RegistryError> {
        let kind = ObjectKind::Client;
        let body = json!({ "name": name.as_str(), "admin": false, "create_key": true });
        let answer = self
            .call(Method::POST, "/clients", &[], Some(&body))
            .await
            .map_err(|e| RegistryError::from_chef(e, kind, name.as_str()))?;
        // goiardi and Chef 11/12 answer `private_key`; Chef Infra Server 13+ `chef_key.private_key`.
        let pem = answer
            .get("private_key")
            .or_else(|| answer.get("chef_key").and_then(|k| k.get("private_key")))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RegistryError::Other(format!("the server made client {name} but answered no private key"))
            })?;
        let key = ClientKey::from_pem(pem.as_bytes()).map_err(|e| RegistryError::Other(e.to_string()))?;
        Ok(NewClient { name: name.clone(), key, pem: PrivateKeyPem(pem.to_owned()) })
    }

    /// Deletes API client `name`; one that is not there is [`Deleted::AlreadyGone`].
    pub async fn delete_client(&self, name: &HostName) -> Result<Deleted, RegistryError> {
        self.delete(ObjectKind::Client, &format!("/clients/{name}"), name).await
    }

    /// Makes node `spec.name` (409 [`RegistryError::Exists`] if it is there).
    pub async fn create_node(&self, spec: &NodeSpec) -> Result<(), RegistryError> {
        self.call(Method::POST, "/nodes", &[], Some(&spec.to_json()))
            .await
            .map(drop)
            .map_err(|e| RegistryError::from_chef(e, ObjectKind::Node, spec.name.as_str()))
    }

    /// Replaces node `spec.name` with `spec` (404 [`RegistryError::Missing`] if it is not there).
    pub async fn update_node(&self, spec: &NodeSpec) -> Result<(), RegistryError> {
        let endpoint = format!("/nodes/{}", spec.name);
        self.call(Method::PUT, &endpoint, &[], Some(&spec.to_json()))
            .await
            .map(drop)
            .map_err(|e| RegistryError::from_chef(e, ObjectKind::Node, spec.name.as_str()))
    }

    /// Deletes node `name`; one that is not there is [`Deleted::AlreadyGone`].
    pub async fn delete_node(&self, name: &HostName) -> Result<Deleted, RegistryError> {
        self.delete(ObjectKind::Node, &format!("/nodes/{name}"), name).await
    }

    /// Whether Chef search finds node `name` in `environment`: one partial search for both
    /// terms, every row checked exactly on this side (goiardi parses only part of Lucene's
    /// syntax). The server indexes asynchronously: a node made a moment ago may not be found
    /// yet, so a caller that just made it asks again for a while.
    pub async fn find_node(
        &self,
        name: &HostName,
        environment: &EnvironmentName,
    ) -> Result<bool, RegistryError> {
        let query = format!(
            "name:{} AND chef_environment:{}",
            crate::query::escape(name.as_str()),
            crate::query::escape(environment.as_str())
        );
        let keys = json!({ "name": ["name"], "chef_environment": ["chef_environment"] });
        let answer = self
            .call(Method::POST, "/search/node", &[("q", query.as_str()), ("rows", "1000")], Some(&keys))
            .await
            .map_err(|e| RegistryError::from_chef(e, ObjectKind::Node, name.as_str()))?;
        let rows = answer.get("rows").and_then(Value::as_array).ok_or_else(|| {
            RegistryError::Other(format!("the search for node {name} answered no rows: {answer}"))
        })?;
        Ok(rows.iter().filter_map(|row| row.get("data")).any(|data| {
            data.get("name").and_then(Value::as_str) == Some(name.as_str())
                && data.get("chef_environment").and_then(Value::as_str) == Some(environment.as_str())
        }))
    }

    /// The IPv4 addresses every node reports as `ipaddress`, in every environment (one partial
    /// search of all nodes, paged as the server needs); values that are not IPv4 addresses are
    /// left out. Provisioning never hands out an address a node already has.
    pub async fn node_addresses(&self) -> Result<BTreeSet<Ipv4Addr>, RegistryError> {
        let flavor = self.detect_flavor().await.map_err(|e| RegistryError::Unavailable(e.chain()))?;
        let keys = json!({ "name": ["name"], "ipaddress": ["ipaddress"] });
        let rows = crate::search::search_nodes(self, flavor, NODE_PAGE, "*:*", &keys)
            .await
            .map_err(|e| RegistryError::from_chef(e, ObjectKind::Node, "*"))?;
        Ok(rows
            .iter()
            .filter_map(|row| row.data.get("ipaddress").and_then(Value::as_str))
            .filter_map(|text| text.parse::<Ipv4Addr>().ok())
            .collect())
    }

    async fn delete(
        &self,
        kind: ObjectKind,
        endpoint: &str,
        name: &HostName,
    ) -> Result<Deleted, RegistryError> {
        match self.call(Method::DELETE, endpoint, &[], None).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(ChefError::NotFound { .. }) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(RegistryError::from_chef(e, kind, name.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_list_entries_parse_and_print_back() {
        for text in ["role[web]", "recipe[nginx::default]", "recipe[app-1.2]"] {
            assert_eq!(RunListItem::parse(text).expect(text).to_string(), text);
        }
        for text in ["web", "role[]", "role[a b]", "cookbook[x]", "role[x];rm", "recipe[x"] {
            assert!(RunListItem::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_private_key_never_shows_in_debug() {
        let pem = PrivateKeyPem("-----BEGIN RSA PRIVATE KEY-----\nsecret".into());
        assert_eq!(format!("{pem:?}"), "PrivateKeyPem(***)");
    }
}
