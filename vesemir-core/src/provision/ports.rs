//! The ports a provisioning's driver calls (adapters in `vesemir-provision`): DNS records, a
//! hypervisor's disks and domains, the Chef server's nodes and clients, and SSH to the new
//! guest (its presented host key, the bootstrap, a login). Like the deployment's ports: async-trait, dyn-compatible,
//! `Send + Sync + Debug`, answering the core's [`PortError`]. The `Reservations` port is in
//! [`reservations`](super::reservations).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::Ipv4Addr;

use async_trait::async_trait;

use super::names::{ChefClientKey, Fqdn, RunListEntry, SshHostKey, VmName};
use super::placement::{Guest, Size};
use crate::error::PortError;
use crate::name::EnvironmentName;
use crate::ports::OutputSink;

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

/// A node as provisioning registers it in Chef: what its first chef-client run would save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChefNode {
    /// The node's (and its client's) name: the VM's DNS name.
    pub fqdn: Fqdn,
    /// Its address (the `ipaddress` automatic attribute the inventory reads).
    pub address: Ipv4Addr,
    /// Its Chef environment.
    pub environment: EnvironmentName,
    /// Its run list, in order.
    pub run_list: Vec<RunListEntry>,
}

/// The Chef server's registry of nodes and API clients.
#[async_trait]
pub trait ChefRegistry: Send + Sync + Debug {
    /// Makes `node.fqdn`'s API client (the server makes its key pair) and its node with
    /// environment, run list and address; answers the client's private key. All or nothing: a
    /// name already taken (client or node) is refused (`Rejected`) and changes nothing, and a
    /// node that cannot be made takes its client away again.
    async fn register(&self, node: &ChefNode) -> Result<ChefClientKey, PortError>;
    /// Deletes `fqdn`'s node and client; either already gone is no error.
    async fn unregister(&self, fqdn: &Fqdn) -> Result<(), PortError>;
    /// Whether Chef search finds node `fqdn` in `environment` (one search: the server indexes
    /// asynchronously, so the caller asks again for a while).
    async fn find(&self, fqdn: &Fqdn, environment: &EnvironmentName) -> Result<bool, PortError>;
    /// The IPv4 addresses Chef's nodes report (their `ipaddress`), in every environment:
    /// reserving skips them, so an address a host Chef knows already uses is never handed out
    /// (a host whose DNS records were forgotten still has its node).
    async fn addresses(&self) -> Result<BTreeSet<Ipv4Addr>, PortError>;
}

/// What the first bootstrap writes and runs on a new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSpec {
    /// The node, as registered in Chef.
    pub node: ChefNode,
    /// The only host key to trust (recorded by `wait_ssh`).
    pub host_key: SshHostKey,
    /// The node's client key, written to the VM.
    pub client_key: ChefClientKey,
}

/// SSH to a new guest, as root with the operator's key.
#[async_trait]
pub trait GuestSsh: Send + Sync + Debug {
    /// The host key SSH presents at `address`, read without logging in; `None` when nothing
    /// answers there yet.
    async fn presented_host_key(&self, address: Ipv4Addr) -> Result<Option<SshHostKey>, PortError>;
    /// Logs in trusting only `spec.host_key` (any other key is refused before anything is
    /// sent), writes the client key and the client's config, runs the bootstrap command and
    /// sends its output to `output` line by line as it comes. A non-zero exit is `Rejected`
    /// with its status.
    async fn bootstrap(&self, spec: &BootstrapSpec, output: OutputSink) -> Result<(), PortError>;
    /// Logs in trusting only `host_key` and runs nothing but `true`: SSH answers as the VM.
    async fn login(&self, address: Ipv4Addr, host_key: &SshHostKey) -> Result<(), PortError>;
}
