//! A VM's row as the API shows it ([`VmView`]): its DNS name, how to log in once ready, why it
//! failed, what was left behind and what to do next.

use vesemir_core::provision::{DnsZone, ProvisionOutcome, Step};

use crate::store::vms::{VmRow, VmStatus};
use crate::vm_wire::{VmFailure, VmLinks, VmView};

/// `row` as shown: `zone` makes its DNS name, `login_user` the login (the owner when `None`).
pub fn of(row: &VmRow, zone: &DnsZone, login_user: Option<&str>) -> VmView {
    let fqdn = match &row.record {
        Some(record) => record.fqdn.to_string(),
        None => format!("{}.{zone}", row.name),
    };
    let placement = row.placement.as_ref().or(row.record.as_ref().map(|r| &r.placement));
    let login = (row.status == VmStatus::Ready)
        .then(|| format!("ssh {}@{fqdn}", login_user.unwrap_or(row.owner.as_str())));
    let failure = match &row.outcome {
        Some(ProvisionOutcome::Failed { step, reason, .. }) => {
            Some(VmFailure { step: step.as_str().to_owned(), reason: crate::server_paths::hidden(reason) })
        }
        _ => None,
    };
    let left_behind: Vec<String> = row
        .outcome
        .as_ref()
        .map(|o| o.left_behind().iter().map(|s| s.as_str().to_owned()).collect())
        .unwrap_or_default();
    let path = format!("/v1/vms/{}", row.name);
    VmView {
        name: row.name.to_string(),
        owner: row.owner.clone(),
        team: row.team.clone(),
        flavor: row.flavor.to_string(),
        status: row.status,
        fqdn,
        address: placement.map(|p| p.address.to_string()),
        hypervisor: placement.map(|p| p.hypervisor.to_string()),
        ssh_host_key: row.record.as_ref().map(|r| r.host_key.to_string()),
        login,
        requested_by: row.requested_by.clone(),
        created_at: crate::wire::rfc3339(row.created_ms),
        finished_at: row.finished_ms.map(crate::wire::rfc3339),
        failure,
        next: next(row, row.outcome.as_ref().map(ProvisionOutcome::left_behind).unwrap_or_default()),
        left_behind,
        links: VmLinks {
            cancel: (row.status == VmStatus::Creating).then(|| format!("{path}/cancel")),
            events: format!("{path}/events"),
            page: format!("/vms/{}", row.name),
            self_: path,
        },
    }
}

/// What to do next, when something is to be done.
fn next(row: &VmRow, left_behind: &[Step]) -> Option<String> {
    let name = &row.name;
    let parts = || left_behind.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    match row.status {
        VmStatus::Interrupted if row.record.is_some() => Some(format!(
            "its server stopped while it ran: take down what was built with `vesemir vm destroy {name}`"
        )),
        VmStatus::Interrupted => Some(format!(
            "its server stopped while it was being created: `vesemir vm destroy {name}` takes down every step its events say started ({})",
            row.placement.as_ref().map_or_else(|| "no placement recorded".to_owned(), |p| format!("on {} at {}", p.hypervisor, p.address))
        )),
        VmStatus::Ready => Some(format!("take it down when done with `vesemir vm destroy {name}`")),
        _ if !left_behind.is_empty() => Some(format!(
            "these parts could not be undone and are still there: {}; an operator removes them",
            parts()
        )),
        VmStatus::Failed | VmStatus::Cancelled => {
            Some("nothing is left of it: create it again with `vesemir vm create`".to_owned())
        }
        _ => None,
    }
}
