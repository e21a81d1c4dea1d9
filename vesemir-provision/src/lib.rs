//! Adapters for the provisioning ports of `vesemir-core::provision`:
//!
//! - [`dns`]: [`NsupdateDns`], the `Dns` port by RFC 2136 dynamic updates signed with a TSIG
//!   key, through BIND's `nsupdate` (the key stays in its file: never on a command line), and
//!   queries through `dig`.
//! - [`libvirt`]: [`VirshHypervisor`], the `HypervisorPort` through `virsh -c URI`: guests and
//!   their sizes, disks cloned from a template volume in a storage pool, domains from the
//!   operator's XML template, the host key a guest printed on its console.
//! - [`ssh`]: [`OpensshGuest`], the `GuestSsh` port through OpenSSH's `ssh`: the presented host
//!   key, and logins that trust only the recorded key: the first bootstrap (client key,
//!   `client.rb`, `first-boot.json`, the operator's bootstrap command, its output streamed) and
//!   the verify step's login.
//! - [`ssh_probe`]: the host key SSH presents, read with `ssh-keyscan`.
//! - [`command`]: running those tools with a timeout, killed on drop.
//!
//! Why subprocesses: `nsupdate` and `virsh` are the operator's own tools (the system
//! used them), they speak every transport libvirt and BIND offer (local socket, SSH, TLS), and
//! each call is short next to a VM's boot.
#![warn(missing_docs)]

pub mod command;
pub mod dns;
pub mod libvirt;
pub mod ssh;
pub mod ssh_probe;

pub use dns::{DnsConfig, NsupdateDns};
pub use libvirt::{LibvirtConfig, VirshHypervisor};
pub use ssh::{GuestSshConfig, OpensshGuest};
