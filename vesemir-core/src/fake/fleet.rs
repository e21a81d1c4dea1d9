//! A ready fleet of fakes: `n` hosts `web-01`, `web-02`... at `127.0.1.N`, each behind a server
//! of the same name in backend `be_web` on the given load balancer instances.

use crate::error::PortError;
use crate::fake::{FakeExecutor, FakeInventory, FakeLoadBalancer, FakeServer};
use crate::host::Host;
use crate::name::{BackendName, HostName, ServerName};
use crate::ports::{AdminState, LbEndpoint, Operational};
use crate::Ports;
use std::sync::Arc;

/// The three fakes of one fleet. Fields are handles sharing state with the ports handed out by
/// [`FakeFleet::ports`], so a test injects faults and inspects through them.
#[derive(Debug, Clone)]
pub struct FakeFleet {
    /// The inventory (empty: requests of a fleet usually list their hosts).
    pub inventory: FakeInventory,
    /// The load balancer with one server per host.
    pub lb: FakeLoadBalancer,
    /// The executor every host's commands run on (faults and latency injected per host).
    pub executor: FakeExecutor,
    /// How many hosts, numbered from 1.
    pub size: usize,
}

/// The backend every fleet's servers are in.
pub const FLEET_BACKEND: &str = "be_web";

impl FakeFleet {
    /// A fleet of `size` hosts behind `instances`.
    pub fn new(size: usize, instances: Vec<LbEndpoint>) -> Self {
        let servers = (1..=size).map(|i| FakeServer::new(Self::server(i), Self::address(i))).collect();
        // The name is a constant that passes validation.
        let backend = BackendName::new(FLEET_BACKEND).unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            inventory: FakeInventory::new(),
            lb: FakeLoadBalancer::new(backend, instances, servers),
            executor: FakeExecutor::new(),
            size,
        }
    }

    /// Sets the state host number `i`'s server starts in, on one instance (`Some`) or on every
    /// instance (`None`): see [`FakeLoadBalancer::set_initial`]. Returns the fleet, so a test
    /// builds a fleet as it would be found (`FakeFleet::new(..).starting(3, None, Maint, ...)?`).
    pub fn starting(
        self,
        i: usize,
        on: Option<&LbEndpoint>,
        admin: AdminState,
        operational: Operational,
        weight: u32,
    ) -> Result<Self, PortError> {
        self.lb.set_initial(&Self::server(i), on, admin, operational, weight)?;
        Ok(self)
    }

    /// The ports, over these fakes.
    pub fn ports(&self) -> Ports {
        Ports {
            inventory: Arc::new(self.inventory.clone()),
            load_balancer: Arc::new(self.lb.clone()),
            executor: Arc::new(self.executor.clone()),
        }
    }

    /// Host number `i` (from 1).
    pub fn host(i: usize) -> HostName {
        // `web-` and digits always form a valid name.
        HostName::new(format!("web-{i:02}")).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The server of host number `i`.
    pub fn server(i: usize) -> ServerName {
        ServerName::new(format!("web-{i:02}")).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The address of host number `i`: `127.0.1.i` up to 254, then further in 127.1.0.0/16.
    pub fn address(i: usize) -> String {
        if i < 255 {
            format!("127.0.1.{i}")
        } else {
            format!("127.1.{}.{}", (i / 256) % 256, i % 256)
        }
    }

    /// Every host of the fleet, in order.
    pub fn hosts(&self) -> Vec<Host> {
        (1..=self.size)
            .map(|i| Host { name: Self::host(i), address: Self::address(i), attributes: Default::default() })
            .collect()
    }
}
