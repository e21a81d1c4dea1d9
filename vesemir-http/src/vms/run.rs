//! One create or destroy, run in a task of its own: the core's machine driven by the core's
//! driver over the front end's adapters and the store's reservations. Every event is stored
//! (renumbered after `offset`: a destroy's events follow its create's on one stream), then
//! announced to this instance's live followers; the row gets the placement once reserved and
//! the end with its outcome.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use vesemir_core::provision::driver::{self, ProvisionControl};
use vesemir_core::provision::{Provision, ProvisionEvent, ProvisionEventKind, ProvisionOutcome, VmName};

use super::{Setup, Vms};
use crate::store::vms::{StoreReservations, VmRow, VmStatus, VmUpdate};
use crate::store::Store;

/// How many events a live follower may fall behind before it reads the rest from the store.
const LIVE_CAPACITY: usize = 1024;

/// How often storing a batch of events is tried before it is given up (logged).
const STORE_ATTEMPTS: u32 = 5;

/// A live follower's channel: events as stored.
pub type LiveVmEvents = broadcast::Receiver<Arc<ProvisionEvent>>;

/// A create or destroy running on this instance: its cancel, its live events, its task.
#[derive(Debug, Clone)]
pub struct Running {
    name: VmName,
    control: ProvisionControl,
    live: broadcast::Sender<Arc<ProvisionEvent>>,
    task: Arc<OnceLock<tokio::task::AbortHandle>>,
    mode: VmStatus,
}

impl Running {
    /// The VM's name.
    pub fn name(&self) -> &VmName {
        &self.name
    }

    /// Asks the run to cancel (a create: the step in flight ends, then every step done is
    /// undone).
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// Whether it creates (`Creating`) or destroys (`Destroying`).
    pub fn mode(&self) -> VmStatus {
        self.mode
    }

    /// A live follower of its events (as stored, from now on).
    pub fn subscribe(&self) -> LiveVmEvents {
        self.live.subscribe()
    }

    /// Stops its task where it is (shutdown).
    pub(crate) fn abort(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// What a run starts from.
pub(crate) struct Start {
    /// The VM's row (its status is `mode`).
    pub row: VmRow,
    /// The machine: a create or a destroy.
    pub machine: Provision,
    /// `Creating` or `Destroying`.
    pub mode: VmStatus,
    /// The last event number stored before this run's (0 for a create).
    pub offset: u64,
}

/// Starts `start` in a task of its own on this instance.
pub(crate) fn spawn(vms: &Arc<Vms>, setup: &Setup, store: &Arc<dyn Store>, start: Start) {
    let (live, _) = broadcast::channel(LIVE_CAPACITY);
    let running = Running {
        name: start.row.name.clone(),
        control: ProvisionControl::new(),
        live,
        task: Arc::new(OnceLock::new()),
        mode: start.mode,
    };
    let id = start.row.id;
    vms.lock().insert(id, running.clone());
    let task = tokio::spawn(drive(Arc::downgrade(vms), setup.clone(), store.clone(), running.clone(), start));
    let _ = running.task.set(task.abort_handle());
}

async fn drive(
    vms: std::sync::Weak<Vms>,
    setup: Setup,
    store: Arc<dyn Store>,
    running: Running,
    start: Start,
) {
    let Start { row, machine, mode, offset } = start;
    let ports = setup.provisioning.ports(Arc::new(StoreReservations::new(store.clone())));
    let (sender, events) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write(store.clone(), row.id, mode, events, running.live.clone(), offset));
    let mut on_event = move |event: ProvisionEvent| {
        // The writer ends only once every sender is gone.
        let _ = sender.send(event);
    };
    let outcome =
        driver::run(machine, &ports, &setup.provisioning.driver, &running.control, &mut on_event).await;
    drop(on_event);
    if let Err(e) = writer.await {
        tracing::error!(vm = %row.name, error = %e, "the VM's event writer failed");
    }
    let update = end_of(&outcome);
    match store.update_vm(row.id, &update).await {
        Ok(()) => tracing::info!(vm = %row.name, status = %update.status, "the VM's run ended"),
        Err(e) => {
            tracing::error!(vm = %row.name, status = %update.status, error = %e, "recording the VM's end failed")
        }
    }
    if let Some(vms) = vms.upgrade() {
        vms.lock().remove(&row.id);
    }
    // `running` (and its live sender) drops here: followers see the end.
}

/// The row's end for `outcome`.
fn end_of(outcome: &ProvisionOutcome) -> VmUpdate {
    let (status, record) = match outcome {
        ProvisionOutcome::Ready { record } => (VmStatus::Ready, Some(record.clone())),
        ProvisionOutcome::Failed { .. } => (VmStatus::Failed, None),
        ProvisionOutcome::Cancelled { .. } => (VmStatus::Cancelled, None),
        ProvisionOutcome::Destroyed { .. } => (VmStatus::Destroyed, None),
    };
    VmUpdate {
        status,
        placement: None,
        record,
        outcome: Some(outcome.clone()),
        finished_ms: Some(crate::clock::now_ms()),
    }
}

/// Stores the run's events in order, in batches, renumbered after `offset`, then announces
/// them; a `Placed` event puts the placement on the row first.
async fn write(
    store: Arc<dyn Store>,
    id: i64,
    mode: VmStatus,
    mut events: mpsc::UnboundedReceiver<ProvisionEvent>,
    live: broadcast::Sender<Arc<ProvisionEvent>>,
    offset: u64,
) {
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = events.try_recv() {
            batch.push(next);
        }
        for event in &mut batch {
            event.seq = event.seq.saturating_add(offset);
        }
        for event in &batch {
            if let ProvisionEventKind::Placed { placement } = &event.kind {
                let update = VmUpdate {
                    status: mode,
                    placement: Some(placement.clone()),
                    record: None,
                    outcome: None,
                    finished_ms: None,
                };
                if let Err(e) = store.update_vm(id, &update).await {
                    tracing::error!(vm = id, error = %e, "recording the VM's placement failed");
                }
            }
        }
        store_batch(&*store, id, &batch).await;
        for event in batch {
            // No follower is no error.
            let _ = live.send(Arc::new(event));
        }
    }
}

async fn store_batch(store: &dyn Store, id: i64, batch: &[ProvisionEvent]) {
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=STORE_ATTEMPTS {
        match store.append_vm_events(id, batch).await {
            Ok(()) => return,
            Err(e) if attempt < STORE_ATTEMPTS => {
                tracing::warn!(vm = id, attempt, error = %e, "storing the VM's events failed: trying again");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            Err(e) => {
                tracing::error!(vm = id, events = batch.len(), error = %e, "storing the VM's events failed: they are lost from its log");
            }
        }
    }
}
