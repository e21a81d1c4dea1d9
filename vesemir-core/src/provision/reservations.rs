//! The `Reservations` port: the one place an address and a hypervisor slot are handed out, so
//! two concurrent provisionings never get the same address or overfill a hypervisor. The caller
//! reads the world first (guests per hypervisor from libvirt, addresses in DNS and Chef); the
//! port adds what it has reserved itself and chooses with the pure rules of
//! [`placement`](super::placement) and [`address`](super::address), atomically.
//! [`MemoryReservations`] is the in-memory implementation (tests, a single process); the
//! server's store implements the same trait in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::address::{free_address, AddressRange};
use super::names::{HypervisorName, VmName};
use super::placement::{choose_hypervisor, Catalog, Guest, PlacementError, Size};
use crate::error::PortError;

/// Where a VM goes: its hypervisor and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The hypervisor chosen.
    pub hypervisor: HypervisorName,
    /// The address reserved.
    pub address: Ipv4Addr,
}

/// One reservation held: a VM, its size and its placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The VM it is for.
    pub vm: VmName,
    /// The VM's size (counted on its hypervisor until the domain is read there).
    pub size: Size,
    /// Where it goes.
    pub placement: Placement,
}

/// What a reservation is chosen from: the request and the world as the caller read it.
#[derive(Debug, Clone)]
pub struct ReservationRequest {
    /// The VM to reserve for.
    pub vm: VmName,
    /// Its size.
    pub size: Size,
    /// The hypervisors and flavors configured.
    pub catalog: Catalog,
    /// The guests read from each hypervisor.
    pub guests: BTreeMap<HypervisorName, Vec<Guest>>,
    /// The range addresses come from.
    pub range: AddressRange,
    /// Addresses found in use (in DNS, in Chef...).
    pub taken: BTreeSet<Ipv4Addr>,
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReserveError {
    /// The VM already holds a reservation.
    #[error("{0} already holds a reservation")]
    AlreadyReserved(VmName),
    /// Every address of the range is in use or reserved.
    #[error("no free address in {}..{}", .0.first(), .0.last())]
    NoFreeAddress(AddressRange),
    /// No hypervisor has room.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] PortError),
}

/// Hands out addresses and hypervisor slots, atomically: the caller reads the world (guests per
/// hypervisor, addresses in DNS and Chef), the port adds every reservation it holds and chooses
/// with [`choose`], all in one step, so two concurrent reservers never get the same address or
/// overfill a hypervisor.
#[async_trait]
pub trait Reservations: Send + Sync + Debug {
    /// Chooses and records a placement for `request.vm`, counting every reservation held (by
    /// any process sharing the store) on top of what the request read; all or nothing.
    async fn reserve(&self, request: ReservationRequest) -> Result<Reservation, ReserveError>;
    /// Gives back `vm`'s reservation; giving back one not held is no error (undo runs again
    /// after a crash).
    async fn release(&self, vm: &VmName) -> Result<(), PortError>;
    /// Every reservation held.
    async fn held(&self) -> Result<Vec<Reservation>, PortError>;
}

/// The choice itself, shared by every implementation: `held` are the reservations already
/// recorded. Pure.
pub fn choose(request: &ReservationRequest, held: &[Reservation]) -> Result<Reservation, ReserveError> {
    if held.iter().any(|reservation| reservation.vm == request.vm) {
        return Err(ReserveError::AlreadyReserved(request.vm.clone()));
    }
    let mut taken = request.taken.clone();
    taken.extend(held.iter().map(|reservation| reservation.placement.address));
    let address = free_address(request.range, &taken).ok_or(ReserveError::NoFreeAddress(request.range))?;
    let reserved: Vec<_> =
        held.iter().map(|r| (r.vm.clone(), r.placement.hypervisor.clone(), r.size)).collect();
    let loads = request.catalog.loads(&request.guests, &reserved);
    let hypervisor = choose_hypervisor(&loads, request.size)?;
    Ok(Reservation {
        vm: request.vm.clone(),
        size: request.size,
        placement: Placement { hypervisor, address },
    })
}

/// [`Reservations`] in memory, behind a mutex: atomic within one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryReservations {
    held: Arc<Mutex<BTreeMap<VmName, Reservation>>>,
}

impl MemoryReservations {
    /// No reservations.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<VmName, Reservation>>, PortError> {
        self.held.lock().map_err(|_| PortError::rejected("reservations", "poisoned by a panic"))
    }
}

#[async_trait]
impl Reservations for MemoryReservations {
    async fn reserve(&self, request: ReservationRequest) -> Result<Reservation, ReserveError> {
        let mut held = self.lock()?;
        let list: Vec<Reservation> = held.values().cloned().collect();
        let reservation = choose(&request, &list)?;
        held.insert(reservation.vm.clone(), reservation.clone());
        Ok(reservation)
    }

    async fn release(&self, vm: &VmName) -> Result<(), PortError> {
        self.lock()?.remove(vm);
        Ok(())
    }

    async fn held(&self) -> Result<Vec<Reservation>, PortError> {
        Ok(self.lock()?.values().cloned().collect())
    }
}
