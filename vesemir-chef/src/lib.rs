//! Vesemir's [`Inventory`](vesemir_core::ports::Inventory) over the Chef Infra Server search API.
//!
//! [`ChefInventory`] turns a [`Selector`](vesemir_core::ports::Selector) into a Chef node search
//! (Lucene-escaped), fetches only the needed attributes with partial search, pages until every
//! node is seen, and answers hosts (HAProxy boxes are found the same way, by the driver's
//! discovery). Requests are signed with the Mixlib authentication protocol ([`sign`]).
//!
//! For provisioning, [`ChefClient`] also writes: API clients (with the key the server makes) and
//! nodes (environment, run list, automatic attributes), with typed [`RegistryError`]s and
//! deletes that tolerate what is already gone; [`ChefNodes`] is the provisioning workflow's
//! `ChefRegistry` port over them.
#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod inventory;
mod key;
mod nodes;
pub mod query;
mod registry;
mod search;
pub mod sign;

pub use client::ChefClient;
pub use config::{ChefConfig, ConfigError, ServerFlavor};
pub use inventory::ChefInventory;
pub use key::{ClientKey, KeyError};
pub use nodes::ChefNodes;
pub use registry::{
    Deleted, NewClient, NodeSpec, ObjectKind, PrivateKeyPem, RegistryError, RunListError, RunListItem,
};
pub use sign::SignVersion;
