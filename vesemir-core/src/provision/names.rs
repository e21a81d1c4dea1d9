//! The validated values a provisioning reaches protocols with: a VM's name (a DNS label), a DNS
//! zone and a fully qualified name, hypervisor and flavor names, an SSH host key, a Chef run
//! list entry; and the one secret the saga carries, a Chef client's key.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value refused at the edge: what it was meant to be, the value, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct ProvisionNameError {
    /// What the value was meant to be ("VM name", "DNS zone"...).
    pub kind: &'static str,
    /// The value refused.
    pub value: String,
    /// The rule it broke, in words.
    pub rule: &'static str,
}

/// An RFC 1123 label: 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'.
fn is_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && !value.starts_with('-')
        && !value.ends_with('-')
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const LABEL_RULE: &str = "use 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'";

macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses `value`, refusing anything its rule does not allow.
            pub fn new(value: impl AsRef<str>) -> Result<Self, ProvisionNameError> {
                let value = value.as_ref();
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(Arc::from(value)))
                } else {
                    Err(ProvisionNameError { kind: $kind, value: value.to_owned(), rule: $rule })
                }
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ProvisionNameError;
            fn from_str(value: &str) -> Result<Self, ProvisionNameError> {
                Self::new(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_value!(
    /// A VM's name: one DNS label (it becomes the first label of its DNS name, the libvirt
    /// domain's name and its disk's file name), e.g. `dev-alice-1`.
    VmName, "VM name", is_label, LABEL_RULE
);
text_value!(
    /// A hypervisor's name as the operator's config gives it (a DNS label), e.g. `hv-03`.
    HypervisorName, "hypervisor name", is_label, LABEL_RULE
);
text_value!(
    /// A flavor's name as the operator's config gives it (a DNS label), e.g. `small`.
    FlavorName, "flavor name", is_label, LABEL_RULE
);
text_value!(
    /// A DNS zone new VMs are named in, without the final dot, e.g. `dev.example.com`: labels
    /// as [`VmName`], at most 253 characters.
    DnsZone,
    "DNS zone",
    |value| value.len() <= 253 && value.split('.').all(is_label),
    "use DNS labels (1 to 63 lowercase letters, digits or '-') joined by '.', at most 253 characters"
);

/// A VM's fully qualified DNS name: its [`VmName`] in a [`DnsZone`]. On the wire, the name
/// as text (`vm1.lab.example`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fqdn {
    /// The first label.
    pub name: VmName,
    /// The zone the name lives in.
    pub zone: DnsZone,
}

impl Fqdn {
    /// `name.zone`.
    pub fn new(name: VmName, zone: DnsZone) -> Self {
        Self { name, zone }
    }
}

impl std::str::FromStr for Fqdn {
    type Err = ProvisionNameError;
    fn from_str(value: &str) -> Result<Self, ProvisionNameError> {
        let (name, zone) = value.split_once('.').ok_or(ProvisionNameError {
            kind: "DNS name",
            value: value.to_owned(),
            rule: "write a VM name and its zone, e.g. vm1.lab.example",
        })?;
        Ok(Self { name: VmName::new(name)?, zone: DnsZone::new(zone)? })
    }
}

impl Serialize for Fqdn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fqdn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.zone)
    }
}

/// An SSH host key as OpenSSH writes it in `known_hosts` and `*.pub` files: the algorithm and
/// the base64 key (any comment dropped). Compared whole, so two keys are equal only when they
/// are the same key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SshHostKey {
    algorithm: Arc<str>,
    key: Arc<str>,
}

impl SshHostKey {
    /// Parses `ALGORITHM BASE64 [COMMENT]`, e.g. the line a guest prints on its console.
    pub fn parse(line: &str) -> Result<Self, ProvisionNameError> {
        let refuse = || ProvisionNameError {
            kind: "SSH host key",
            value: line.to_owned(),
            rule: "write it as 'ALGORITHM BASE64-KEY [COMMENT]' (ssh-ed25519, ssh-rsa, ecdsa-sha2-*)",
        };
        let mut words = line.split_whitespace();
        let (Some(algorithm), Some(key)) = (words.next(), words.next()) else {
            return Err(refuse());
        };
        let known = matches!(algorithm, "ssh-ed25519" | "ssh-rsa") || algorithm.starts_with("ecdsa-sha2-");
        let base64 = key.len() >= 16
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if known && base64 {
            Ok(Self { algorithm: Arc::from(algorithm), key: Arc::from(key) })
        } else {
            Err(refuse())
        }
    }

    /// The algorithm, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The key in base64.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for SshHostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.key)
    }
}

impl fmt::Debug for SshHostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshHostKey({self})")
    }
}

impl Serialize for SshHostKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SshHostKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// One entry of a Chef run list: `role[NAME]` or `recipe[NAME]` (a recipe may be
/// `cookbook::recipe`). NAME: 1 to 255 letters, digits, `_`, `-`, `.`, `:`. On the wire, the
/// entry as text (`role[web]`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunListEntry {
    /// `role[NAME]`.
    Role(Arc<str>),
    /// `recipe[NAME]`.
    Recipe(Arc<str>),
}

impl RunListEntry {
    /// Parses `role[web]` or `recipe[nginx::default]`.
    pub fn parse(text: &str) -> Result<Self, ProvisionNameError> {
        let refuse = || ProvisionNameError {
            kind: "run list entry",
            value: text.to_owned(),
            rule: "write role[NAME] or recipe[NAME] (NAME: letters, digits, '_', '-', '.', ':')",
        };
        let (kind, rest) = text.split_once('[').ok_or_else(refuse)?;
        let name = rest.strip_suffix(']').ok_or_else(refuse)?;
        let valid = !name.is_empty()
            && name.len() <= 255
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        match (kind, valid) {
            ("role", true) => Ok(Self::Role(Arc::from(name))),
            ("recipe", true) => Ok(Self::Recipe(Arc::from(name))),
            _ => Err(refuse()),
        }
    }

    /// The role's or recipe's name, without its kind.
    pub fn name(&self) -> &str {
        match self {
            Self::Role(name) | Self::Recipe(name) => name,
        }
    }
}

impl fmt::Display for RunListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Role(name) => write!(f, "role[{name}]"),
            Self::Recipe(name) => write!(f, "recipe[{name}]"),
        }
    }
}

impl fmt::Debug for RunListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl std::str::FromStr for RunListEntry {
    type Err = ProvisionNameError;
    fn from_str(value: &str) -> Result<Self, ProvisionNameError> {
        Self::parse(value)
    }
}

impl Serialize for RunListEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunListEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A Chef API client's private key (PEM), as the Chef server made it when the client was
/// registered: it goes to the VM (`/etc/chef/client.pem`) and nowhere else. Never in `Debug`,
/// never serialized, never in an event.
#[derive(Clone, PartialEq, Eq)]
pub struct ChefClientKey(Arc<str>);

impl ChefClientKey {
    /// Wraps the PEM text.
    pub fn new(pem: impl Into<Arc<str>>) -> Self {
        Self(pem.into())
    }

    /// The PEM text, for writing it to the VM and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChefClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChefClientKey(***)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_and_zones() {
        assert!(VmName::new("dev-alice-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(VmName::new(bad).is_err(), "{bad:?}");
        }
        assert!(DnsZone::new("dev.example.com").is_ok());
        assert!(DnsZone::new("dev..example").is_err());
        assert!(DnsZone::new("dev.example.com.").is_err());
        let fqdn = Fqdn::new(VmName::new("vm1").unwrap(), DnsZone::new("lab.test").unwrap());
        assert_eq!(fqdn.to_string(), "vm1.lab.test");
    }

    #[test]
    fn host_keys_compare_without_comments() {
        let a = SshHostKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLx root@(none)").unwrap();
        let b = SshHostKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLx").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLx");
        assert!(SshHostKey::parse("ssh-ed25519").is_err());
        assert!(SshHostKey::parse("ssh-dss AAAAC3NzaC1lZDI1NTE5AAAAIHLx").is_err());
        assert!(SshHostKey::parse("ssh-ed25519 AAAA;rm -rf /AAAAAAAAAAA").is_err());
    }

    #[test]
    fn run_list_entries_parse_and_print_back() {
        for text in ["role[web]", "recipe[nginx::default]", "recipe[app-1.2]"] {
            assert_eq!(RunListEntry::parse(text).unwrap().to_string(), text);
        }
        for text in ["web", "role[]", "role[a b]", "cookbook[x]", "role[x];rm", "recipe[x"] {
            assert!(RunListEntry::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_client_key_never_shows_in_debug() {
        let key = ChefClientKey::new("-----BEGIN RSA PRIVATE KEY-----\nsecret");
        assert_eq!(format!("{key:?}"), "ChefClientKey(***)");
    }
}
