//! Provisioning a new VM: a deterministic, sans-IO saga. It walks the [`Step`]s in order —
//! reserve an address and a hypervisor slot, add the A and PTR records, copy the disk template,
//! define and start the domain, wait for SSH (recording its host key; in strict mode the key
//! must match the one the guest printed on its console), register the node and client in Chef,
//! run the first bootstrap, verify from outside — and when a step fails, or the operator
//! cancels, undoes every step done, in reverse order. [`Provision::destroy`] runs the same undos
//! for a VM that was built.
//!
//! # Calling order
//!
//! 1. [`Provision::create`] (or [`Provision::destroy`]) with `now`.
//! 2. Loop until [`Provision::is_finished`]:
//!    - take the [`Provision::poll_action`] (there is at most one outstanding), do it within its
//!      own bound (the driver's call timeout; [`Action::WaitForSsh`] and [`Action::Bootstrap`]
//!      carry theirs) and report its result with [`Provision::handle_result`];
//!    - take every [`Provision::poll_event`];
//!    - forward the operator's [`Provision::handle_cancel`] (the action in flight may be
//!      abandoned: report it failed, `partial` if it may have changed something).
//! 3. [`Provision::outcome`].
//!
//! Every input carries `now` (for the events' `elapsed` only); the machine reads no clock,
//! sleeps never and does no IO.
//!
//! # Invariants (checked by `tests/provision_properties.rs` against an independent model)
//!
//! - Every step done (and every step that failed `partial`) that has an undo is undone exactly
//!   once, in the reverse order of the steps; an undo that fails is tried again up to
//!   [`ProvisionConfig::undo_attempts`] times, then named in the outcome's `left_behind`.
//! - Nothing is undone that was not done (or attempted `partial`).
//! - A failure names its step and reason; a cancel starts no new step, and once cancelled the
//!   outcome is `Cancelled` even when the step in flight then fails (abandoned or on its own:
//!   its `StepFailed` event says why).
//! - The machine always ends, with exactly one `Finished` event, the last; events are numbered
//!   1, 2, 3... without gaps.

mod address;
pub mod driver;
mod event;
mod input;
mod names;
mod placement;
mod ports;
mod reservations;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use address::{free_address, AddressRange, EmptyRange};
pub use event::{Mode, ProvisionEvent, ProvisionEventKind, ProvisionOutcome, VmRecord};
pub use input::{Action, ActionResult, Step, Verification};
pub use names::{
    ChefClientKey, DnsZone, FlavorName, Fqdn, HypervisorName, ProvisionNameError, RunListEntry, SshHostKey,
    VmName,
};
pub use placement::{
    choose_hypervisor, Catalog, Flavor, Guest, Hypervisor, HypervisorLoad, PlacementError, Size,
};
pub use ports::{BootstrapSpec, ChefNode, ChefRegistry, Dns, GuestSsh, HypervisorPort};
pub use reservations::{
    choose, MemoryReservations, Placement, Reservation, ReservationRequest, Reservations, ReserveError,
};

use crate::name::EnvironmentName;
use crate::ports::OutputLine;

/// How far a guest's SSH host key is trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostKeyPolicy {
    /// The key SSH presents must match the one the guest printed on its console; a key not
    /// found there fails the step (no trust on first use).
    #[default]
    Strict,
    /// The first key SSH presents is recorded (trust on first use); a console key that differs
    /// still fails the step.
    RecordFirst,
}

/// What a provisioning needs besides the VM's name and flavor: the operator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionConfig {
    /// The zone VMs are named in.
    pub zone: DnsZone,
    /// The Chef environment new nodes join.
    pub environment: EnvironmentName,
    /// The run list new nodes get.
    pub run_list: Vec<RunListEntry>,
    /// How the host key is trusted.
    pub host_key: HostKeyPolicy,
    /// How long to wait for SSH to answer.
    pub ssh_timeout: Duration,
    /// How long the first bootstrap may run.
    pub bootstrap_timeout: Duration,
    /// How many times an undo is tried before its step is left behind (at least 1).
    pub undo_attempts: u32,
}

/// What a create that never ended may have built, read from its events: enough to take it
/// down with [`Provision::destroy_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsBuilt {
    /// The VM.
    pub vm: VmName,
    /// Its DNS name (the `started` event's).
    pub fqdn: Fqdn,
    /// Its flavor.
    pub flavor: Flavor,
    /// Its hypervisor and address, when the reservation is known (the `placed` event, or the
    /// reservation still held).
    pub placement: Option<Placement>,
    /// The steps that started (their `step_started` events): only these are undone.
    pub started: Vec<Step>,
    /// The Chef environment it was registered in.
    pub environment: EnvironmentName,
    /// Its run list.
    pub run_list: Vec<RunListEntry>,
}

/// Why the machine is unwinding.
#[derive(Debug, Clone)]
enum Cause {
    Failed { step: Step, reason: String },
    Cancelled,
    Destroy,
}

/// The provisioning state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Provision {
    config: ProvisionConfig,
    vm: VmName,
    fqdn: Fqdn,
    flavor: Flavor,
    start: Instant,
    placement: Option<Placement>,
    host_key: Option<SshHostKey>,
    /// The node's Chef client key, from registration until the bootstrap is done.
    client_key: Option<ChefClientKey>,
    /// The step whose action is in flight, when walking forward.
    current: Option<Step>,
    /// The undo in flight: its step and attempt.
    undoing: Option<(Step, u32)>,
    /// Steps to undo, the last done on top.
    done: Vec<Step>,
    cancel: bool,
    cause: Option<Cause>,
    left_behind: Vec<Step>,
    outcome: Option<ProvisionOutcome>,
    action: Option<Action>,
    awaiting: bool,
    events: VecDeque<ProvisionEvent>,
    seq: u64,
}

impl Provision {
    /// A machine that builds `vm` of `flavor`; its first action is [`Action::Reserve`].
    pub fn create(vm: VmName, flavor: Flavor, config: ProvisionConfig, now: Instant) -> Self {
        let mut machine = Self::blank(vm, flavor, config, now);
        machine.emit_started(Mode::Create, now);
        machine.start_step(Step::Reserve, now);
        machine
    }

    /// A machine that takes down the VM of `record`: every step with an undo, in reverse.
    pub fn destroy(record: VmRecord, config: ProvisionConfig, now: Instant) -> Self {
        let config = ProvisionConfig {
            zone: record.fqdn.zone.clone(),
            environment: record.environment.clone(),
            run_list: record.run_list.clone(),
            ..config
        };
        let mut machine = Self::blank(record.vm.clone(), record.flavor.clone(), config, now);
        machine.placement = Some(record.placement);
        machine.host_key = Some(record.host_key);
        machine.done = Step::ALL.into_iter().filter(|step| step.has_undo()).collect();
        machine.emit_started(Mode::Destroy, now);
        machine.unwind(Cause::Destroy, now);
        machine
    }

    /// A machine that takes down what a create that never ended (its server was killed) may
    /// have built, as its events say: only the steps that started are undone, last first; a
    /// step needing the placement (disk, domain) is undone only when the placement is known.
    /// Unlike [`Provision::destroy`] it needs no host key (SSH may never have answered).
    pub fn destroy_parts(parts: PartsBuilt, config: ProvisionConfig, now: Instant) -> Self {
        let config = ProvisionConfig {
            zone: parts.fqdn.zone.clone(),
            environment: parts.environment.clone(),
            run_list: parts.run_list.clone(),
            ..config
        };
        let mut machine = Self::blank(parts.vm.clone(), parts.flavor.clone(), config, now);
        let placed = parts.placement.is_some();
        machine.placement = parts.placement;
        machine.done = Step::ALL
            .into_iter()
            .filter(|step| step.has_undo() && parts.started.contains(step))
            .filter(|step| placed || !matches!(step, Step::Disk | Step::Domain))
            .collect();
        machine.emit_started(Mode::Destroy, now);
        machine.unwind(Cause::Destroy, now);
        machine
    }

    fn blank(vm: VmName, flavor: Flavor, config: ProvisionConfig, now: Instant) -> Self {
        let fqdn = Fqdn::new(vm.clone(), config.zone.clone());
        Self {
            config,
            vm,
            fqdn,
            flavor,
            start: now,
            placement: None,
            host_key: None,
            client_key: None,
            current: None,
            undoing: None,
            done: Vec::new(),
            cancel: false,
            cause: None,
            left_behind: Vec::new(),
            outcome: None,
            action: None,
            awaiting: false,
            events: VecDeque::new(),
            seq: 0,
        }
    }

    /// The action to do next, if one is due (at most one is outstanding).
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.action.take()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ProvisionEvent> {
        self.events.pop_front()
    }

    /// Whether the machine has ended (its `Finished` event may still wait in
    /// [`poll_event`](Self::poll_event)).
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<&ProvisionOutcome> {
        self.outcome.as_ref()
    }

    /// The result of the action last polled. A result when none is awaited is ignored.
    pub fn handle_result(&mut self, result: ActionResult, now: Instant) {
        if !self.awaiting || self.outcome.is_some() {
            return;
        }
        self.awaiting = false;
        if let Some((step, attempt)) = self.undoing.take() {
            self.undo_result(step, attempt, result, now);
        } else if let Some(step) = self.current.take() {
            self.step_result(step, result, now);
        }
    }

    /// A line of output of the action in flight (the bootstrap's): reported as an
    /// [`ProvisionEventKind::Output`] event of its step. A line when no step is in flight is
    /// ignored.
    pub fn handle_output(&mut self, line: OutputLine, now: Instant) {
        if !self.awaiting || self.outcome.is_some() || self.undoing.is_some() {
            return;
        }
        if let Some(step) = self.current {
            self.emit(now, ProvisionEventKind::Output { step, stream: line.stream, text: line.text });
        }
    }

    /// The operator cancels: the action in flight ends, then every step done is undone. Once
    /// unwinding (or finished), a cancel changes nothing.
    pub fn handle_cancel(&mut self, now: Instant) {
        if self.outcome.is_some() || self.cause.is_some() || self.cancel {
            return;
        }
        self.cancel = true;
        self.emit(now, ProvisionEventKind::CancelRequested);
        if !self.awaiting {
            self.unwind(Cause::Cancelled, now);
        }
    }

    fn emit_started(&mut self, mode: Mode, now: Instant) {
        let kind = ProvisionEventKind::Started {
            mode,
            vm: self.vm.clone(),
            fqdn: self.fqdn.clone(),
            flavor: self.flavor.clone(),
        };
        self.emit(now, kind);
    }

    fn emit(&mut self, now: Instant, kind: ProvisionEventKind) {
        self.seq += 1;
        let elapsed = now.saturating_duration_since(self.start);
        self.events.push_back(ProvisionEvent { seq: self.seq, elapsed, kind });
    }

    fn ask(&mut self, action: Action) {
        self.action = Some(action);
        self.awaiting = true;
    }

    fn start_step(&mut self, step: Step, now: Instant) {
        self.emit(now, ProvisionEventKind::StepStarted { step });
        match self.do_action(step) {
            Some(action) => {
                self.current = Some(step);
                self.ask(action);
            }
            None => {
                let reason =
                    format!("{step} needs what an earlier step did not leave (a bug: please report)");
                self.fail(step, reason, false, now);
            }
        }
    }

    fn do_action(&self, step: Step) -> Option<Action> {
        let vm = self.vm.clone();
        let fqdn = self.fqdn.clone();
        let placement = self.placement.clone();
        Some(match step {
            Step::Reserve => Action::Reserve { vm, flavor: self.flavor.clone() },
            Step::Dns => Action::AddDnsRecords { fqdn, address: placement?.address },
            Step::Disk => {
                Action::CreateDisk { hypervisor: placement?.hypervisor, vm, flavor: self.flavor.clone() }
            }
            Step::Domain => {
                let placement = placement?;
                Action::StartDomain {
                    hypervisor: placement.hypervisor,
                    vm,
                    flavor: self.flavor.clone(),
                    address: placement.address,
                }
            }
            Step::WaitSsh => {
                let placement = placement?;
                Action::WaitForSsh {
                    hypervisor: placement.hypervisor,
                    vm,
                    address: placement.address,
                    timeout: self.config.ssh_timeout,
                    console_key: self.config.host_key == HostKeyPolicy::Strict,
                }
            }
            Step::Chef => Action::RegisterChef { node: self.node(placement?.address) },
            Step::Bootstrap => Action::Bootstrap {
                spec: BootstrapSpec {
                    node: self.node(placement?.address),
                    host_key: self.host_key.clone()?,
                    client_key: self.client_key.clone()?,
                },
                timeout: self.config.bootstrap_timeout,
            },
            Step::Verify => Action::Verify {
                fqdn,
                address: placement?.address,
                host_key: self.host_key.clone()?,
                environment: self.config.environment.clone(),
            },
        })
    }

    fn node(&self, address: std::net::Ipv4Addr) -> ChefNode {
        ChefNode {
            fqdn: self.fqdn.clone(),
            address,
            environment: self.config.environment.clone(),
            run_list: self.config.run_list.clone(),
        }
    }

    fn undo_action(&self, step: Step) -> Option<Action> {
        let placement = self.placement.clone();
        Some(match step {
            Step::Reserve => Action::Release { vm: self.vm.clone() },
            Step::Dns => Action::RemoveDnsRecords {
                fqdn: self.fqdn.clone(),
                address: placement.map(|placement| placement.address),
            },
            Step::Disk => Action::DeleteDisk { hypervisor: placement?.hypervisor, vm: self.vm.clone() },
            Step::Domain => Action::DestroyDomain { hypervisor: placement?.hypervisor, vm: self.vm.clone() },
            Step::Chef => Action::UnregisterChef { fqdn: self.fqdn.clone() },
            Step::WaitSsh | Step::Bootstrap | Step::Verify => return None,
        })
    }

    fn step_result(&mut self, step: Step, result: ActionResult, now: Instant) {
        let outcome = match (step, result) {
            (_, ActionResult::Failed { error, partial }) => Err((error.chain(), partial)),
            (Step::Reserve, ActionResult::Reserved(placement)) => {
                self.placement = Some(placement.clone());
                self.emit(now, ProvisionEventKind::Placed { placement });
                Ok(())
            }
            (Step::Chef, ActionResult::ChefRegistered(key)) => {
                self.client_key = Some(key);
                Ok(())
            }
            (Step::Bootstrap, ActionResult::Done) => {
                // The key is on the VM now; the machine keeps no copy longer than it needs.
                self.client_key = None;
                Ok(())
            }
            (Step::WaitSsh, ActionResult::SshReady { presented, console }) => {
                self.check_host_key(presented, console, now)
            }
            (Step::Verify, ActionResult::Verified(checks)) => {
                if checks.passed() {
                    Ok(())
                } else {
                    Err((failed_checks(checks), false))
                }
            }
            (Step::Dns | Step::Disk | Step::Domain, ActionResult::Done) => Ok(()),
            (step, other) => {
                Err((format!("unexpected answer {other:?} to {step} (a bug: please report)"), true))
            }
        };
        match outcome {
            Ok(()) => {
                if step.has_undo() {
                    self.done.push(step);
                }
                self.emit(now, ProvisionEventKind::StepDone { step });
                if self.cancel {
                    self.unwind(Cause::Cancelled, now);
                } else if let Some(next) = step.next() {
                    self.start_step(next, now);
                } else {
                    self.finish_ready(now);
                }
            }
            Err((reason, partial)) => self.fail(step, reason, partial, now),
        }
    }

    fn check_host_key(
        &mut self,
        presented: SshHostKey,
        console: Option<SshHostKey>,
        now: Instant,
    ) -> Result<(), (String, bool)> {
        match (&console, self.config.host_key) {
            (Some(seen), _) if *seen != presented => {
                return Err((
                    format!("SSH presented host key {presented}, but the console showed {seen}"),
                    false,
                ));
            }
            (None, HostKeyPolicy::Strict) => {
                return Err((
                    format!("SSH presented host key {presented}, but no host key was found on the console to check it against"),
                    false,
                ));
            }
            _ => {}
        }
        self.emit(
            now,
            ProvisionEventKind::HostKeyRecorded {
                key: presented.clone(),
                confirmed_by_console: console.is_some(),
            },
        );
        self.host_key = Some(presented);
        Ok(())
    }

    fn fail(&mut self, step: Step, reason: String, partial: bool, now: Instant) {
        if partial && step.has_undo() {
            self.done.push(step);
        }
        self.emit(now, ProvisionEventKind::StepFailed { step, reason: reason.clone(), partial });
        // Once the operator cancelled, the provisioning ends cancelled whatever the step in
        // flight answered (the driver abandons a wait; a step may also fail on its own): the
        // operator asked for it to stop, and the step's failure is in its event.
        let cause = if self.cancel { Cause::Cancelled } else { Cause::Failed { step, reason } };
        self.unwind(cause, now);
    }

    fn unwind(&mut self, cause: Cause, now: Instant) {
        self.cause = Some(cause);
        self.client_key = None;
        self.next_undo(now);
    }

    fn next_undo(&mut self, now: Instant) {
        while let Some(step) = self.done.pop() {
            if self.start_undo(step, 1, now) {
                return;
            }
        }
        self.finish_unwound(now);
    }

    /// Starts an undo; false when it cannot be built (the step is left behind).
    fn start_undo(&mut self, step: Step, attempt: u32, now: Instant) -> bool {
        self.emit(now, ProvisionEventKind::UndoStarted { step, attempt });
        match self.undo_action(step) {
            Some(action) => {
                self.undoing = Some((step, attempt));
                self.ask(action);
                true
            }
            None => {
                let reason = format!("no undo can be built for {step} (a bug: please report)");
                self.emit(now, ProvisionEventKind::UndoFailed { step, reason, will_retry: false });
                self.left_behind.push(step);
                false
            }
        }
    }

    fn undo_result(&mut self, step: Step, attempt: u32, result: ActionResult, now: Instant) {
        match result {
            ActionResult::Failed { error, .. } => {
                let will_retry = attempt < self.config.undo_attempts.max(1);
                self.emit(now, ProvisionEventKind::UndoFailed { step, reason: error.chain(), will_retry });
                if will_retry && self.start_undo(step, attempt + 1, now) {
                    return;
                }
                if !will_retry {
                    self.left_behind.push(step);
                }
            }
            _ => self.emit(now, ProvisionEventKind::UndoDone { step }),
        }
        self.next_undo(now);
    }

    fn finish_ready(&mut self, now: Instant) {
        let (Some(placement), Some(host_key)) = (self.placement.clone(), self.host_key.clone()) else {
            let reason = "the VM has no placement or host key at the end (a bug: please report)".to_owned();
            self.fail(Step::Verify, reason, false, now);
            return;
        };
        let record = VmRecord {
            vm: self.vm.clone(),
            fqdn: self.fqdn.clone(),
            flavor: self.flavor.clone(),
            placement,
            host_key,
            environment: self.config.environment.clone(),
            run_list: self.config.run_list.clone(),
        };
        self.finish(ProvisionOutcome::Ready { record }, now);
    }

    fn finish_unwound(&mut self, now: Instant) {
        let left_behind = std::mem::take(&mut self.left_behind);
        let outcome = match self.cause.clone() {
            Some(Cause::Failed { step, reason }) => ProvisionOutcome::Failed { step, reason, left_behind },
            Some(Cause::Cancelled) => ProvisionOutcome::Cancelled { left_behind },
            Some(Cause::Destroy) | None => ProvisionOutcome::Destroyed { left_behind },
        };
        self.finish(outcome, now);
    }

    fn finish(&mut self, outcome: ProvisionOutcome, now: Instant) {
        self.outcome = Some(outcome.clone());
        self.emit(now, ProvisionEventKind::Finished { outcome });
    }
}

fn failed_checks(checks: Verification) -> String {
    let mut failed = Vec::new();
    if !checks.dns_resolves {
        failed.push("the name does not resolve to the address");
    }
    if !checks.ssh_answers {
        failed.push("SSH does not answer with the recorded host key");
    }
    if !checks.in_chef_search {
        failed.push("Chef search does not find the node in its environment");
    }
    format!("verification failed: {}", failed.join("; "))
}
