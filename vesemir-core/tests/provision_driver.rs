//! The provisioning driver on in-memory fakes of its ports and tokio's paused clock: a VM built
//! and destroyed leaving the fakes empty, the bootstrap's output as events of its step in
//! order, a call that hangs past its bound undone as if done (`partial`), a cancel while waiting
//! for SSH that ends at once and undoes everything, and the verify step asking Chef search again
//! until the node is indexed, an address already in DNS or used by a Chef node skipped.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use vesemir_core::name::EnvironmentName;
use vesemir_core::ports::{OutputSink, OutputStream};
use vesemir_core::provision::driver::{run, ProvisionControl, ProvisionDriverConfig, ProvisionPorts};
use vesemir_core::provision::{
    AddressRange, BootstrapSpec, Catalog, ChefClientKey, ChefNode, ChefRegistry, Dns, DnsZone, Flavor,
    FlavorName, Fqdn, Guest, GuestSsh, HostKeyPolicy, Hypervisor, HypervisorName, HypervisorPort,
    MemoryReservations, Provision, ProvisionConfig, ProvisionEvent, ProvisionEventKind, ProvisionOutcome,
    Reservations, Size, SshHostKey, Step, VmName,
};
use vesemir_core::PortError;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFake";
const SECRET: &str = "-----BEGIN RSA PRIVATE KEY-----\nsecret-of-the-node";

#[derive(Debug, Default)]
struct World {
    records: Mutex<BTreeMap<String, Ipv4Addr>>,
    disks: Mutex<BTreeSet<String>>,
    domains: Mutex<BTreeSet<String>>,
    nodes: Mutex<BTreeSet<String>>,
    /// Addresses of Chef nodes that are not this test's VMs (hosts Chef knows).
    chef_addresses: Mutex<BTreeSet<Ipv4Addr>>,
    /// create_disk makes the disk, then hangs (past any bound).
    hang_disk: bool,
    /// SSH never answers.
    deaf: bool,
    /// Chef search finds a node only from this call on.
    found_from_call: u32,
    searches: AtomicU32,
}

type Shared = Arc<World>;

#[derive(Debug)]
struct FakeDns(Shared);
#[derive(Debug)]
struct FakeHypervisor(Shared);
#[derive(Debug)]
struct FakeChef(Shared);
#[derive(Debug)]
struct FakeSsh(Shared);

#[async_trait]
impl Dns for FakeDns {
    async fn add_records(&self, fqdn: &Fqdn, address: Ipv4Addr) -> Result<(), PortError> {
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
        Ok(domains.iter().map(|name| Guest { name: name.clone(), size: flavor().size }).collect())
    }
    async fn create_disk(&self, vm: &VmName, _: Size) -> Result<(), PortError> {
        self.0.disks.lock().unwrap().insert(vm.to_string());
        if self.0.hang_disk {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }
    async fn delete_disk(&self, vm: &VmName) -> Result<(), PortError> {
        self.0.disks.lock().unwrap().remove(vm.as_str());
        Ok(())
    }
    async fn start_domain(&self, vm: &VmName, _: Size, _: Ipv4Addr) -> Result<(), PortError> {
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
        self.0.nodes.lock().unwrap().insert(node.fqdn.to_string());
        Ok(ChefClientKey::new(SECRET))
    }
    async fn unregister(&self, fqdn: &Fqdn) -> Result<(), PortError> {
        self.0.nodes.lock().unwrap().remove(&fqdn.to_string());
        Ok(())
    }
    async fn find(&self, fqdn: &Fqdn, _: &EnvironmentName) -> Result<bool, PortError> {
        let call = self.0.searches.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(call >= self.0.found_from_call && self.0.nodes.lock().unwrap().contains(&fqdn.to_string()))
    }
    async fn addresses(&self) -> Result<BTreeSet<Ipv4Addr>, PortError> {
        Ok(self.0.chef_addresses.lock().unwrap().clone())
    }
}

#[async_trait]
impl GuestSsh for FakeSsh {
    async fn presented_host_key(&self, _: Ipv4Addr) -> Result<Option<SshHostKey>, PortError> {
        Ok((!self.0.deaf).then(|| SshHostKey::parse(KEY).unwrap()))
    }
    async fn bootstrap(&self, spec: &BootstrapSpec, output: OutputSink) -> Result<(), PortError> {
        assert_eq!(spec.client_key.expose(), SECRET);
        for line in ["one", "two", "three"] {
            output.send(OutputStream::Stdout, line);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        output.send(OutputStream::Stderr, "last words");
        Ok(())
    }
    async fn login(&self, _: Ipv4Addr, host_key: &SshHostKey) -> Result<(), PortError> {
        assert_eq!(host_key.to_string(), KEY);
        Ok(())
    }
}

fn flavor() -> Flavor {
    Flavor { name: FlavorName::new("tiny").unwrap(), size: Size { cores: 1, memory_mib: 256, disk_gib: 1 } }
}

fn hv() -> HypervisorName {
    HypervisorName::new("hv-1").unwrap()
}

fn setup(world: World) -> (Shared, ProvisionPorts, ProvisionDriverConfig, Arc<MemoryReservations>) {
    let world = Arc::new(world);
    let reservations = Arc::new(MemoryReservations::new());
    let ports = ProvisionPorts {
        reservations: reservations.clone(),
        dns: Arc::new(FakeDns(world.clone())),
        hypervisors: BTreeMap::from([(
            hv(),
            Arc::new(FakeHypervisor(world.clone())) as Arc<dyn HypervisorPort>,
        )]),
        chef: Arc::new(FakeChef(world.clone())),
        ssh: Arc::new(FakeSsh(world.clone())),
    };
    let mut catalog = Catalog::default();
    catalog.hypervisors.insert(
        hv(),
        Hypervisor { name: hv(), max_guests: 4, capacity: Size { cores: 4, memory_mib: 4096, disk_gib: 40 } },
    );
    let range = AddressRange::new(Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 20)).unwrap();
    let config = ProvisionDriverConfig {
        call_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        search_wait: Duration::from_secs(10),
        ..ProvisionDriverConfig::new(catalog, range)
    };
    (world, ports, config, reservations)
}

fn provision_config() -> ProvisionConfig {
    ProvisionConfig {
        zone: DnsZone::new("lab.test").unwrap(),
        environment: EnvironmentName::new("production").unwrap(),
        run_list: vec![],
        host_key: HostKeyPolicy::Strict,
        ssh_timeout: Duration::from_secs(60),
        bootstrap_timeout: Duration::from_secs(60),
        undo_attempts: 2,
    }
}

fn create() -> Provision {
    Provision::create(VmName::new("vm1").unwrap(), flavor(), provision_config(), Instant::now())
}

async fn drive(
    machine: Provision,
    ports: &ProvisionPorts,
    config: &ProvisionDriverConfig,
    control: &ProvisionControl,
) -> (ProvisionOutcome, Vec<ProvisionEvent>) {
    let mut events = Vec::new();
    let outcome = run(machine, ports, config, control, &mut |event| events.push(event)).await;
    (outcome, events)
}

async fn assert_empty(world: &World, reservations: &MemoryReservations) {
    assert!(world.records.lock().unwrap().is_empty(), "DNS records left");
    assert!(world.disks.lock().unwrap().is_empty(), "disks left");
    assert!(world.domains.lock().unwrap().is_empty(), "domains left");
    assert!(world.nodes.lock().unwrap().is_empty(), "Chef nodes left");
    assert!(reservations.held().await.unwrap().is_empty(), "reservations left");
}

#[tokio::test(start_paused = true)]
async fn a_vm_is_built_with_its_output_streamed_then_destroyed() {
    let (world, ports, config, reservations) = setup(World::default());
    let (outcome, events) = drive(create(), &ports, &config, &ProvisionControl::new()).await;
    let ProvisionOutcome::Ready { record } = outcome else { panic!("{outcome:?}\n{events:#?}") };
    assert_eq!(record.placement.address, Ipv4Addr::new(10, 0, 0, 10));
    let kinds: Vec<&ProvisionEventKind> = events.iter().map(|e| &e.kind).collect();
    let started = kinds.iter().position(|k| **k == ProvisionEventKind::StepStarted { step: Step::Bootstrap });
    let done = kinds.iter().position(|k| **k == ProvisionEventKind::StepDone { step: Step::Bootstrap });
    let lines: Vec<(usize, &str)> = kinds
        .iter()
        .enumerate()
        .filter_map(|(i, k)| match k {
            ProvisionEventKind::Output { step: Step::Bootstrap, text, .. } => Some((i, text.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(lines.iter().map(|(_, t)| *t).collect::<Vec<_>>(), ["one", "two", "three", "last words"]);
    assert!(lines.iter().all(|(i, _)| Some(*i) > started && Some(*i) < done), "lines inside their step");
    for event in &events {
        assert!(!format!("{event:?}").contains("secret-of-the-node"));
        assert!(!serde_json::to_string(event).unwrap().contains("secret-of-the-node"));
    }
    assert_eq!(world.nodes.lock().unwrap().len(), 1);

    let destroy = Provision::destroy(record, provision_config(), Instant::now());
    let (outcome, events) = drive(destroy, &ports, &config, &ProvisionControl::new()).await;
    assert_eq!(outcome, ProvisionOutcome::Destroyed { left_behind: vec![] }, "{events:#?}");
    assert_empty(&world, &reservations).await;
}

#[tokio::test(start_paused = true)]
async fn a_call_that_hangs_past_its_bound_is_undone_as_if_done() {
    let (world, ports, config, reservations) = setup(World { hang_disk: true, ..World::default() });
    let started = tokio::time::Instant::now();
    let (outcome, events) = drive(create(), &ports, &config, &ProvisionControl::new()).await;
    let ProvisionOutcome::Failed { step: Step::Disk, reason, left_behind } = outcome else {
        panic!("{outcome:?}\n{events:#?}")
    };
    assert!(reason.contains("timed out") || reason.contains("timeout"), "{reason}");
    assert!(left_behind.is_empty());
    assert!(
        events.iter().any(|e| e.kind == ProvisionEventKind::UndoDone { step: Step::Disk }),
        "{events:#?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the call timeout");
    assert_empty(&world, &reservations).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_waiting_for_ssh_ends_at_once_and_undoes_everything() {
    let (world, ports, config, reservations) = setup(World { deaf: true, ..World::default() });
    let control = ProvisionControl::new();
    let canceller = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        canceller.cancel();
    });
    let started = tokio::time::Instant::now();
    let (outcome, events) = drive(create(), &ports, &config, &control).await;
    assert!(started.elapsed() < Duration::from_secs(6), "not the 60 s SSH wait: {:?}", started.elapsed());
    // It ends cancelled (what the operator asked for); the abandoned step says why it stopped.
    let ProvisionOutcome::Cancelled { left_behind } = outcome else { panic!("{outcome:?}\n{events:#?}") };
    assert!(left_behind.is_empty());
    let abandoned = events.iter().find_map(|e| match &e.kind {
        ProvisionEventKind::StepFailed { step: Step::WaitSsh, reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(abandoned.is_some_and(|reason| reason.contains("cancelled")), "{events:#?}");
    assert!(events.iter().any(|e| e.kind == ProvisionEventKind::CancelRequested));
    let starts = events.iter().filter(|e| matches!(e.kind, ProvisionEventKind::StepStarted { .. })).count();
    assert_eq!(starts, 5, "no step after wait_ssh started: {events:#?}");
    assert_empty(&world, &reservations).await;
}

#[tokio::test(start_paused = true)]
async fn verify_asks_chef_search_again_until_the_node_is_indexed() {
    let (_, ports, config, _) = setup(World { found_from_call: 4, ..World::default() });
    let (outcome, events) = drive(create(), &ports, &config, &ProvisionControl::new()).await;
    assert!(matches!(outcome, ProvisionOutcome::Ready { .. }), "{outcome:?}\n{events:#?}");

    // Never indexed within the wait: verify fails, naming Chef search, and everything goes.
    let (world, ports, config, reservations) = setup(World { found_from_call: u32::MAX, ..World::default() });
    let (outcome, events) = drive(create(), &ports, &config, &ProvisionControl::new()).await;
    let ProvisionOutcome::Failed { step: Step::Verify, reason, .. } = outcome else {
        panic!("{outcome:?}\n{events:#?}")
    };
    assert!(reason.contains("Chef search"), "{reason}");
    assert_empty(&world, &reservations).await;
}

#[tokio::test(start_paused = true)]
async fn an_address_found_in_dns_is_skipped() {
    let (world, ports, config, _) = setup(World::default());
    world.records.lock().unwrap().insert("someone-else.lab.test".to_owned(), Ipv4Addr::new(10, 0, 0, 10));
    let (outcome, events) = drive(create(), &ports, &config, &ProvisionControl::new()).await;
    let ProvisionOutcome::Ready { record } = outcome else { panic!("{outcome:?}\n{events:#?}") };
    assert_eq!(record.placement.address, Ipv4Addr::new(10, 0, 0, 11));
}

#[tokio::test(start_paused = true)]
async fn an_address_a_chef_node_uses_is_skipped_though_dns_does_not_know_it() {
    let (world, ports, config, _) = setup(World::default());
    world.chef_addresses.lock().unwrap().extend([Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 11)]);
    world.records.lock().unwrap().insert("someone-else.lab.test".to_owned(), Ipv4Addr::new(10, 0, 0, 12));
    let (outcome, events) = drive(create(), &ports, &config, &ProvisionControl::new()).await;
    let ProvisionOutcome::Ready { record } = outcome else { panic!("{outcome:?}\n{events:#?}") };
    assert_eq!(record.placement.address, Ipv4Addr::new(10, 0, 0, 13));
}
