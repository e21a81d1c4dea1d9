//! The async driver of a [`Provision`]: it turns the machine's actions into port calls, each
//! within its bound, feeds the results back, forwards the bootstrap's output as it comes and the
//! operator's cancel, and hands every event to the caller. Front ends call [`run`] with the
//! machine ([`Provision::create`] or [`Provision::destroy`]), the ports they composed and the
//! operator's config, and get the events and the outcome. Time comes from tokio's clock (tests
//! may pause it); the ports do every IO.
//!
//! What each action becomes:
//!
//! | action | port calls |
//! |---|---|
//! | `Reserve` | `HypervisorPort::guests` of every hypervisor of the catalog (one that cannot be read fails the step: its load would count as empty) and `ChefRegistry::addresses` (taken), then `Reservations::reserve`; an address that already has a PTR record in DNS is given back and the next one taken |
//! | `AddDnsRecords` / `RemoveDnsRecords` | `Dns::add_records` / `remove_records` |
//! | `CreateDisk` / `DeleteDisk`, `StartDomain` / `DestroyDomain` | the placement's `HypervisorPort` |
//! | `WaitForSsh` | every `poll_interval` until its timeout: `GuestSsh::presented_host_key` and (strict) `HypervisorPort::console_host_key` |
//! | `RegisterChef` / `UnregisterChef` | `ChefRegistry::register` / `unregister` |
//! | `Bootstrap` | `GuestSsh::bootstrap`, its output lines forwarded as they come |
//! | `Verify` | `Dns::resolve` and `reverse`, `GuestSsh::login` with the recorded key, `ChefRegistry::find` asked every `poll_interval` for at most `search_wait` (Chef indexes asynchronously) |
//! | `Release` | `Reservations::release` |
//!
//! A call that runs out of its bound fails its step `partial` when it may have changed
//! something (so its undo runs), plain otherwise. A cancel reaches the machine at once; an
//! action in flight that only waits or reads (`WaitForSsh`, `Bootstrap`, `Verify`) is abandoned,
//! any other is let finish (it is bounded) so that its undo knows what it did.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::address::AddressRange;
use super::event::{ProvisionEvent, ProvisionOutcome};
use super::input::{Action, ActionResult, Verification};
use super::names::{Fqdn, HypervisorName, SshHostKey, VmName};
use super::placement::{Catalog, Flavor};
use super::ports::{ChefRegistry, Dns, GuestSsh, HypervisorPort};
use super::reservations::{ReservationRequest, Reservations, ReserveError};
use super::Provision;
use crate::error::PortError;
use crate::name::EnvironmentName;
use crate::ports::OutputSink;

/// The adapters a provisioning reaches the world through, chosen by the front end.
#[derive(Clone)]
pub struct ProvisionPorts {
    /// Addresses and hypervisor slots.
    pub reservations: Arc<dyn Reservations>,
    /// The DNS server taking the VMs' records.
    pub dns: Arc<dyn Dns>,
    /// One port per hypervisor of the catalog, by name.
    pub hypervisors: BTreeMap<HypervisorName, Arc<dyn HypervisorPort>>,
    /// The Chef server's nodes and clients.
    pub chef: Arc<dyn ChefRegistry>,
    /// SSH to the new guests.
    pub ssh: Arc<dyn GuestSsh>,
}

impl fmt::Debug for ProvisionPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionPorts")
            .field("reservations", &self.reservations)
            .field("dns", &self.dns)
            .field("hypervisors", &self.hypervisors.keys().collect::<Vec<_>>())
            .field("chef", &self.chef)
            .field("ssh", &self.ssh)
            .finish()
    }
}

/// The operator's settings the driver needs besides the machine's own.
#[derive(Debug, Clone)]
pub struct ProvisionDriverConfig {
    /// The hypervisors and flavors.
    pub catalog: Catalog,
    /// The range addresses come from.
    pub range: AddressRange,
    /// The bound of one port call (`WaitForSsh` and `Bootstrap` carry their own).
    pub call_timeout: Duration,
    /// How often SSH, the console and Chef search are asked again while waiting.
    pub poll_interval: Duration,
    /// How long `Verify` waits for Chef search to find the node (indexing is asynchronous).
    pub search_wait: Duration,
}

impl ProvisionDriverConfig {
    /// A config with a 60 s call bound, a 250 ms poll interval and 30 s of search wait.
    pub fn new(catalog: Catalog, range: AddressRange) -> Self {
        Self {
            catalog,
            range,
            call_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            search_wait: Duration::from_secs(30),
        }
    }
}

/// What the operator can tell a running provisioning. Clones share it.
#[derive(Debug, Clone)]
pub struct ProvisionControl {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for ProvisionControl {
    fn default() -> Self {
        Self::new()
    }
}

impl ProvisionControl {
    /// A control nobody has used.
    pub fn new() -> Self {
        Self { sender: Arc::new(watch::channel(false).0) }
    }

    /// Cancel: the step in flight ends, then every step done is undone.
    pub fn cancel(&self) {
        self.sender.send_replace(true);
    }

    /// Whether cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        *self.sender.borrow()
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs `machine` to its end through `ports`, giving every event to `on_event` in order, and
/// returns the outcome.
pub async fn run(
    mut machine: Provision,
    ports: &ProvisionPorts,
    config: &ProvisionDriverConfig,
    control: &ProvisionControl,
    on_event: &mut (dyn FnMut(ProvisionEvent) + Send),
) -> ProvisionOutcome {
    let mut cancel = control.sender.subscribe();
    // A cancel sent before this run started counts too.
    cancel.mark_changed();
    let (output, mut lines) = OutputSink::channel();
    let performer = Performer { ports, config };
    let mut cancel_seen = false;
    loop {
        while let Some(event) = machine.poll_event() {
            on_event(event);
        }
        if machine.is_finished() {
            break;
        }
        let Some(action) = machine.poll_action() else {
            // Not finished and nothing to do cannot happen (the machine always has one action
            // outstanding until it ends); end it rather than wait for ever.
            machine.handle_cancel(now());
            continue;
        };
        let abandon_on_cancel =
            matches!(action, Action::WaitForSsh { .. } | Action::Bootstrap { .. } | Action::Verify { .. });
        let work = performer.perform(action, output.clone());
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                biased;
                changed = cancel.changed(), if !cancel_seen => {
                    // An error means the control is gone: no cancel can come any more.
                    if changed.is_err() || *cancel.borrow_and_update() {
                        cancel_seen = true;
                    }
                    if cancel_seen && changed.is_ok() {
                        machine.handle_cancel(now());
                        while let Some(event) = machine.poll_event() {
                            on_event(event);
                        }
                        if abandon_on_cancel {
                            break ActionResult::failed(PortError::rejected("provisioning", "abandoned: the operator cancelled"));
                        }
                    }
                }
                Some(line) = lines.recv() => {
                    machine.handle_output(line, now());
                    while let Some(event) = machine.poll_event() {
                        on_event(event);
                    }
                }
                result = &mut work => break result,
            }
        };
        // Lines printed just before the action ended belong to it.
        for line in lines.drain() {
            machine.handle_output(line, now());
        }
        machine.handle_result(result, now());
    }
    match machine.outcome() {
        Some(outcome) => outcome.clone(),
        None => ProvisionOutcome::Cancelled { left_behind: Vec::new() },
    }
}

struct Performer<'a> {
    ports: &'a ProvisionPorts,
    config: &'a ProvisionDriverConfig,
}

/// A port call's result as the machine's: a failure of a call that may have changed something
/// is `partial` only when it ran out of time (an answered refusal changed nothing: every port
/// is all or nothing).
fn done(result: Result<(), PortError>, changes: bool) -> ActionResult {
    match result {
        Ok(()) => ActionResult::Done,
        Err(error @ PortError::Timeout { .. }) if changes => ActionResult::failed_partway(error),
        Err(error) => ActionResult::failed(error),
    }
}

impl Performer<'_> {
    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        call: impl Future<Output = Result<T, PortError>>,
    ) -> Result<T, PortError> {
        crate::driver::bounded(self.config.call_timeout, what, call).await
    }

    fn hypervisor(&self, name: &HypervisorName) -> Result<&Arc<dyn HypervisorPort>, PortError> {
        self.ports
            .hypervisors
            .get(name)
            .ok_or_else(|| PortError::rejected(format!("hypervisor {name}"), "no port is configured for it"))
    }

    async fn perform(&self, action: Action, output: OutputSink) -> ActionResult {
        match action {
            Action::Reserve { vm, flavor } => self.reserve(vm, flavor).await,
            Action::Release { vm } => done(
                self.bounded(|| format!("releasing {vm}"), self.ports.reservations.release(&vm)).await,
                true,
            ),
            Action::AddDnsRecords { fqdn, address } => done(
                self.bounded(
                    || format!("adding DNS records of {fqdn}"),
                    self.ports.dns.add_records(&fqdn, address),
                )
                .await,
                true,
            ),
            Action::RemoveDnsRecords { fqdn, address } => done(
                self.bounded(
                    || format!("removing DNS records of {fqdn}"),
                    self.ports.dns.remove_records(&fqdn, address),
                )
                .await,
                true,
            ),
            Action::CreateDisk { hypervisor, vm, flavor } => {
                let result = match self.hypervisor(&hypervisor) {
                    Ok(port) => {
                        self.bounded(
                            || format!("creating {vm}'s disk on {hypervisor}"),
                            port.create_disk(&vm, flavor.size),
                        )
                        .await
                    }
                    Err(error) => Err(error),
                };
                done(result, true)
            }
            Action::DeleteDisk { hypervisor, vm } => {
                let result = match self.hypervisor(&hypervisor) {
                    Ok(port) => {
                        self.bounded(
                            || format!("deleting {vm}'s disk on {hypervisor}"),
                            port.delete_disk(&vm),
                        )
                        .await
                    }
                    Err(error) => Err(error),
                };
                done(result, true)
            }
            Action::StartDomain { hypervisor, vm, flavor, address } => {
                let result = match self.hypervisor(&hypervisor) {
                    Ok(port) => {
                        self.bounded(
                            || format!("starting {vm} on {hypervisor}"),
                            port.start_domain(&vm, flavor.size, address),
                        )
                        .await
                    }
                    Err(error) => Err(error),
                };
                done(result, true)
            }
            Action::DestroyDomain { hypervisor, vm } => {
                let result = match self.hypervisor(&hypervisor) {
                    Ok(port) => {
                        self.bounded(|| format!("destroying {vm} on {hypervisor}"), port.destroy_domain(&vm))
                            .await
                    }
                    Err(error) => Err(error),
                };
                done(result, true)
            }
            Action::WaitForSsh { hypervisor, vm, address, timeout, console_key } => {
                self.wait_for_ssh(&hypervisor, &vm, address, timeout, console_key).await
            }
            Action::RegisterChef { node } => {
                let fqdn = node.fqdn.clone();
                match self
                    .bounded(|| format!("registering {fqdn} in Chef"), self.ports.chef.register(&node))
                    .await
                {
                    Ok(key) => ActionResult::ChefRegistered(key),
                    Err(error @ PortError::Timeout { .. }) => ActionResult::failed_partway(error),
                    Err(error) => ActionResult::failed(error),
                }
            }
            Action::UnregisterChef { fqdn } => done(
                self.bounded(|| format!("unregistering {fqdn} from Chef"), self.ports.chef.unregister(&fqdn))
                    .await,
                true,
            ),
            Action::Bootstrap { spec, timeout } => {
                let fqdn = spec.node.fqdn.clone();
                let result = crate::driver::bounded(
                    timeout,
                    || format!("the bootstrap of {fqdn}"),
                    self.ports.ssh.bootstrap(&spec, output),
                )
                .await;
                // The bootstrap has no undo of its own: what it wrote lives on the VM's disk.
                done(result, false)
            }
            Action::Verify { fqdn, address, host_key, environment } => {
                self.verify(&fqdn, address, &host_key, &environment).await
            }
        }
    }

    async fn reserve(&self, vm: VmName, flavor: Flavor) -> ActionResult {
        let mut guests = BTreeMap::new();
        for name in self.config.catalog.hypervisors.keys() {
            let read = match self.hypervisor(name) {
                Ok(port) => self.bounded(|| format!("reading the guests of {name}"), port.guests()).await,
                Err(error) => Err(error),
            };
            match read {
                Ok(list) => {
                    guests.insert(name.clone(), list);
                }
                Err(error) => return ActionResult::failed(error),
            }
        }
        // Addresses Chef's nodes use are taken, whatever DNS says; Chef that cannot be read
        // fails the step (an address in use could be handed out).
        let mut taken = match self
            .bounded(|| "reading the addresses of Chef's nodes".to_owned(), self.ports.chef.addresses())
            .await
        {
            Ok(addresses) => addresses,
            Err(error) => return ActionResult::failed(error),
        };
        // Each address found in DNS is skipped and the choice made again: at most the range.
        for _ in 0..=self.config.range.len().min(1024) {
            let request = ReservationRequest {
                vm: vm.clone(),
                size: flavor.size,
                catalog: self.config.catalog.clone(),
                guests: guests.clone(),
                range: self.config.range,
                taken: taken.clone(),
            };
            let reservation = match tokio::time::timeout(
                self.config.call_timeout,
                self.ports.reservations.reserve(request),
            )
            .await
            {
                Ok(Ok(reservation)) => reservation,
                Ok(Err(error)) => return ActionResult::failed(reserve_error(error)),
                Err(_) => {
                    return ActionResult::failed_partway(PortError::timeout(
                        format!("reserving for {vm}"),
                        self.config.call_timeout,
                    ))
                }
            };
            let address = reservation.placement.address;
            let names = self
                .bounded(|| format!("looking up {address} in DNS"), self.ports.dns.reverse(address))
                .await;
            match names {
                Ok(names) if names.is_empty() => return ActionResult::Reserved(reservation.placement),
                Ok(_) => taken.insert(address),
                Err(error) => {
                    // Given back; if even that fails, the step counts as done partway so that
                    // its undo gives it back again.
                    return match self.release(&vm).await {
                        Ok(()) => ActionResult::failed(error),
                        Err(_) => ActionResult::failed_partway(error),
                    };
                }
            };
            if let Err(error) = self.release(&vm).await {
                return ActionResult::failed_partway(error);
            }
        }
        ActionResult::failed(PortError::rejected(
            "reservations",
            format!(
                "no address of {}..{} is free in DNS",
                self.config.range.first(),
                self.config.range.last()
            ),
        ))
    }

    async fn release(&self, vm: &VmName) -> Result<(), PortError> {
        self.bounded(|| format!("releasing {vm}"), self.ports.reservations.release(vm)).await
    }

    async fn wait_for_ssh(
        &self,
        hypervisor: &HypervisorName,
        vm: &VmName,
        address: Ipv4Addr,
        timeout: Duration,
        console_key: bool,
    ) -> ActionResult {
        let port = match self.hypervisor(hypervisor) {
            Ok(port) => port,
            Err(error) => return ActionResult::failed(error),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = None;
        loop {
            let presented = self
                .bounded(
                    || format!("reading the host key at {address}"),
                    self.ports.ssh.presented_host_key(address),
                )
                .await;
            match presented {
                Ok(Some(presented)) => {
                    if !console_key {
                        return ActionResult::SshReady { presented, console: None };
                    }
                    let console =
                        self.bounded(|| format!("reading {vm}'s console"), port.console_host_key(vm)).await;
                    match console {
                        Ok(Some(console)) => {
                            return ActionResult::SshReady { presented, console: Some(console) }
                        }
                        // SSH may answer before the console's log is flushed: ask again until
                        // the deadline, then let the machine judge a key without a console.
                        Ok(None) if tokio::time::Instant::now() >= deadline => {
                            return ActionResult::SshReady { presented, console: None }
                        }
                        Ok(None) => {}
                        Err(error) => last_error = Some(error),
                    }
                }
                Ok(None) => {}
                Err(error) => last_error = Some(error),
            }
            if tokio::time::Instant::now() >= deadline {
                let mut error = PortError::timeout(format!("waiting for SSH at {address}"), timeout);
                if let Some(last) = last_error {
                    error = PortError::unreachable(
                        format!("SSH at {address}"),
                        format!("{} (last: {})", error.chain(), last.chain()),
                    );
                }
                return ActionResult::failed(error);
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    async fn verify(
        &self,
        fqdn: &Fqdn,
        address: Ipv4Addr,
        host_key: &SshHostKey,
        environment: &EnvironmentName,
    ) -> ActionResult {
        let forward = self.bounded(|| format!("resolving {fqdn}"), self.ports.dns.resolve(fqdn)).await;
        let backward = self.bounded(|| format!("resolving {address}"), self.ports.dns.reverse(address)).await;
        let fqdn_text = fqdn.to_string();
        let dns_resolves = matches!(&forward, Ok(found) if found == &[address])
            && matches!(&backward, Ok(found) if found.contains(&fqdn_text));
        let ssh_answers = self
            .bounded(|| format!("logging in to {address}"), self.ports.ssh.login(address, host_key))
            .await
            .is_ok();
        let deadline = tokio::time::Instant::now() + self.config.search_wait;
        let in_chef_search = loop {
            let found = self
                .bounded(|| format!("searching Chef for {fqdn}"), self.ports.chef.find(fqdn, environment))
                .await;
            if matches!(found, Ok(true)) {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(self.config.poll_interval).await;
        };
        ActionResult::Verified(Verification { dns_resolves, ssh_answers, in_chef_search })
    }
}

fn reserve_error(error: ReserveError) -> PortError {
    match error {
        ReserveError::Store(error) => error,
        other => PortError::rejected("reservations", other.to_string()),
    }
}
