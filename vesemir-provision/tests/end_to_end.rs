//! The provisioning machine of the core driven through the real adapters: reservations in
//! memory, DNS on a real named (TSIG), a libvirt TCG guest, its SSH host key from the console
//! checked against the one SSH presents (strict mode); then destroyed with every DNS record,
//! domain, disk and reservation gone. Chef registration and the bootstrap run are not wired in
//! yet (no Chef node/client adapter exists): this driver answers those two steps itself and the
//! verify step checks DNS and SSH for real, Chef search as not checked. Prints the time of each
//! step (BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vesemir_core::name::EnvironmentName;
use vesemir_core::provision::{
    Action, ActionResult, AddressRange, Catalog, Dns, DnsZone, Flavor, FlavorName, HostKeyPolicy, Hypervisor,
    HypervisorName, HypervisorPort, MemoryReservations, Provision, ProvisionConfig, ProvisionEventKind,
    ProvisionOutcome, ReservationRequest, Reservations, Size, Verification, VmName,
};
use vesemir_core::PortError;
use vesemir_provision::ssh_probe::scan_host_key;
use vesemir_provision::{DnsConfig, LibvirtConfig, NsupdateDns, VirshHypervisor};
use vesemir_testkit::libvirt::{LibvirtLab, POOL, TEMPLATE_VOLUME};
use vesemir_testkit::named::Named;

struct World {
    lab: LibvirtLab,
    dns: NsupdateDns,
    hypervisor: VirshHypervisor,
    reservations: MemoryReservations,
    catalog: Catalog,
    range: AddressRange,
}

impl World {
    async fn perform(&self, action: Action) -> ActionResult {
        let result = match action {
            Action::Reserve { vm, flavor } => {
                let guests = BTreeMap::from([(
                    HypervisorName::new("hv-1").unwrap(),
                    self.hypervisor.guests().await.unwrap(),
                )]);
                let request = ReservationRequest {
                    vm,
                    size: flavor.size,
                    catalog: self.catalog.clone(),
                    guests,
                    range: self.range,
                    taken: BTreeSet::new(),
                };
                return match self.reservations.reserve(request).await {
                    Ok(reservation) => ActionResult::Reserved(reservation.placement),
                    Err(error) => {
                        ActionResult::failed(PortError::rejected("reservations", error.to_string()))
                    }
                };
            }
            Action::AddDnsRecords { fqdn, address } => self.dns.add_records(&fqdn, address).await,
            Action::CreateDisk { vm, flavor, .. } => self.hypervisor.create_disk(&vm, flavor.size).await,
            Action::StartDomain { vm, flavor, address, .. } => {
                self.hypervisor.start_domain(&vm, flavor.size, address).await
            }
            Action::WaitForSsh { vm, address, timeout, .. } => {
                let deadline = Instant::now() + timeout;
                let ssh = self.lab.ssh_address(address);
                loop {
                    let console = self.hypervisor.console_host_key(&vm).await.unwrap();
                    if let (Some(console), Some(presented)) =
                        (&console, scan_host_key(ssh, Duration::from_secs(2)).await.unwrap())
                    {
                        return ActionResult::SshReady { presented, console: Some(console.clone()) };
                    }
                    if Instant::now() > deadline {
                        return ActionResult::failed(PortError::timeout("waiting for SSH", timeout));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Action::RegisterChef { .. } | Action::Bootstrap { .. } | Action::UnregisterChef { .. } => Ok(()),
            Action::Verify { fqdn, address, host_key, .. } => {
                let resolves = self.dns.resolve(&fqdn).await.unwrap() == vec![address]
                    && self.dns.reverse(address).await.unwrap() == vec![fqdn.to_string()];
                let presented =
                    scan_host_key(self.lab.ssh_address(address), Duration::from_secs(5)).await.unwrap();
                return ActionResult::Verified(Verification {
                    dns_resolves: resolves,
                    ssh_answers: presented == Some(host_key),
                    in_chef_search: true,
                });
            }
            Action::Release { vm } => self.reservations.release(&vm).await,
            Action::RemoveDnsRecords { fqdn, address } => self.dns.remove_records(&fqdn, address).await,
            Action::DeleteDisk { vm, .. } => self.hypervisor.delete_disk(&vm).await,
            Action::DestroyDomain { vm, .. } => self.hypervisor.destroy_domain(&vm).await,
        };
        match result {
            Ok(()) => ActionResult::Done,
            Err(error) => ActionResult::failed(error),
        }
    }

    /// Runs the machine to its end; returns the outcome and each step's time.
    async fn run(&self, mut machine: Provision) -> (ProvisionOutcome, Vec<(String, Duration)>) {
        let mut times = Vec::new();
        while let Some(action) = machine.poll_action() {
            let label = format!("{}{}", if action.is_undo() { "undo " } else { "" }, action.step());
            let started = Instant::now();
            let result = self.perform(action).await;
            times.push((label, started.elapsed()));
            machine.handle_result(result, Instant::now());
        }
        let mut outcome = None;
        while let Some(event) = machine.poll_event() {
            eprintln!("{}", serde_json::to_string(&event).unwrap_or_default());
            if let ProvisionEventKind::Finished { outcome: o } = event.kind {
                outcome = Some(o);
            }
        }
        (outcome.unwrap(), times)
    }
}

#[tokio::test]
async fn a_vm_is_created_then_destroyed_leaving_nothing() {
    let named = Named::start("lab.test", "55.127.in-addr.arpa");
    let lab = LibvirtLab::start();
    let dns = NsupdateDns::new(DnsConfig::new(
        named.address(),
        named.key_file(),
        DnsZone::new(named.reverse_zone()).unwrap(),
    ));
    let hypervisor = VirshHypervisor::new(LibvirtConfig {
        console_log: Some(lab.console_path("{name}").display().to_string()),
        ..LibvirtConfig::new(
            lab.uri().to_owned(),
            POOL.to_owned(),
            TEMPLATE_VOLUME.to_owned(),
            lab.domain_template(),
        )
    });
    let flavor = Flavor {
        name: FlavorName::new("tiny").unwrap(),
        size: Size { cores: 1, memory_mib: 256, disk_gib: 1 },
    };
    let mut catalog = Catalog::default();
    let hv = Hypervisor {
        name: HypervisorName::new("hv-1").unwrap(),
        max_guests: 2,
        capacity: Size { cores: 2, memory_mib: 1024, disk_gib: 10 },
    };
    catalog.hypervisors.insert(hv.name.clone(), hv);
    catalog.flavors.insert(flavor.name.clone(), flavor.clone());
    let world = World {
        lab,
        dns,
        hypervisor,
        reservations: MemoryReservations::new(),
        catalog,
        range: AddressRange::new(Ipv4Addr::new(127, 55, 0, 30), Ipv4Addr::new(127, 55, 0, 39)).unwrap(),
    };
    let config = ProvisionConfig {
        zone: DnsZone::new("lab.test").unwrap(),
        environment: EnvironmentName::new("production").unwrap(),
        run_list: vec![],
        host_key: HostKeyPolicy::Strict,
        ssh_timeout: Duration::from_secs(90),
        bootstrap_timeout: Duration::from_secs(60),
        undo_attempts: 2,
    };
    let vm = VmName::new("dev-alice-1").unwrap();
    let started = Instant::now();
    let (outcome, times) =
        world.run(Provision::create(vm.clone(), flavor, config.clone(), Instant::now())).await;
    let total = started.elapsed();
    let ProvisionOutcome::Ready { record } = outcome else { panic!("not ready: {outcome:?}") };
    eprintln!("ready in {total:?}:");
    for (step, time) in &times {
        eprintln!("  {step:<10} {time:?}");
    }
    assert_eq!(record.placement.address, Ipv4Addr::new(127, 55, 0, 30));
    let fqdn = record.fqdn.clone();
    assert_eq!(world.dns.resolve(&fqdn).await.unwrap(), vec![record.placement.address]);

    let (outcome, _) = world.run(Provision::destroy(record.clone(), config, Instant::now())).await;
    assert_eq!(outcome, ProvisionOutcome::Destroyed { left_behind: vec![] });
    assert!(world.dns.resolve(&fqdn).await.unwrap().is_empty());
    assert!(world.dns.reverse(record.placement.address).await.unwrap().is_empty());
    assert!(world.hypervisor.guests().await.unwrap().is_empty());
    assert!(!world.lab.virsh(&["vol-list", "--pool", POOL]).contains("dev-alice-1.img"));
    assert!(world.reservations.held().await.unwrap().is_empty());
}
