//! In-memory fakes of the provisioning's ports (DNS, one hypervisor, the Chef registry, guest
//! SSH) sharing one [`World`], controllable while a test runs: a step that fails, SSH that
//! never answers. [`provisioning`] composes them as the front end's `[provision]` would.

#![allow(dead_code, clippy::unwrap_used)] // test fakes: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vesemir_core::name::EnvironmentName;
use vesemir_core::ports::{OutputSink, OutputStream};
use vesemir_core::provision::driver::ProvisionDriverConfig;
use vesemir_core::provision::{
    AddressRange, BootstrapSpec, Catalog, ChefClientKey, ChefNode, ChefRegistry, Dns, DnsZone, Flavor,
    FlavorName, Fqdn, Guest, GuestSsh, HostKeyPolicy, Hypervisor, HypervisorName, HypervisorPort,
    ProvisionConfig, Size, SshHostKey, VmName,
};
use vesemir_core::request::DeploymentRequest;
use vesemir_core::PortError;
use vesemir_core::Ports;
use vesemir_http::{PortsError, PortsFactory, Provisioning};

/// The host key every fake guest has.
pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFake";
/// The zone the fakes' VMs are named in.
pub const ZONE: &str = "lab.test";

/// A port call a test makes fail (refused, nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// `Dns::add_records`.
    Dns,
    /// `HypervisorPort::create_disk`.
    Disk,
    /// `HypervisorPort::start_domain`.
    Domain,
    /// `ChefRegistry::register`.
    Chef,
    /// `GuestSsh::bootstrap`.
    Bootstrap,
}

/// What the fakes hold: DNS records, disks, domains, Chef nodes.
#[derive(Debug, Default)]
pub struct World {
    pub records: Mutex<BTreeMap<String, Ipv4Addr>>,
    pub disks: Mutex<BTreeSet<String>>,
    pub domains: Mutex<BTreeSet<String>>,
    pub nodes: Mutex<BTreeSet<String>>,
    /// The call that fails, if any.
    pub fail: Mutex<Option<Fail>>,
    /// SSH never answers (the guest never comes up).
    pub deaf: AtomicBool,
    /// The bootstrap never ends (until cancelled).
    pub stuck_bootstrap: AtomicBool,
}

impl World {
    pub fn fail(&self, fail: Option<Fail>) {
        *self.fail.lock().unwrap() = fail;
    }

    pub fn set_deaf(&self, deaf: bool) {
        self.deaf.store(deaf, Ordering::SeqCst);
    }

    fn refuses(&self, call: Fail) -> Result<(), PortError> {
        if *self.fail.lock().unwrap() == Some(call) {
            return Err(PortError::rejected(format!("{call:?}"), "refused by the test"));
        }
        Ok(())
    }

    /// Whether nothing is left: no record, disk, domain or node.
    pub fn is_empty(&self) -> bool {
        self.records.lock().unwrap().is_empty()
            && self.disks.lock().unwrap().is_empty()
            && self.domains.lock().unwrap().is_empty()
            && self.nodes.lock().unwrap().is_empty()
    }

    /// What is left, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "records {:?}, disks {:?}, domains {:?}, nodes {:?}",
            self.records.lock().unwrap(),
            self.disks.lock().unwrap(),
            self.domains.lock().unwrap(),
            self.nodes.lock().unwrap()
        )
    }

    /// Whether any part of VM `name` is there.
    pub fn has(&self, name: &str) -> bool {
        let fqdn = format!("{name}.{ZONE}");
        self.records.lock().unwrap().contains_key(&fqdn)
            || self.disks.lock().unwrap().contains(name)
            || self.domains.lock().unwrap().contains(name)
            || self.nodes.lock().unwrap().contains(&fqdn)
    }
}

#[derive(Debug)]
struct FakeDns(Arc<World>);
#[derive(Debug)]
struct FakeHypervisor(Arc<World>);
#[derive(Debug)]
struct FakeChef(Arc<World>);
#[derive(Debug)]
struct FakeSsh(Arc<World>);

#[async_trait]
impl Dns for FakeDns {
    async fn add_records(&self, fqdn: &Fqdn, address: Ipv4Addr) -> Result<(), PortError> {
        self.0.refuses(Fail::Dns)?;
        self.0.records.lock().unwrap().insert(fqdn.to_string(), address);
        Ok(())
    }
    async fn remove_records(&self, fqdn: &Fqdn, _: Option<Ipv4Addr>) -> Result<(), PortError> {
        self.0.records.lock().unwrap().remove(&fqdn.to_string());
        Ok(())
    }
    async fn resolve(&self, fqdn: &Fqdn) -> Result<Vec<Ipv4Addr>, PortError> {
        Ok(self.0.records.lock().unwrap().get(&fqdn.to_string()).copied().into_iter().collect())
    }
    async fn reverse(&self, address: Ipv4Addr) -> Result<Vec<String>, PortError> {
        let records = self.0.records.lock().unwrap();
        Ok(records.iter().filter(|(_, a)| **a == address).map(|(name, _)| name.clone()).collect())
    }
}

#[async_trait]
impl HypervisorPort for FakeHypervisor {
    async fn guests(&self) -> Result<Vec<Guest>, PortError> {
        let domains = self.0.domains.lock().unwrap();
        Ok(domains.iter().map(|name| Guest { name: name.clone(), size: small().size }).collect())
    }
    async fn create_disk(&self, vm: &VmName, _: Size) -> Result<(), PortError> {
        self.0.refuses(Fail::Disk)?;
        self.0.disks.lock().unwrap().insert(vm.to_string());
        Ok(())
    }
    async fn delete_disk(&self, vm: &VmName) -> Result<(), PortError> {
        self.0.disks.lock().unwrap().remove(vm.as_str());
        Ok(())
    }
    async fn start_domain(&self, vm: &VmName, _: Size, _: Ipv4Addr) -> Result<(), PortError> {
        self.0.refuses(Fail::Domain)?;
        self.0.domains.lock().unwrap().insert(vm.to_string());
        Ok(())
    }
    async fn destroy_domain(&self, vm: &VmName) -> Result<(), PortError> {
        self.0.domains.lock().unwrap().remove(vm.as_str());
        Ok(())
    }
    async fn console_host_key(&self, _: &VmName) -> Result<Option<SshHostKey>, PortError> {
        Ok(Some(SshHostKey::parse(KEY).unwrap()))
    }
}

#[async_trait]
impl ChefRegistry for FakeChef {
    async fn register(&self, node: &ChefNode) -> Result<ChefClientKey, PortError> {
        self.0.refuses(Fail::Chef)?;
        self.0.nodes.lock().unwrap().insert(node.fqdn.to_string());
        Ok(ChefClientKey::new("-----BEGIN RSA PRIVATE KEY-----\nfake"))
    }
    async fn unregister(&self, fqdn: &Fqdn) -> Result<(), PortError> {
        self.0.nodes.lock().unwrap().remove(&fqdn.to_string());
        Ok(())
    }
    async fn find(&self, fqdn: &Fqdn, _: &EnvironmentName) -> Result<bool, PortError> {
        Ok(self.0.nodes.lock().unwrap().contains(&fqdn.to_string()))
    }
    async fn addresses(&self) -> Result<std::collections::BTreeSet<std::net::Ipv4Addr>, PortError> {
        // The fake's Chef knows only the nodes it registered, whose addresses are reserved.
        Ok(std::collections::BTreeSet::new())
    }
}

#[async_trait]
impl GuestSsh for FakeSsh {
    async fn presented_host_key(&self, _: Ipv4Addr) -> Result<Option<SshHostKey>, PortError> {
        Ok((!self.0.deaf.load(Ordering::SeqCst)).then(|| SshHostKey::parse(KEY).unwrap()))
    }
    async fn bootstrap(&self, _: &BootstrapSpec, output: OutputSink) -> Result<(), PortError> {
        output.send(OutputStream::Stdout, "Starting Chef Infra Client");
        self.0.refuses(Fail::Bootstrap)?;
        while self.0.stuck_bootstrap.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        output.send(OutputStream::Stdout, "Chef Infra Client finished");
        Ok(())
    }
    async fn login(&self, _: Ipv4Addr, _: &SshHostKey) -> Result<(), PortError> {
        Ok(())
    }
}

/// The flavor `small` (1 core, 512 MiB, 10 GiB).
pub fn small() -> Flavor {
    Flavor { name: FlavorName::new("small").unwrap(), size: Size { cores: 1, memory_mib: 512, disk_gib: 10 } }
}

/// The flavor `large` (4 cores, 4 GiB, 40 GiB).
pub fn large() -> Flavor {
    Flavor {
        name: FlavorName::new("large").unwrap(),
        size: Size { cores: 4, memory_mib: 4096, disk_gib: 40 },
    }
}

/// The fakes as a server's provisioning: one hypervisor `hv-1` (16 guests), flavors `small` and
/// `large`, addresses 10.0.0.10 to 10.0.0.40, SSH waited for `ssh_timeout`.
pub fn provisioning(world: &Arc<World>, ssh_timeout: Duration) -> Provisioning {
    let hv = HypervisorName::new("hv-1").unwrap();
    let mut catalog = Catalog::default();
    catalog.hypervisors.insert(
        hv.clone(),
        Hypervisor {
            name: hv.clone(),
            max_guests: 16,
            capacity: Size { cores: 64, memory_mib: 65536, disk_gib: 1000 },
        },
    );
    for flavor in [small(), large()] {
        catalog.flavors.insert(flavor.name.clone(), flavor);
    }
    let range = AddressRange::new(Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 40)).unwrap();
    let driver = ProvisionDriverConfig {
        call_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        search_wait: Duration::from_secs(2),
        ..ProvisionDriverConfig::new(catalog, range)
    };
    Provisioning {
        config: ProvisionConfig {
            zone: DnsZone::new(ZONE).unwrap(),
            environment: EnvironmentName::new("production").unwrap(),
            run_list: vec![],
            host_key: HostKeyPolicy::Strict,
            ssh_timeout,
            bootstrap_timeout: Duration::from_secs(10),
            undo_attempts: 2,
        },
        driver,
        dns: Arc::new(FakeDns(world.clone())),
        hypervisors: BTreeMap::from([(
            hv,
            Arc::new(FakeHypervisor(world.clone())) as Arc<dyn HypervisorPort>,
        )]),
        chef: Arc::new(FakeChef(world.clone())),
        ssh: Arc::new(FakeSsh(world.clone())),
        login_user: None,
    }
}

/// The deployments' fakes and the provisioning's, as a front end composes them.
pub struct VmPorts {
    fleet: Ports,
    provisioning: Provisioning,
}

impl VmPorts {
    pub fn new(fleet: Ports, provisioning: Provisioning) -> Self {
        Self { fleet, provisioning }
    }
}

impl PortsFactory for VmPorts {
    fn ports(&self, _: &DeploymentRequest) -> Result<Ports, PortsError> {
        Ok(self.fleet.clone())
    }
    fn provisioning(&self) -> Result<Option<Provisioning>, PortsError> {
        Ok(Some(self.provisioning.clone()))
    }
}
