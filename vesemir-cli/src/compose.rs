//! Composes the adapters a deployment runs over from the configuration: the only place where
//! Chef, HAProxy and SSH are chosen.

use std::sync::Arc;

use vesemir_chef::ChefInventory;
use vesemir_core::ports::Inventory;
use vesemir_core::request::{DeploymentRequest, LbInstances, Targets};
use vesemir_core::static_inventory::StaticInventory;
use vesemir_core::{DriverConfig, Ports};
use vesemir_haproxy::HaproxyLoadBalancer;
use vesemir_ssh::SshExecutor;

use crate::config::Config;
use crate::exit::Failure;

/// The ports for `request`.
pub fn ports(config: &Config, request: &DeploymentRequest) -> Result<Ports, Failure> {
    let searches = matches!(request.targets, Targets::Search(_))
        || matches!(request.load_balancer.instances, LbInstances::Discover { .. });
    let inventory: Arc<dyn Inventory> = match (&config.chef, &config.inventory_file) {
        (Some(chef), _) => {
            let chef = chef.clone().load_key().map_err(|e| Failure::input(format!("{}: chef: {e}", config.path.display())))?;
            Arc::new(ChefInventory::new(chef).map_err(|e| Failure::input(format!("{}: chef: {e}", config.path.display())))?)
        }
        (None, Some(file)) => Arc::new(
            crate::inventory_file::read(file).map_err(|e| Failure::input(format!("{}: inventory.file: {e}", config.path.display())))?,
        ),
        (None, None) if searches => {
            return Err(Failure::input(format!(
                "the request searches for hosts (targets or load_balancer.discover), but {} has neither [chef] nor [inventory]: add one, or list targets.hosts and load_balancer.instances",
                config.path.display()
            )))
        }
        (None, None) => Arc::new(StaticInventory::new(Vec::new()).map_err(|e| Failure::input(e.to_string()))?),
    };
    Ok(Ports {
        inventory,
        load_balancer: Arc::new(HaproxyLoadBalancer::new(config.haproxy.clone())),
        executor: Arc::new(SshExecutor::new(config.ssh.clone())),
    })
}

/// Ports for the HTTP server: each deployment gets the adapters of the configuration.
#[derive(Debug)]
pub struct ConfiguredPorts(pub Config);

impl vesemir_http::PortsFactory for ConfiguredPorts {
    fn ports(&self, request: &DeploymentRequest) -> Result<Ports, vesemir_http::PortsError> {
        ports(&self.0, request).map_err(|e| vesemir_http::PortsError::Configuration { reason: e.message })
    }
}

/// The driver's bounds: [`DriverConfig`]'s defaults, then what `[driver]` sets.
pub fn driver_config(config: &Config) -> DriverConfig {
    let mut driver = DriverConfig::default();
    if let Some(timeout) = config.driver.call_timeout {
        driver.call_timeout = timeout;
    }
    driver
}
