//! In-memory fakes of the three ports (and of the health probe), with fault injection: for the core's own tests, for the
//! conformance suites (so the fakes cannot drift from the real adapters), and for users who
//! embed Vesemir and want to test their own code without servers.
//!
//! All three are cheap to clone handles over shared state, so a test can keep one handle to
//! inject faults and inspect what happened while the driver uses another.

mod executor;
mod fleet;
mod inventory;
mod load_balancer;
mod probe;

pub use executor::{CommandRecord, FakeExecutor, FakeLocks};
pub use fleet::{FakeFleet, FLEET_BACKEND};
pub use inventory::FakeInventory;
pub use load_balancer::{FakeLoadBalancer, FakeServer, RotationLog};
pub use probe::FakeHealthProbe;

use std::sync::{Mutex, MutexGuard};

/// Locks a fake's state. A fake's lock is only poisoned if a test already panicked while
/// holding it; going on with the state as it was is the useful answer then.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
