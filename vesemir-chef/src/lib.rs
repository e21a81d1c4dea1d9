//! Vesemir's [`Inventory`](vesemir_core::ports::Inventory) over the Chef Infra Server search API.
//!
//! [`ChefInventory`] turns a [`Selector`](vesemir_core::ports::Selector) into a Chef node search
//! (Lucene-escaped), fetches only the needed attributes with partial search, pages until every
//! node is seen, and answers hosts (HAProxy boxes are found the same way, by the driver's
//! discovery). Requests are signed with the Mixlib authentication protocol ([`sign`]).
#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod inventory;
mod key;
pub mod query;
mod search;
pub mod sign;

pub use client::ChefClient;
pub use config::{ChefConfig, ConfigError, ServerFlavor};
pub use inventory::ChefInventory;
pub use key::{ClientKey, KeyError};
pub use sign::SignVersion;
