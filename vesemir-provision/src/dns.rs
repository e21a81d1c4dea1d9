//! The `Dns` port by RFC 2136 dynamic updates signed with TSIG, through BIND's `nsupdate`, and
//! queries through `dig`. An add is one update per zone: the A record with the prerequisite that
//! the name has none (so an existing VM's name is never taken over), then the PTR record; if the
//! PTR update fails the A record is removed again, so an add is all or nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vesemir_core::provision::{Dns, DnsZone, Fqdn};
use vesemir_core::PortError;

use crate::command::{run, ToolOutput};

/// Where and how to update DNS. Its own serde form (unknown keys refused, durations as `"10s"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The primary server that takes updates and answers queries.
    pub server: SocketAddr,
    /// The TSIG key file in BIND's syntax (`key "NAME" { algorithm ...; secret "..."; };`,
    /// as `tsig-keygen` writes it). Read by nsupdate only.
    pub key_file: PathBuf,
    /// The reverse zone the PTR records go in, e.g. `0.10.in-addr.arpa`.
    pub reverse_zone: DnsZone,
    /// The records' TTL in seconds.
    #[serde(default = "defaults::ttl")]
    pub ttl: u32,
    /// How long one nsupdate or dig may take.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    pub fn ttl() -> u32 {
        300
    }

    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl DnsConfig {
    /// A config with the default TTL and timeout.
    pub fn new(server: SocketAddr, key_file: PathBuf, reverse_zone: DnsZone) -> Self {
        Self { server, key_file, reverse_zone, ttl: defaults::ttl(), timeout: defaults::timeout() }
    }
}

/// The `Dns` port over nsupdate and dig. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct NsupdateDns {
    config: DnsConfig,
}

/// The PTR record's name of `address`: `4.3.2.1.in-addr.arpa`.
pub fn ptr_name(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

impl NsupdateDns {
    /// An adapter for `config`.
    pub fn new(config: DnsConfig) -> Self {
        Self { config }
    }

    fn header(&self, zone: &str) -> String {
        format!("server {} {}\nzone {zone}\n", self.config.server.ip(), self.config.server.port())
    }

    /// Sends one update (the script's lines, then `send`).
    async fn update(&self, zone: &str, lines: &str) -> Result<(), PortError> {
        let script = format!("{}{lines}send\n", self.header(zone));
        let key = self.config.key_file.display().to_string();
        let timeout_secs = self.config.timeout.as_secs().max(1).to_string();
        let output =
            run("nsupdate", &["-k", &key, "-t", &timeout_secs], Some(&script), self.config.timeout).await?;
        if output.success {
            Ok(())
        } else {
            Err(update_error(&self.config.server, zone, &output))
        }
    }

    async fn dig(&self, args: &[&str]) -> Result<Vec<String>, PortError> {
        let server = format!("@{}", self.config.server.ip());
        let port = self.config.server.port().to_string();
        let tries = format!("+time={}", self.config.timeout.as_secs().max(1));
        let mut all = vec![server.as_str(), "-p", port.as_str(), "+short", "+tries=1", tries.as_str()];
        all.extend_from_slice(args);
        let output = run("dig", &all, None, self.config.timeout).await?;
        if !output.success {
            return Err(PortError::unreachable(format!("DNS server {}", self.config.server), output.text()));
        }
        Ok(output.stdout.lines().map(|line| line.trim().to_owned()).filter(|line| !line.is_empty()).collect())
    }
}

/// An nsupdate failure as the port's error: a bad or unknown key is unauthorized, a refusal or
/// a failed prerequisite is rejected, no answer is unreachable.
fn update_error(server: &SocketAddr, zone: &str, output: &ToolOutput) -> PortError {
    let text = output.text();
    let target = format!("DNS server {server} (zone {zone})");
    let lower = text.to_ascii_lowercase();
    if lower.contains("tsig")
        || lower.contains("notauth")
        || lower.contains("badkey")
        || lower.contains("badsig")
    {
        PortError::Unauthorized { target, reason: text }
    } else if lower.contains("timed out")
        || lower.contains("connection refused")
        || lower.contains("no servers")
    {
        PortError::unreachable(target, text)
    } else {
        PortError::rejected(target, if text.is_empty() { "update failed".to_owned() } else { text })
    }
}

#[async_trait]
impl Dns for NsupdateDns {
    async fn add_records(&self, fqdn: &Fqdn, address: Ipv4Addr) -> Result<(), PortError> {
        let ttl = self.config.ttl;
        let forward = format!("prereq nxrrset {fqdn}. A\nupdate add {fqdn}. {ttl} A {address}\n");
        self.update(fqdn.zone.as_str(), &forward).await?;
        let ptr = ptr_name(address);
        let reverse = format!("update delete {ptr}. PTR\nupdate add {ptr}. {ttl} PTR {fqdn}.\n");
        if let Err(error) = self.update(self.config.reverse_zone.as_str(), &reverse).await {
            let undo = format!("update delete {fqdn}. A {address}\n");
            let _ = self.update(fqdn.zone.as_str(), &undo).await;
            return Err(error);
        }
        Ok(())
    }

    async fn remove_records(&self, fqdn: &Fqdn, address: Option<Ipv4Addr>) -> Result<(), PortError> {
        let forward = match address {
            Some(address) => format!("update delete {fqdn}. A {address}\n"),
            None => format!("update delete {fqdn}. A\n"),
        };
        self.update(fqdn.zone.as_str(), &forward).await?;
        if let Some(address) = address {
            let reverse = format!("update delete {}. PTR {fqdn}.\n", ptr_name(address));
            self.update(self.config.reverse_zone.as_str(), &reverse).await?;
        }
        Ok(())
    }

    async fn resolve(&self, fqdn: &Fqdn) -> Result<Vec<Ipv4Addr>, PortError> {
        let name = format!("{fqdn}.");
        let lines = self.dig(&[name.as_str(), "A"]).await?;
        Ok(lines.iter().filter_map(|line| line.parse().ok()).collect())
    }

    async fn reverse(&self, address: Ipv4Addr) -> Result<Vec<String>, PortError> {
        let address = address.to_string();
        let lines = self.dig(&["-x", address.as_str()]).await?;
        Ok(lines.iter().map(|line| line.trim_end_matches('.').to_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names_reverse_the_octets() {
        assert_eq!(ptr_name(Ipv4Addr::new(10, 1, 2, 3)), "3.2.1.10.in-addr.arpa");
    }
}
