//! The provisioning's steps, what the machine asks for ([`Action`]) and what it is told back
//! ([`ActionResult`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::names::{ChefClientKey, Fqdn, HypervisorName, SshHostKey, VmName};
use super::placement::Flavor;
use super::ports::{BootstrapSpec, ChefNode};
use super::reservations::Placement;
use crate::error::PortError;
use crate::name::EnvironmentName;

/// A step of the saga, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reserve an address and a hypervisor slot. Undo: release them.
    Reserve,
    /// Add the A and PTR records. Undo: remove them.
    Dns,
    /// Copy the disk template on the hypervisor. Undo: delete the disk.
    Disk,
    /// Define and start the libvirt domain. Undo: destroy and undefine it.
    Domain,
    /// Wait until SSH answers; record (strict: check) its host key. Nothing to undo.
    WaitSsh,
    /// Register the node and its client in Chef with environment and run list. Undo: delete
    /// both.
    Chef,
    /// The first Chef run over SSH. Nothing to undo of its own: it lives on the VM's disk.
    Bootstrap,
    /// Check the VM from outside: its name resolves, SSH answers, Chef search finds it.
    /// Nothing to undo.
    Verify,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::Reserve,
        Step::Dns,
        Step::Disk,
        Step::Domain,
        Step::WaitSsh,
        Step::Chef,
        Step::Bootstrap,
        Step::Verify,
    ];

    /// Whether the step changes something that its undo takes back.
    pub fn has_undo(self) -> bool {
        matches!(self, Step::Reserve | Step::Dns | Step::Disk | Step::Domain | Step::Chef)
    }

    /// The step after this one.
    pub fn next(self) -> Option<Step> {
        let at = Step::ALL.iter().position(|step| *step == self)?;
        Step::ALL.get(at + 1).copied()
    }

    /// The step's name as events and people see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Dns => "dns",
            Step::Disk => "disk",
            Step::Domain => "domain",
            Step::WaitSsh => "wait_ssh",
            Step::Chef => "chef",
            Step::Bootstrap => "bootstrap",
            Step::Verify => "verify",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the machine wants done. One at a time: its result goes to
/// [`Provision::handle_result`](super::Provision::handle_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reserve an address and a hypervisor slot for `vm` (the driver reads the hypervisors'
    /// guests and the addresses in use, then calls the `Reservations` port). Result:
    /// [`ActionResult::Reserved`].
    Reserve {
        /// The VM.
        vm: VmName,
        /// Its flavor.
        flavor: Flavor,
    },
    /// Add `fqdn A address` and its PTR record.
    AddDnsRecords {
        /// The name.
        fqdn: Fqdn,
        /// The address.
        address: Ipv4Addr,
    },
    /// Copy the disk template to the VM's disk on its hypervisor.
    CreateDisk {
        /// Where.
        hypervisor: HypervisorName,
        /// Whose disk.
        vm: VmName,
        /// Its size.
        flavor: Flavor,
    },
    /// Define and start the domain. All or nothing: a start that fails undefines what it
    /// defined.
    StartDomain {
        /// Where.
        hypervisor: HypervisorName,
        /// The domain's name.
        vm: VmName,
        /// Its size.
        flavor: Flavor,
        /// Its address.
        address: Ipv4Addr,
    },
    /// Wait until SSH answers on `address`, for at most `timeout`, and read the host key it
    /// presents; with `console_key` also the key the guest printed on its console. Result:
    /// [`ActionResult::SshReady`].
    WaitForSsh {
        /// Where the guest's domain runs (its console is read there).
        hypervisor: HypervisorName,
        /// The domain.
        vm: VmName,
        /// Where SSH answers.
        address: Ipv4Addr,
        /// How long to wait at most.
        timeout: Duration,
        /// Whether to read the host key from the console too (strict mode).
        console_key: bool,
    },
    /// Create the Chef node and its client (all or nothing). Result:
    /// [`ActionResult::ChefRegistered`] with the client's key.
    RegisterChef {
        /// The node: name, address, environment, run list.
        node: ChefNode,
    },
    /// Run the first bootstrap over SSH, trusting only the recorded host key: the client's key
    /// and its config written to the VM, then the bootstrap command; its output is reported
    /// with [`Provision::handle_output`](super::Provision::handle_output) as it comes.
    Bootstrap {
        /// What to write and run, and the only host key to trust.
        spec: BootstrapSpec,
        /// How long the run may take.
        timeout: Duration,
    },
    /// Check from outside. Result: [`ActionResult::Verified`].
    Verify {
        /// The name that must resolve to `address`.
        fqdn: Fqdn,
        /// The address.
        address: Ipv4Addr,
        /// The key SSH must present.
        host_key: SshHostKey,
        /// The environment Chef search must find the node in.
        environment: EnvironmentName,
    },
    /// Undo of [`Action::Reserve`].
    Release {
        /// The VM whose reservation goes.
        vm: VmName,
    },
    /// Undo of [`Action::AddDnsRecords`] (removing records not there is no error).
    RemoveDnsRecords {
        /// The name.
        fqdn: Fqdn,
        /// The address, when known (its PTR record goes too).
        address: Option<Ipv4Addr>,
    },
    /// Undo of [`Action::CreateDisk`].
    DeleteDisk {
        /// Where.
        hypervisor: HypervisorName,
        /// Whose disk.
        vm: VmName,
    },
    /// Undo of [`Action::StartDomain`]: destroy (if running) and undefine.
    DestroyDomain {
        /// Where.
        hypervisor: HypervisorName,
        /// The domain.
        vm: VmName,
    },
    /// Undo of [`Action::RegisterChef`]: delete node and client.
    UnregisterChef {
        /// The node's name.
        fqdn: Fqdn,
    },
}

impl Action {
    /// The step this action does or undoes.
    pub fn step(&self) -> Step {
        match self {
            Action::Reserve { .. } | Action::Release { .. } => Step::Reserve,
            Action::AddDnsRecords { .. } | Action::RemoveDnsRecords { .. } => Step::Dns,
            Action::CreateDisk { .. } | Action::DeleteDisk { .. } => Step::Disk,
            Action::StartDomain { .. } | Action::DestroyDomain { .. } => Step::Domain,
            Action::WaitForSsh { .. } => Step::WaitSsh,
            Action::RegisterChef { .. } | Action::UnregisterChef { .. } => Step::Chef,
            Action::Bootstrap { .. } => Step::Bootstrap,
            Action::Verify { .. } => Step::Verify,
        }
    }

    /// Whether this action undoes a step.
    pub fn is_undo(&self) -> bool {
        matches!(
            self,
            Action::Release { .. }
                | Action::RemoveDnsRecords { .. }
                | Action::DeleteDisk { .. }
                | Action::DestroyDomain { .. }
                | Action::UnregisterChef { .. }
        )
    }
}

/// What the checks of [`Action::Verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The name resolves to the address, and the address back to the name.
    pub dns_resolves: bool,
    /// SSH answers with the recorded host key.
    pub ssh_answers: bool,
    /// Chef search finds the node in its environment.
    pub in_chef_search: bool,
}

impl Verification {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.dns_resolves && self.ssh_answers && self.in_chef_search
    }
}

/// What happened to the action asked for.
#[derive(Debug)]
pub enum ActionResult {
    /// [`Action::Reserve`] succeeded.
    Reserved(Placement),
    /// The action succeeded (any action without a result of its own).
    Done,
    /// [`Action::RegisterChef`] succeeded: the key the Chef server made for the node's client
    /// (kept by the machine for the bootstrap only; never in an event).
    ChefRegistered(ChefClientKey),
    /// [`Action::WaitForSsh`] succeeded: the key SSH presented, and the key read from the
    /// console when asked for (`None` when it was not found there).
    SshReady {
        /// The key SSH presented.
        presented: SshHostKey,
        /// The key the guest printed on its console.
        console: Option<SshHostKey>,
    },
    /// [`Action::Verify`] ran its checks.
    Verified(Verification),
    /// The action failed. `partial` when it may have changed something before failing (a
    /// timeout, a lost connection): the step is then undone as if it had been done (every
    /// undo takes back what is there and accepts what is not).
    Failed {
        /// Why.
        error: PortError,
        /// Whether it may have left something behind.
        partial: bool,
    },
}

impl ActionResult {
    /// A failure that changed nothing.
    pub fn failed(error: PortError) -> Self {
        ActionResult::Failed { error, partial: false }
    }

    /// A failure that may have changed something.
    pub fn failed_partway(error: PortError) -> Self {
        ActionResult::Failed { error, partial: true }
    }
}
