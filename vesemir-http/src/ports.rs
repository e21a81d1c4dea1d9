//! Who chooses the ports: the server asks a [`PortsFactory`] for each deployment, so it never
//! hard-codes adapters. The real composition (Chef, HAProxy, SSH) is configured by the front end.

use std::time::Duration;

use vesemir_core::request::DeploymentRequest;
use vesemir_core::Ports;

/// Why no ports could be made for a request. The message is shown to the requester.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PortsError {
    /// The request needs something these ports do not offer, e.g. a host search where no
    /// inventory is configured, or discovered load balancers where only listed ones work.
    #[error("{reason}")]
    Unsupported {
        /// What is missing, and what the requester can do instead.
        reason: String,
    },
    /// The server's own adapter configuration is not usable (a Chef key that does not load, an
    /// inventory file that does not parse): the operator has to fix it.
    #[error("{reason}")]
    Configuration {
        /// What is wrong, naming the file and setting.
        reason: String,
    },
}

/// Makes the ports a deployment runs over.
pub trait PortsFactory: Send + Sync {
    /// The ports for `request`.
    fn ports(&self, request: &DeploymentRequest) -> Result<Ports, PortsError>;

    /// How deployments take host locks (one rollout per server, shared with CLIs and other
    /// servers: see `vesemir_core::host_locks`); `None`, the default, takes none.
    fn locks(&self) -> Option<LockSettings> {
        None
    }

    /// Re-reads what the ports were built from (key files, an inventory file) for deployments
    /// that start after it; those running keep what they have. On an error nothing changes.
    /// The default has nothing to re-read. The server calls it from
    /// [`Server::reload_adapters`](crate::Server::reload_adapters).
    fn reload(&self) -> Result<(), PortsError> {
        Ok(())
    }

    /// The orchestrator's own health probe for requests with `health.http`; `None`, the
    /// default, refuses such requests before anything changes.
    fn health_probe(&self) -> Option<std::sync::Arc<dyn vesemir_core::ports::HealthProbe>> {
        None
    }

    /// What VMs are provisioned with (`[provision]` of the front end's configuration);
    /// `None`, the default, when it configures none: the server then answers the VM routes
    /// with a problem saying so. An error is a `[provision]` section that does not compose.
    fn provisioning(&self) -> Result<Option<Provisioning>, PortsError> {
        Ok(None)
    }
}

/// The host locks of the server's deployments. Each deployment's holder is its id, its
/// requester, its application and environment, and [`machine`](LockSettings::machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// A lock not refreshed for this long is abandoned and taken over: the same value as every
    /// other deployer of the fleet.
    pub stale_after: Duration,
    /// How long a deployment waits (as `running`) for hosts another deployment holds before it
    /// fails; zero fails at once, naming the holder.
    pub wait: Duration,
    /// Where the server runs, as holders show it: `vesemir serve on web-admin-1 pid 311`.
    pub machine: String,
}

/// The same ports for every request (tests, and servers with one fleet).
#[derive(Debug, Clone)]
pub struct FixedPorts(pub Ports);

impl PortsFactory for FixedPorts {
    fn ports(&self, _request: &DeploymentRequest) -> Result<Ports, PortsError> {
        Ok(self.0.clone())
    }
}

/// What the server provisions VMs with (issue 19), composed by the front end from its
/// `[provision]` configuration: the machine's and the driver's settings, and every adapter but
/// the reservations (those are the server's store, shared by its instances).
#[derive(Clone)]
pub struct Provisioning {
    /// The zone, Chef environment and run list, host key policy and step bounds.
    pub config: vesemir_core::provision::ProvisionConfig,
    /// The hypervisors and flavors, the address range, call bounds.
    pub driver: vesemir_core::provision::driver::ProvisionDriverConfig,
    /// The DNS server taking the VMs' records.
    pub dns: std::sync::Arc<dyn vesemir_core::provision::Dns>,
    /// One port per hypervisor of the catalog, by name.
    pub hypervisors: std::collections::BTreeMap<
        vesemir_core::provision::HypervisorName,
        std::sync::Arc<dyn vesemir_core::provision::HypervisorPort>,
    >,
    /// The Chef server's nodes and clients.
    pub chef: std::sync::Arc<dyn vesemir_core::provision::ChefRegistry>,
    /// SSH to the new guests.
    pub ssh: std::sync::Arc<dyn vesemir_core::provision::GuestSsh>,
    /// The user name shown in "how to log in" (`ssh OWNER@FQDN` when `None`: the owner's own
    /// directory account).
    pub login_user: Option<String>,
}

impl Provisioning {
    /// The driver's ports, with `reservations` (the server's store).
    pub fn ports(
        &self,
        reservations: std::sync::Arc<dyn vesemir_core::provision::Reservations>,
    ) -> vesemir_core::provision::driver::ProvisionPorts {
        vesemir_core::provision::driver::ProvisionPorts {
            reservations,
            dns: self.dns.clone(),
            hypervisors: self.hypervisors.clone(),
            chef: self.chef.clone(),
            ssh: self.ssh.clone(),
        }
    }
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioning")
            .field("config", &self.config)
            .field("driver", &self.driver)
            .field("hypervisors", &self.hypervisors.keys().collect::<Vec<_>>())
            .field("login_user", &self.login_user)
            .finish_non_exhaustive()
    }
}
