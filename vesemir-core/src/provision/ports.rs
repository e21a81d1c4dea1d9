//! The ports a provisioning's driver calls (adapters in `vesemir-provision`): DNS records and a
//! hypervisor's disks and domains. Like the deployment's ports: async-trait, dyn-compatible,
//! `Send + Sync + Debug`, answering the core's [`PortError`]. The `Reservations` port is in
//! [`reservations`](super::reservations).

use std::fmt::Debug;
use std::net::Ipv4Addr;

use async_trait::async_trait;

use super::names::{Fqdn, SshHostKey, VmName};
use super::placement::{Guest, Size};
use crate::error::PortError;

/// A DNS server that takes dynamic updates for the VMs' forward and reverse zones.
#[async_trait]
pub trait Dns: Send + Sync + Debug {
    /// Adds `fqdn A address` and the PTR record of `address` to `fqdn`. Refused (and nothing
    /// changed) when `fqdn` already has an A record.
    async fn add_records(&self, fqdn: &Fqdn, address: Ipv4Addr) -> Result<(), PortError>;
    /// Removes `fqdn`'s A records (only the one to `address` when given) and the PTR record of
    /// `address` to `fqdn`. Records already gone are no error.
    async fn remove_records(&self, fqdn: &Fqdn, address: Option<Ipv4Addr>) -> Result<(), PortError>;
    /// The addresses `fqdn` resolves to (none when it does not exist).
    async fn resolve(&self, fqdn: &Fqdn) -> Result<Vec<Ipv4Addr>, PortError>;
    /// The names `address` resolves back to (without the final dot).
    async fn reverse(&self, address: Ipv4Addr) -> Result<Vec<String>, PortError>;
}

/// One hypervisor: its guests, VM disks made from the template, and domains.
#[async_trait]
pub trait HypervisorPort: Send + Sync + Debug {
    /// Every domain defined on it (running or not) with its size, for placement.
    async fn guests(&self) -> Result<Vec<Guest>, PortError>;
    /// Copies the disk template to `vm`'s disk, grown to `size.disk_gib`. All or nothing.
    async fn create_disk(&self, vm: &VmName, size: Size) -> Result<(), PortError>;
    /// Deletes `vm`'s disk; a disk already gone is no error.
    async fn delete_disk(&self, vm: &VmName) -> Result<(), PortError>;
    /// Defines and starts `vm`'s domain; a start that fails undefines it again.
    async fn start_domain(&self, vm: &VmName, size: Size, address: Ipv4Addr) -> Result<(), PortError>;
    /// Stops (if running) and undefines `vm`'s domain; a domain already gone is no error.
    async fn destroy_domain(&self, vm: &VmName) -> Result<(), PortError>;
    /// The SSH host key `vm` printed on its console, if it did yet.
    async fn console_host_key(&self, vm: &VmName) -> Result<Option<SshHostKey>, PortError>;
}
