//! The static inventory file (`[inventory] file = ...` in `vesemir.toml`): TOML with one
//! `[[hosts]]` table per host, read into the core's pure
//! `vesemir_core::static_inventory::StaticInventory`.
//!
//! ```toml
//! [[hosts]]
//! name = "web-01"
//! address = "10.0.0.1"
//! tags = ["shop"]
//! roles = ["web"]
//! recipes = ["shop::web"]
//! environment = "production"
//! attributes = { rack = "a1" }
//! ```

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use vesemir_core::static_inventory::{StaticHost, StaticInventory, StaticInventoryError};

/// Why a static inventory file could not be loaded.
#[derive(Debug)]
pub enum InventoryFileError {
    /// The file could not be read.
    Read {
        /// The file, as configured.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields or invalid names.
    Parse(String),
    /// The hosts parse but do not make an inventory (bad address, a name twice).
    Hosts(StaticInventoryError),
}

impl fmt::Display for InventoryFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InventoryFileError::Read { path, source } => {
                write!(f, "cannot read the static inventory {path}: {source}")
            }
            InventoryFileError::Parse(reason) => write!(f, "the static inventory is not valid: {reason}"),
            InventoryFileError::Hosts(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for InventoryFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InventoryFileError::Read { source, .. } => Some(source),
            InventoryFileError::Parse(_) | InventoryFileError::Hosts(_) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticFile {
    #[serde(default)]
    hosts: Vec<StaticHost>,
}

/// Parses the file's TOML text.
pub fn parse(text: &str) -> Result<StaticInventory, InventoryFileError> {
    let file: StaticFile = toml::from_str(text).map_err(|e| InventoryFileError::Parse(e.to_string()))?;
    StaticInventory::new(file.hosts).map_err(InventoryFileError::Hosts)
}

/// Reads and parses the file at `path`.
pub fn read(path: impl AsRef<Path>) -> Result<StaticInventory, InventoryFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|source| InventoryFileError::Read { path: path.display().to_string(), source })?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::name::ChefTerm;
    use vesemir_core::ports::{Inventory, Selector};

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

    #[tokio::test]
    async fn toml_file_hosts_are_matched_by_selector() {
        let inventory = parse(FILE).expect("valid file");
        let selector =
            Selector { tags: vec![ChefTerm::new("blue green").expect("term")], ..Selector::default() };
        let hosts = inventory.discover(&selector).await.expect("match");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].address, "10.0.0.1");
        assert_eq!(hosts[0].attributes.get("rack").map(String::as_str), Some("a1"));
        assert_eq!(hosts[0].attributes.get("chef_environment").map(String::as_str), Some("production"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let unknown = parse("[[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\ncolour = \"red\"\n");
        assert!(unknown.expect_err("unknown field").to_string().contains("colour"));
        let bad_name = parse("[[hosts]]\nname = \"a b\"\naddress = \"10.0.0.1\"\n");
        assert!(bad_name.expect_err("bad name").to_string().contains("host name"));
        let bad_address = parse("[[hosts]]\nname = \"a\"\naddress = \"$(id)\"\n");
        assert!(bad_address.expect_err("bad address").to_string().contains("static host a"));
        let twice = parse(
            "[[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"a\"\naddress = \"10.0.0.2\"\n",
        );
        assert!(twice.expect_err("duplicate").to_string().contains("listed twice"));
        let missing = read("/nonexistent/vesemir-inventory.toml");
        assert!(missing.expect_err("no file").to_string().contains("cannot read the static inventory"));
    }
}
