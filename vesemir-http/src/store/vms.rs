//! The VMs the server provisions (issue 19): one row per provisioning request, its events
//! (create and destroy numbered as one stream), and the address and hypervisor reservations.
//!
//! A VM **holds** resources (counts against its owner's limit, keeps its name) while it is
//! [`VmStatus::Creating`], [`VmStatus::Ready`], [`VmStatus::Destroying`] or
//! [`VmStatus::Interrupted`]; a VM that ended [`VmStatus::Failed`], [`VmStatus::Cancelled`] or
//! [`VmStatus::Destroyed`] keeps its row and events for the record and frees its name.
//!
//! **Reservations** are the store's implementation of the core's
//! [`Reservations`] port ([`StoreReservations`]):
//! [`Store::reserve_vm`] reads every reservation held and chooses
//! with the core's pure [`choose`](vesemir_core::provision::choose) in one transaction that serialises reservers (SQLite:
//! `BEGIN IMMEDIATE`; PostgreSQL: a table lock), so two requests on any instances never get
//! the same address or overfill a hypervisor; the unique address column is the last guard.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use vesemir_core::error::PortError;
use vesemir_core::provision::{
    FlavorName, Placement, ProvisionOutcome, Reservation, ReservationRequest, Reservations, ReserveError,
    VmName, VmRecord,
};

use super::Store;

/// Where a VM stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    /// Being built: the steps run.
    Creating,
    /// Built and verified: DNS resolves, SSH answers with the recorded key, Chef search finds it.
    Ready,
    /// A step failed; the steps done were undone (except those named left behind).
    Failed,
    /// Cancelled while being built; the steps done were undone (except those left behind).
    Cancelled,
    /// Being taken down.
    Destroying,
    /// Taken down: every part gone (except those named left behind).
    Destroyed,
    /// The server running its create or destroy stopped (crash, restart) before it ended: parts
    /// may be left; `vesemir vm destroy` takes down what its events say was built.
    Interrupted,
}

impl VmStatus {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Creating => "creating",
            VmStatus::Ready => "ready",
            VmStatus::Failed => "failed",
            VmStatus::Cancelled => "cancelled",
            VmStatus::Destroying => "destroying",
            VmStatus::Destroyed => "destroyed",
            VmStatus::Interrupted => "interrupted",
        }
    }

    /// Reads [`VmStatus::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [
            VmStatus::Creating,
            VmStatus::Ready,
            VmStatus::Failed,
            VmStatus::Cancelled,
            VmStatus::Destroying,
            VmStatus::Destroyed,
            VmStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether a VM in this status holds its name, counts against its owner's limit and may
    /// still have parts on the hypervisors, in DNS and in Chef.
    pub fn holds_resources(self) -> bool {
        matches!(self, VmStatus::Creating | VmStatus::Ready | VmStatus::Destroying | VmStatus::Interrupted)
    }

    /// Whether a create or destroy is running for it.
    pub fn is_running(self) -> bool {
        matches!(self, VmStatus::Creating | VmStatus::Destroying)
    }
}

impl fmt::Display for VmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VM to record, before its create starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    /// Its name (unique among the VMs that hold resources).
    pub name: VmName,
    /// The directory user it is for.
    pub owner: String,
    /// The team of the token or session that asked.
    pub team: String,
    /// Its flavor.
    pub flavor: FlavorName,
    /// Who asked (token name or signed-in user), for the record.
    pub requested_by: String,
    /// When it was asked for, in ms since the epoch.
    pub created_ms: i64,
}

/// A VM as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    /// The row's id (events are kept by it; a name may be used again once freed).
    pub id: i64,
    /// Its name.
    pub name: VmName,
    /// The directory user it is for.
    pub owner: String,
    /// The team that asked.
    pub team: String,
    /// Its flavor.
    pub flavor: FlavorName,
    /// Who asked.
    pub requested_by: String,
    /// Where it stands.
    pub status: VmStatus,
    /// When it was asked for (ms since the epoch).
    pub created_ms: i64,
    /// When its create or destroy last ended, if it did.
    pub finished_ms: Option<i64>,
    /// Its hypervisor and address, once reserved.
    pub placement: Option<Placement>,
    /// What a destroy needs, once it was built.
    pub record: Option<VmRecord>,
    /// How its last create or destroy ended.
    pub outcome: Option<ProvisionOutcome>,
    /// The server instance running its create or destroy (or that ran the last one).
    pub instance: String,
}

/// What [`Store::insert_vm`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmInserted {
    /// Recorded as [`VmStatus::Creating`], held by this instance.
    Inserted(VmRow),
    /// Another VM that holds resources has this name: nothing recorded.
    NameInUse(VmRow),
    /// The owner already has `held` VMs that hold resources, the most allowed: nothing
    /// recorded. Checked in the same transaction as the insert.
    OwnerAtLimit {
        /// How many the owner holds.
        held: u32,
    },
}

/// Which VMs to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFilter {
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only this team's.
    pub team: Option<String>,
    /// Only in this status.
    pub status: Option<VmStatus>,
    /// At most this many (the store caps it at 500).
    pub limit: i64,
}

/// A change of a VM's row; `None` fields keep what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmUpdate {
    /// The new status.
    pub status: VmStatus,
    /// Its placement, once reserved.
    pub placement: Option<Placement>,
    /// Its record, once built.
    pub record: Option<VmRecord>,
    /// How the create or destroy ended.
    pub outcome: Option<ProvisionOutcome>,
    /// When it ended (ms since the epoch).
    pub finished_ms: Option<i64>,
}

/// The core's [`Reservations`] port over the server's store: every instance sharing the
/// database sees every reservation.
#[derive(Debug, Clone)]
pub struct StoreReservations {
    store: Arc<dyn Store>,
}

impl StoreReservations {
    /// Reservations kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn port_error(error: super::StoreError) -> PortError {
    PortError::Adapter { adapter: "store", source: Box::new(error) }
}

#[async_trait]
impl Reservations for StoreReservations {
    async fn reserve(&self, request: ReservationRequest) -> Result<Reservation, ReserveError> {
        self.store.reserve_vm(&request).await
    }

    async fn release(&self, vm: &VmName) -> Result<(), PortError> {
        self.store.release_vm(vm).await.map_err(port_error)
    }

    async fn held(&self) -> Result<Vec<Reservation>, PortError> {
        self.store.vm_reservations().await.map_err(port_error)
    }
}

/// The refusal of a store that keeps no VMs (a test's wrapper).
pub(crate) fn keeps_no_vms(context: &str) -> super::StoreError {
    super::StoreError::new(context, "this store keeps no VMs")
}
