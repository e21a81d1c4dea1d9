//! What the SQLite and PostgreSQL stores share for VMs (issue 19, [`super::vms`]): the columns
//! of a VM row and of a reservation as one tuple both drivers decode, checked into typed
//! values, and the JSON text of the core's serde types kept in the `placement`, `record`,
//! `outcome` and `size` columns.

use std::net::Ipv4Addr;

use vesemir_core::error::PortError;
use vesemir_core::provision::{
    FlavorName, HypervisorName, Placement, Reservation, ReserveError, Size, VmName,
};

use super::vms::{VmRow, VmStatus};
use super::StoreError;

/// The statuses that hold resources ([`VmStatus::holds_resources`]) as an SQL list; the
/// partial unique index on names in both schemas spells the same list.
pub const HOLDING: &str = "('creating', 'ready', 'destroying', 'interrupted')";

/// The statuses of a create or destroy that runs ([`VmStatus::is_running`]) as an SQL list.
pub const RUNNING: &str = "('creating', 'destroying')";

/// The most rows [`super::Store::list_vms`] answers.
pub const MAX_LISTED: i64 = 500;

/// The columns of `vms` that [`vm_row`] reads, in its tuple's order.
pub const VM_COLUMNS: &str = "id, name, owner, team, flavor, requested_by, status, created_ms, finished_ms, \
     placement, record, outcome, instance";

/// A `vms` row as both drivers read it ([`VM_COLUMNS`]).
pub type VmColumns = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// The columns of `vm_reservations` that [`reservation`] reads, in its tuple's order.
pub const RESERVATION_COLUMNS: &str = "vm, hypervisor, address, size";

/// A `vm_reservations` row as both drivers read it ([`RESERVATION_COLUMNS`]).
pub type ReservationColumns = (String, String, String, String);

/// A stored VM row, checked.
pub fn vm_row(columns: VmColumns) -> Result<VmRow, StoreError> {
    let (
        id,
        name,
        owner,
        team,
        flavor,
        requested_by,
        status,
        created_ms,
        finished_ms,
        placement,
        record,
        outcome,
        instance,
    ) = columns;
    let context = "reading a VM";
    Ok(VmRow {
        id,
        name: VmName::new(&name).map_err(|e| StoreError::new(context, e))?,
        owner,
        team,
        flavor: FlavorName::new(&flavor).map_err(|e| StoreError::new(context, e))?,
        requested_by,
        status: VmStatus::parse(&status)
            .ok_or_else(|| StoreError::new(context, format!("unknown status {status:?}")))?,
        created_ms,
        finished_ms,
        placement: placement
            .as_deref()
            .map(|text| from_json(text, "reading a VM's placement"))
            .transpose()?,
        record: record.as_deref().map(|text| from_json(text, "reading a VM's record")).transpose()?,
        outcome: outcome.as_deref().map(|text| from_json(text, "reading a VM's outcome")).transpose()?,
        instance,
    })
}

/// A stored reservation, checked.
pub fn reservation(columns: ReservationColumns) -> Result<Reservation, StoreError> {
    let (vm, hypervisor, address, size) = columns;
    let context = "reading a reservation";
    let size: Size = from_json(&size, context)?;
    Ok(Reservation {
        vm: VmName::new(&vm).map_err(|e| StoreError::new(context, e))?,
        size,
        placement: Placement {
            hypervisor: HypervisorName::new(&hypervisor).map_err(|e| StoreError::new(context, e))?,
            address: address.parse::<Ipv4Addr>().map_err(|e| StoreError::new(context, e))?,
        },
    })
}

/// `value` as JSON text.
pub fn to_json<T: serde::Serialize>(value: &T, context: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::new(context, e))
}

/// The value `text` holds as JSON.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str, context: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::new(context, e))
}

/// An optional value as JSON text.
pub fn to_json_opt<T: serde::Serialize>(
    value: Option<&T>,
    context: &str,
) -> Result<Option<String>, StoreError> {
    value.map(|value| to_json(value, context)).transpose()
}

/// A list's limit as the store applies it: at least 0, at most [`MAX_LISTED`].
pub fn list_limit(limit: i64) -> i64 {
    limit.clamp(0, MAX_LISTED)
}

/// A store failure while reserving, as the core's port reports it.
pub fn reserve_error(error: StoreError) -> ReserveError {
    ReserveError::Store(PortError::Adapter { adapter: "store", source: Box::new(error) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_lists_name_the_statuses_the_contract_names() {
        let all = [
            VmStatus::Creating,
            VmStatus::Ready,
            VmStatus::Failed,
            VmStatus::Cancelled,
            VmStatus::Destroying,
            VmStatus::Destroyed,
            VmStatus::Interrupted,
        ];
        for status in all {
            let quoted = format!("'{}'", status.as_str());
            assert_eq!(HOLDING.contains(&quoted), status.holds_resources(), "{status}");
            assert_eq!(RUNNING.contains(&quoted), status.is_running(), "{status}");
        }
    }

    #[test]
    fn the_limit_is_capped() {
        assert_eq!((list_limit(-1), list_limit(20), list_limit(10_000)), (0, 20, MAX_LISTED));
    }
}
