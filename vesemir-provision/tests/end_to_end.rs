//! Provisioning end to end through the core's driver with every real part, one lab for the
//! whole binary: reservations in memory, DNS on a real named (TSIG), libvirt TCG guests on a
//! session libvirtd, Chef on goiardi (node and client registered with the admin client), SSH
//! with OpenSSH trusting only the host key the guest printed on its console. The guest has no
//! chef-client: its `/bin/chef-client` is the testkit's stand-in script, which checks the files
//! the bootstrap wrote and prints what it read; what is proven is the transport (host key
//! checked, key and config written, output streamed, exit status).
//!
//! Two VMs are created at once (different addresses), each resolves both ways through named,
//! answers SSH with its recorded key (and refuses a login that trusts another key), is found by
//! Chef search in its environment; then both are destroyed and every record is gone. A failure
//! injected at each step leaves nothing behind: no free address (the only one has a PTR record
//! already, or is a Chef node's), DNS refused (bad TSIG key), hypervisor full, domain fails to start, SSH never
//! answers, Chef refuses (the node's name is taken). Prints each step's time (BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vesemir_chef::{ChefClient, ChefConfig, ChefNodes, ClientKey, ServerFlavor};
use vesemir_core::name::{EnvironmentName, HostName};
use vesemir_core::provision::driver::{run, ProvisionControl, ProvisionDriverConfig, ProvisionPorts};
use vesemir_core::provision::{
    AddressRange, Catalog, ChefRegistry, Dns, DnsZone, Flavor, FlavorName, Fqdn, GuestSsh, HostKeyPolicy,
    Hypervisor, HypervisorName, HypervisorPort, MemoryReservations, Provision, ProvisionConfig,
    ProvisionEvent, ProvisionEventKind, ProvisionOutcome, Reservations, RunListEntry, Size, SshHostKey, Step,
    VmName, VmRecord,
};
use vesemir_provision::{
    DnsConfig, GuestSshConfig, LibvirtConfig, NsupdateDns, OpensshGuest, VirshHypervisor,
};
use vesemir_testkit::goiardi::Goiardi;
use vesemir_testkit::libvirt::{LibvirtLab, POOL, TEMPLATE_VOLUME};
use vesemir_testkit::named::Named;
use vesemir_testkit::process::free_port;

const ZONE: &str = "lab.test";

struct Lab {
    named: Named,
    libvirt: LibvirtLab,
    goiardi: Goiardi,
    admin: ChefClient,
    dns: Arc<NsupdateDns>,
    hypervisor: Arc<VirshHypervisor>,
    chef: Arc<ChefNodes>,
    ssh: Arc<OpensshGuest>,
    reservations: Arc<MemoryReservations>,
    flavor: Flavor,
}

fn hv() -> HypervisorName {
    HypervisorName::new("hv-1").unwrap()
}

fn fqdn(vm: &str) -> Fqdn {
    format!("{vm}.{ZONE}").parse().unwrap()
}

impl Lab {
    async fn start() -> Self {
        let named = Named::start(ZONE, "55.127.in-addr.arpa");
        let libvirt = LibvirtLab::start();
        let goiardi = Goiardi::start();
        let key = ClientKey::from_file(&goiardi.admin_key_path).unwrap();
        let mut config = ChefConfig::new(goiardi.url.clone(), "admin", key);
        config.flavor = ServerFlavor::Goiardi;
        config.request_timeout = Duration::from_secs(20);
        let admin = ChefClient::new(&config).unwrap();
        admin
            .post(
                "/environments",
                &[],
                &json!({
                    "name": "production", "json_class": "Chef::Environment", "chef_type": "environment",
                    "description": "", "default_attributes": {}, "override_attributes": {}, "cookbook_versions": {},
                }),
            )
            .await
            .unwrap();
        let dns = NsupdateDns::new(DnsConfig::new(
            named.address(),
            named.key_file(),
            DnsZone::new(named.reverse_zone()).unwrap(),
        ));
        let hypervisor = VirshHypervisor::new(Self::libvirt_config(&libvirt, libvirt.domain_template()));
        let ssh = OpensshGuest::new(Self::ssh_config(&libvirt, &goiardi, libvirt.ssh_port()));
        let flavor = Flavor {
            name: FlavorName::new("tiny").unwrap(),
            size: Size { cores: 1, memory_mib: 256, disk_gib: 1 },
        };
        Self {
            dns: Arc::new(dns),
            hypervisor: Arc::new(hypervisor),
            chef: Arc::new(ChefNodes::new(admin.clone())),
            ssh: Arc::new(ssh),
            reservations: Arc::new(MemoryReservations::new()),
            named,
            libvirt,
            goiardi,
            admin,
            flavor,
        }
    }

    fn libvirt_config(libvirt: &LibvirtLab, template: String) -> LibvirtConfig {
        LibvirtConfig {
            console_log: Some(libvirt.console_path("{name}").display().to_string()),
            ..LibvirtConfig::new(
                libvirt.uri().to_owned(),
                POOL.to_owned(),
                TEMPLATE_VOLUME.to_owned(),
                template,
            )
        }
    }

    fn ssh_config(libvirt: &LibvirtLab, goiardi: &Goiardi, port: u16) -> GuestSshConfig {
        GuestSshConfig {
            port,
            connect_timeout: Duration::from_secs(5),
            ..GuestSshConfig::new(libvirt.client_key(), goiardi.url.clone())
        }
    }

    fn ports(&self) -> ProvisionPorts {
        ProvisionPorts {
            reservations: self.reservations.clone(),
            dns: self.dns.clone(),
            hypervisors: BTreeMap::from([(hv(), self.hypervisor.clone() as Arc<dyn HypervisorPort>)]),
            chef: self.chef.clone(),
            ssh: self.ssh.clone(),
        }
    }

    fn driver_config(&self, max_guests: u32, first: u8, last: u8) -> ProvisionDriverConfig {
        let mut catalog = Catalog::default();
        let hypervisor = Hypervisor {
            name: hv(),
            max_guests,
            capacity: Size { cores: 4, memory_mib: 2048, disk_gib: 20 },
        };
        catalog.hypervisors.insert(hypervisor.name.clone(), hypervisor);
        catalog.flavors.insert(self.flavor.name.clone(), self.flavor.clone());
        let range =
            AddressRange::new(Ipv4Addr::new(127, 55, 0, first), Ipv4Addr::new(127, 55, 0, last)).unwrap();
        ProvisionDriverConfig {
            call_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            search_wait: Duration::from_secs(15),
            ..ProvisionDriverConfig::new(catalog, range)
        }
    }

    fn config(ssh_timeout: Duration) -> ProvisionConfig {
        ProvisionConfig {
            zone: DnsZone::new(ZONE).unwrap(),
            environment: EnvironmentName::new("production").unwrap(),
            run_list: vec![
                RunListEntry::parse("role[base]").unwrap(),
                RunListEntry::parse("recipe[dev::vm]").unwrap(),
            ],
            host_key: HostKeyPolicy::Strict,
            ssh_timeout,
            bootstrap_timeout: Duration::from_secs(60),
            undo_attempts: 2,
        }
    }

    /// Runs one machine through the driver; answers its outcome and events.
    async fn run(
        &self,
        machine: Provision,
        ports: &ProvisionPorts,
        config: &ProvisionDriverConfig,
    ) -> (ProvisionOutcome, Vec<ProvisionEvent>) {
        let mut events = Vec::new();
        let outcome =
            run(machine, ports, config, &ProvisionControl::new(), &mut |event| events.push(event)).await;
        (outcome, events)
    }

    async fn create(
        &self,
        vm: &str,
        ports: &ProvisionPorts,
        config: &ProvisionDriverConfig,
        ssh_timeout: Duration,
    ) -> (ProvisionOutcome, Vec<ProvisionEvent>) {
        let machine = Provision::create(
            VmName::new(vm).unwrap(),
            self.flavor.clone(),
            Self::config(ssh_timeout),
            Instant::now(),
        );
        self.run(machine, ports, config).await
    }

    /// Nothing of `vm` is left anywhere: DNS (A, and PTR of every address of the lab's
    /// ranges), domain, volume, Chef node and client, reservation.
    async fn assert_nothing_left(&self, vm: &str) {
        let name = fqdn(vm);
        assert!(self.dns.resolve(&name).await.unwrap().is_empty(), "{vm}: A record left");
        for last in 30..=45 {
            let address = Ipv4Addr::new(127, 55, 0, last);
            let names = self.dns.reverse(address).await.unwrap();
            assert!(!names.contains(&name.to_string()), "{vm}: PTR of {address} left");
        }
        let guests = self.hypervisor.guests().await.unwrap();
        assert!(guests.iter().all(|guest| guest.name != vm), "{vm}: domain left: {guests:?}");
        let volumes = self.libvirt.virsh(&["vol-list", "--pool", POOL]);
        assert!(!volumes.contains(&format!("{vm}.img")), "{vm}: volume left: {volumes}");
        assert!(self.admin.get(&format!("/nodes/{name}"), &[]).await.is_err(), "{vm}: Chef node left");
        assert!(self.admin.get(&format!("/clients/{name}"), &[]).await.is_err(), "{vm}: Chef client left");
        let held = self.reservations.held().await.unwrap();
        assert!(held.iter().all(|r| r.vm.as_str() != vm), "{vm}: reservation left: {held:?}");
    }
}

fn failed_at(outcome: &ProvisionOutcome, events: &[ProvisionEvent]) -> (Step, String) {
    match outcome {
        ProvisionOutcome::Failed { step, reason, left_behind } => {
            assert!(left_behind.is_empty(), "left behind {left_behind:?}: {events:#?}");
            (*step, reason.clone())
        }
        other => panic!("expected a failure, got {other:?}: {events:#?}"),
    }
}

fn record(outcome: ProvisionOutcome, events: &[ProvisionEvent]) -> VmRecord {
    match outcome {
        ProvisionOutcome::Ready { record } => record,
        other => panic!("not ready: {other:?}\n{events:#?}"),
    }
}

/// Each step's time, from its `StepStarted` to its `StepDone`.
fn step_times(events: &[ProvisionEvent]) -> Vec<(Step, Duration)> {
    let mut started = BTreeMap::new();
    let mut times = Vec::new();
    for event in events {
        match &event.kind {
            ProvisionEventKind::StepStarted { step } => {
                started.insert(*step, event.elapsed);
            }
            ProvisionEventKind::StepDone { step } => {
                times.push((*step, event.elapsed.saturating_sub(started[step])));
            }
            _ => {}
        }
    }
    times
}

fn output_lines(events: &[ProvisionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match &event.kind {
            ProvisionEventKind::Output { step: Step::Bootstrap, text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn vms_are_created_verified_and_destroyed_and_every_failure_leaves_nothing() {
    let lab = Lab::start().await;
    let ports = lab.ports();
    let normal = lab.driver_config(4, 30, 39);
    let ssh_wait = Duration::from_secs(120);

    // No free address: the only one of the range is in DNS already (someone else's PTR).
    let squatter = fqdn("squatter");
    let only = Ipv4Addr::new(127, 55, 0, 40);
    lab.dns.add_records(&squatter, only).await.unwrap();
    let (outcome, events) = lab.create("no-address", &ports, &lab.driver_config(4, 40, 40), ssh_wait).await;
    let (step, reason) = failed_at(&outcome, &events);
    assert_eq!(step, Step::Reserve, "{reason}");
    assert!(reason.contains("no free address"), "{reason}");
    lab.assert_nothing_left("no-address").await;
    assert_eq!(lab.dns.resolve(&squatter).await.unwrap(), vec![only], "the other name is untouched");
    lab.dns.remove_records(&squatter, Some(only)).await.unwrap();

    // No free address either when the only one is a Chef node's, though DNS does not know it.
    let known = Ipv4Addr::new(127, 55, 0, 41);
    let node = HostName::new("forgotten.lab.test").unwrap();
    lab.admin
        .post(
            "/nodes",
            &[],
            &json!({ "name": node.as_str(), "chef_type": "node", "json_class": "Chef::Node",
            "chef_environment": "production", "run_list": [], "default": {}, "override": {}, "normal": {},
            "automatic": { "ipaddress": known.to_string() } }),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.chef.addresses().await.unwrap().contains(&known) {
        assert!(Instant::now() < deadline, "goiardi never indexed the node's address");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (outcome, events) = lab.create("chef-address", &ports, &lab.driver_config(4, 41, 41), ssh_wait).await;
    let (step, reason) = failed_at(&outcome, &events);
    assert_eq!(step, Step::Reserve, "{reason}");
    assert!(reason.contains("no free address"), "{reason}");
    lab.assert_nothing_left("chef-address").await;
    lab.admin.delete_node(&node).await.unwrap();

    // DNS refused: updates signed with a key the server does not know.
    let bad_key = lab.named.dir().join("bad.key");
    std::fs::write(
        &bad_key,
        "key \"vesemir-test\" { algorithm hmac-sha256; secret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\"; };\n",
    )
    .unwrap();
    let bad_dns = NsupdateDns::new(DnsConfig::new(
        lab.named.address(),
        bad_key,
        DnsZone::new(lab.named.reverse_zone()).unwrap(),
    ));
    let refused_dns = ProvisionPorts { dns: Arc::new(bad_dns), ..ports.clone() };
    let (outcome, events) = lab.create("bad-tsig", &refused_dns, &normal, ssh_wait).await;
    let (step, reason) = failed_at(&outcome, &events);
    assert_eq!(step, Step::Dns, "{reason}");
    lab.assert_nothing_left("bad-tsig").await;

    // The domain fails to start: its kernel is not there.
    let broken = lab.libvirt.domain_template().replace("/guest/vmlinuz", "/guest/no-such-kernel");
    let broken = VirshHypervisor::new(Lab::libvirt_config(&lab.libvirt, broken));
    let broken_ports = ProvisionPorts {
        hypervisors: BTreeMap::from([(hv(), Arc::new(broken) as Arc<dyn HypervisorPort>)]),
        ..ports.clone()
    };
    let (outcome, events) = lab.create("no-kernel", &broken_ports, &normal, ssh_wait).await;
    let (step, reason) = failed_at(&outcome, &events);
    assert_eq!(step, Step::Domain, "{reason}");
    lab.assert_nothing_left("no-kernel").await;

    // SSH never answers (nothing listens where the adapter looks): the started domain goes.
    let deaf = OpensshGuest::new(Lab::ssh_config(&lab.libvirt, &lab.goiardi, free_port()));
    let deaf_ports = ProvisionPorts { ssh: Arc::new(deaf), ..ports.clone() };
    let (outcome, events) = lab.create("no-ssh", &deaf_ports, &normal, Duration::from_secs(3)).await;
    let (step, reason) = failed_at(&outcome, &events);
    assert_eq!(step, Step::WaitSsh, "{reason}");
    lab.assert_nothing_left("no-ssh").await;

    // Chef refuses: a node of that name exists (someone else's: it stays). Two VMs are created
    // at the same time, with the same ports and reservations.
    let taken = fqdn("taken");
    lab.admin
        .post("/nodes", &[], &json!({ "name": taken.to_string(), "chef_type": "node", "json_class": "Chef::Node",
            "chef_environment": "production", "run_list": [], "default": {}, "override": {}, "normal": {}, "automatic": {} }))
        .await
        .unwrap();
    let started = Instant::now();
    let ((alice, alice_events), (bob, bob_events), (refused, refused_events)) = tokio::join!(
        lab.create("dev-alice-1", &ports, &normal, ssh_wait),
        lab.create("dev-bob-1", &ports, &normal, ssh_wait),
        lab.create("taken", &ports, &normal, ssh_wait),
    );
    let wall = started.elapsed();
    let (step, reason) = failed_at(&refused, &refused_events);
    assert_eq!(step, Step::Chef, "{reason}");
    assert!(reason.contains("already exists"), "{reason}");
    assert!(lab.admin.get(&format!("/nodes/{taken}"), &[]).await.is_ok(), "the other node stays");
    lab.admin.delete_node(&HostName::new(taken.to_string()).unwrap()).await.unwrap();
    lab.assert_nothing_left("taken").await;

    let alice = record(alice, &alice_events);
    let bob = record(bob, &bob_events);
    assert_ne!(alice.placement.address, bob.placement.address, "two creates, two addresses");
    eprintln!("three creates at once in {wall:?}; dev-alice-1's steps:");
    for (step, time) in step_times(&alice_events) {
        eprintln!("  {step:<10} {time:?}");
    }

    for (vm, events) in [(&alice, &alice_events), (&bob, &bob_events)] {
        // Its name resolves both ways through the test's named.
        assert_eq!(lab.dns.resolve(&vm.fqdn).await.unwrap(), vec![vm.placement.address]);
        assert_eq!(lab.dns.reverse(vm.placement.address).await.unwrap(), vec![vm.fqdn.to_string()]);
        // SSH answers with the recorded key, the one its console showed, and a login that
        // trusts any other key is refused.
        let console = lab.hypervisor.console_host_key(&vm.vm).await.unwrap();
        assert_eq!(console.as_ref(), Some(&vm.host_key));
        lab.ssh.login(vm.placement.address, &vm.host_key).await.unwrap();
        let other =
            SshHostKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKey00")
                .unwrap();
        assert!(lab.ssh.login(vm.placement.address, &other).await.is_err(), "another key is refused");
        // Chef search finds it in its environment, not in another.
        let production = EnvironmentName::new("production").unwrap();
        assert!(lab.chef.find(&vm.fqdn, &production).await.unwrap());
        assert!(!lab.chef.find(&vm.fqdn, &EnvironmentName::new("staging").unwrap()).await.unwrap());
        // The bootstrap ran on the guest with the files it wrote, its output streamed as events.
        let lines = output_lines(events);
        assert!(lines.contains(&format!("node_name {}", vm.fqdn)), "{lines:#?}");
        assert!(lines.contains(&"environment production".to_owned()), "{lines:#?}");
        assert!(
            lines.iter().any(|l| l.contains("role[base]") && l.contains("recipe[dev::vm]")),
            "{lines:#?}"
        );
        for event in events {
            let json = serde_json::to_string(event).unwrap();
            assert!(!json.contains("PRIVATE KEY"), "no event carries the client key: {json}");
        }
    }

    // The hypervisor is full (two guests of two allowed): a third create stops at reserve.
    let (outcome, events) = lab.create("dev-carol-1", &ports, &lab.driver_config(2, 30, 39), ssh_wait).await;
    let (step, reason) = failed_at(&outcome, &events);
    assert_eq!(step, Step::Reserve, "{reason}");
    lab.assert_nothing_left("dev-carol-1").await;

    // Destroy both: every record is gone.
    let (a, b) = tokio::join!(
        lab.run(Provision::destroy(alice.clone(), Lab::config(ssh_wait), Instant::now()), &ports, &normal),
        lab.run(Provision::destroy(bob.clone(), Lab::config(ssh_wait), Instant::now()), &ports, &normal),
    );
    assert_eq!(a.0, ProvisionOutcome::Destroyed { left_behind: vec![] }, "{:#?}", a.1);
    assert_eq!(b.0, ProvisionOutcome::Destroyed { left_behind: vec![] }, "{:#?}", b.1);
    lab.assert_nothing_left("dev-alice-1").await;
    lab.assert_nothing_left("dev-bob-1").await;
    assert!(lab.reservations.held().await.unwrap().is_empty());
    assert!(lab.hypervisor.guests().await.unwrap().is_empty());
}
