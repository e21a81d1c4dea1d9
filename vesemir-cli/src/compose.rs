//! Composes the adapters a deployment runs over from the configuration: the only place where
//! Chef, HAProxy and SSH are chosen.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vesemir_chef::ChefInventory;
use vesemir_core::host_locks::LockPolicy;
use vesemir_core::lock::LockHolder;
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
        executor: Arc::new(executor(config)),
    })
}

/// The SSH executor, keeping host locks in `[locks] dir` when set.
fn executor(config: &Config) -> SshExecutor {
    let executor = SshExecutor::new(config.ssh.clone());
    match &config.locks.dir {
        Some(dir) => executor.with_lock_dir(dir.clone()),
        None => executor,
    }
}

/// The host locks a local deploy takes: a run id of its own, `request`'s names, this machine
/// and process, `[locks] stale_after`, and `wait`.
pub fn lock_policy(config: &Config, request: &DeploymentRequest, wait: Duration) -> LockPolicy {
    let holder = LockHolder {
        deployment: local_run_id(),
        requested_by: request.requested_by.to_string(),
        application: request.application.to_string(),
        environment: request.environment.to_string(),
        machine: this_machine(),
        since_unix: unix_now(),
    };
    LockPolicy { holder, stale_after: config.locks.stale_after(), wait, on_wait: None }
}

/// A local run's id for its locks: `local-` and the start time and process, so two runs of one
/// machine never share one (`local-1700000000-311-4821`).
fn local_run_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("local-{}-{}-{}", now.as_secs(), std::process::id(), now.subsec_micros() % 10_000)
}

/// This machine and process, as a lock holder names them: `ci-runner-7 pid 311`.
pub fn this_machine() -> String {
    LockHolder::machine_of(&hostname(), std::process::id())
}

/// This machine's name (Linux), or `unknown-host`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Ports for the HTTP server: the adapters of the configuration, built once at start and shared
/// by every deployment (so the HAProxy connection cap and the SSH sessions are the server's, not
/// one deployment's); key files and the inventory file are read at start and by
/// [`reload`](vesemir_http::PortsFactory::reload), never while a request is answered.
#[derive(Debug)]
pub struct ConfiguredPorts {
    config: Config,
    /// The HAProxy adapter: no file to read, so never rebuilt.
    load_balancer: Arc<HaproxyLoadBalancer>,
    /// The SSH executor: its key is re-read in place, so its sessions stay shared.
    executor: Arc<SshExecutor>,
    /// The inventory (Chef, with its key loaded, or the inventory file as read), replaced whole
    /// by a reload; `None` when neither is configured.
    inventory: std::sync::RwLock<Option<Arc<dyn Inventory>>>,
    /// The VMs' adapters (`[provision]`), built once at start; `None` when not configured.
    provisioning: Option<vesemir_http::Provisioning>,
}

impl ConfiguredPorts {
    /// Builds the shared adapters of `config`: reads the SSH key, the Chef key and the
    /// inventory file, and says which one failed.
    pub fn new(config: Config) -> Result<Self, Failure> {
        let executor = executor(&config);
        executor.load_key().map_err(|e| Failure::input(format!("{}: ssh: {e}", config.path.display())))?;
        let inventory = shared_inventory(&config)?;
        let provisioning = provisioning(&config)?;
        Ok(Self {
            load_balancer: Arc::new(HaproxyLoadBalancer::new(config.haproxy.clone())),
            executor: Arc::new(executor),
            inventory: std::sync::RwLock::new(inventory),
            provisioning,
            config,
        })
    }
}

/// The inventory the server shares: Chef with its key read, or the inventory file as read now.
fn shared_inventory(config: &Config) -> Result<Option<Arc<dyn Inventory>>, Failure> {
    let inventory: Arc<dyn Inventory> = match (&config.chef, &config.inventory_file) {
        (Some(chef), _) => {
            let chef = chef
                .clone()
                .load_key()
                .map_err(|e| Failure::input(format!("{}: chef: {e}", config.path.display())))?;
            Arc::new(
                ChefInventory::new(chef)
                    .map_err(|e| Failure::input(format!("{}: chef: {e}", config.path.display())))?,
            )
        }
        (None, Some(file)) => Arc::new(
            crate::inventory_file::read(file)
                .map_err(|e| Failure::input(format!("{}: inventory.file: {e}", config.path.display())))?,
        ),
        (None, None) => return Ok(None),
    };
    Ok(Some(inventory))
}

impl vesemir_http::PortsFactory for ConfiguredPorts {
    fn ports(&self, request: &DeploymentRequest) -> Result<Ports, vesemir_http::PortsError> {
        let shared = self.inventory.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let inventory = match shared {
            Some(inventory) => inventory,
            None => {
                let searches = matches!(request.targets, Targets::Search(_))
                    || matches!(request.load_balancer.instances, LbInstances::Discover { .. });
                if searches {
                    return Err(vesemir_http::PortsError::Configuration {
                        reason: format!(
                            "the request searches for hosts (targets or load_balancer.discover), but {} has neither [chef] nor [inventory]: add one, or list targets.hosts and load_balancer.instances",
                            self.config.path.display()
                        ),
                    });
                }
                Arc::new(
                    StaticInventory::new(Vec::new())
                        .map_err(|e| vesemir_http::PortsError::Configuration { reason: e.to_string() })?,
                )
            }
        };
        Ok(Ports { inventory, load_balancer: self.load_balancer.clone(), executor: self.executor.clone() })
    }

    fn reload(&self) -> Result<(), vesemir_http::PortsError> {
        let configuration = |e: Failure| vesemir_http::PortsError::Configuration { reason: e.message };
        // Both read before either is swapped: a reload that fails changes nothing.
        let inventory = shared_inventory(&self.config).map_err(configuration)?;
        self.executor.load_key().map_err(|e| vesemir_http::PortsError::Configuration {
            reason: format!("{}: ssh: {e}", self.config.path.display()),
        })?;
        *self.inventory.write().unwrap_or_else(std::sync::PoisonError::into_inner) = inventory;
        Ok(())
    }

    fn locks(&self) -> Option<vesemir_http::LockSettings> {
        Some(vesemir_http::LockSettings {
            stale_after: self.config.locks.stale_after(),
            wait: self.config.locks.wait.unwrap_or_default(),
            machine: format!("vesemir serve on {}", this_machine()),
        })
    }

    fn health_probe(&self) -> Option<Arc<dyn vesemir_core::ports::HealthProbe>> {
        health_probe()
    }

    fn provisioning(&self) -> Result<Option<vesemir_http::Provisioning>, vesemir_http::PortsError> {
        Ok(self.provisioning.clone())
    }
}

/// The VMs' adapters of `[provision]`: DNS by nsupdate, one virsh adapter per hypervisor, SSH
/// to the guests by OpenSSH, and Chef nodes and clients through the `[chef]` section's client
/// (its key read now). `None` without `[provision]`.
pub fn provisioning(config: &Config) -> Result<Option<vesemir_http::Provisioning>, Failure> {
    use vesemir_core::provision::{HypervisorName, HypervisorPort};
    let Some(settings) = &config.provision else { return Ok(None) };
    let path = config.path.display();
    let chef = config
        .chef
        .clone()
        .ok_or_else(|| {
            Failure::input(format!("{path}: provision: needs [chef] (VMs are registered through it)"))
        })?
        .load_key()
        .map_err(|e| Failure::input(format!("{path}: chef: {e}")))?;
    let client =
        vesemir_chef::ChefClient::new(&chef).map_err(|e| Failure::input(format!("{path}: chef: {e}")))?;
    let hypervisors: std::collections::BTreeMap<HypervisorName, Arc<dyn HypervisorPort>> = settings
        .libvirt
        .iter()
        .map(|(name, libvirt)| {
            let port: Arc<dyn HypervisorPort> =
                Arc::new(vesemir_provision::VirshHypervisor::new(libvirt.clone()));
            (name.clone(), port)
        })
        .collect();
    Ok(Some(vesemir_http::Provisioning {
        config: settings.config.clone(),
        driver: settings.driver.clone(),
        dns: Arc::new(vesemir_provision::NsupdateDns::new(settings.dns.clone())),
        hypervisors,
        chef: Arc::new(vesemir_chef::ChefNodes::new(client)),
        ssh: Arc::new(vesemir_provision::OpensshGuest::new(settings.ssh.clone())),
        login_user: settings.login_user.clone(),
    }))
}

/// The orchestrator's HTTP health probe (`vesemir-probe`), for requests with `health.http`;
/// `None` (such requests refused) only if no HTTP client can be made here.
pub fn health_probe() -> Option<Arc<dyn vesemir_core::ports::HealthProbe>> {
    let probe = vesemir_probe::HttpProbe::new().ok()?;
    Some(Arc::new(probe))
}

/// The driver's bounds: [`DriverConfig`]'s defaults, then what `[driver]` sets.
pub fn driver_config(config: &Config) -> DriverConfig {
    let mut driver = DriverConfig { health_probe: health_probe(), ..DriverConfig::default() };
    if let Some(timeout) = config.driver.call_timeout {
        driver.call_timeout = timeout;
    }
    if let Some(on) = config.driver.checks_while_out {
        driver.checks_while_out = on;
    }
    driver
}
