//! A machine to deploy to, as an inventory found it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::HostName;

/// A machine to deploy to: its name, the address to reach it at, and extra attributes the
/// inventory returned (for example `chef_environment` or a configured attribute path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's name, unique within a deployment.
    pub name: HostName,
    /// The address SSH and the load balancer know it by: an IP address or a DNS name.
    pub address: String,
    /// Extra attributes from the inventory, by attribute path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Host {
    /// A host with no extra attributes. The address is checked by [`validate_address`].
    pub fn new(name: HostName, address: impl Into<String>) -> Result<Self, AddressError> {
        let address = address.into();
        validate_address(&address)?;
        Ok(Self { name, address, attributes: BTreeMap::new() })
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.address)
    }
}

/// An address that is neither an IP address nor a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid address: use an IPv4 or IPv6 address or a DNS name")]
pub struct AddressError(pub String);

/// Checks that `address` is an IP address or a DNS name (letters, digits, `-` and `.`).
pub fn validate_address(address: &str) -> Result<(), AddressError> {
    if address.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let dns_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !address.is_empty() && address.len() <= 253 && address.split('.').all(dns_label) {
        Ok(())
    } else {
        Err(AddressError(address.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1", "::1", "web-01.example.com", "localhost"] {
            assert_eq!(validate_address(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "x;y", "-a.com", "a..b", "$(id)"] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }
}
