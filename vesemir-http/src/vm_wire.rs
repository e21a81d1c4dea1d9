//! The VM API's JSON bodies (issue 19), shared by the server, the CLI's `vesemir vm` and the
//! web page. Events travel as the core's
//! [`ProvisionEvent`](vesemir_core::provision::ProvisionEvent) JSON.
//!
//! | call | answer |
//! |---|---|
//! | `POST /v1/vms` with [`VmCreateRequest`] | `202` + `Location`, [`VmView`] (`creating`) |
//! | `GET /v1/vms?owner=&team=&status=&limit=` | [`VmList`], newest first |
//! | `GET /v1/vm-flavors` | [`VmFlavorList`]: the flavors the requester's team may create |
//! | `GET /v1/vms/{name}` | [`VmView`] |
//! | `GET /v1/vms/{name}/events` (`Accept: text/event-stream`, `Last-Event-ID`) | one SSE `provision` event per core event (`id` = its `seq`), until a `finished` event with nothing running |
//! | `POST /v1/vms/{name}/cancel` | `202`, [`VmView`] |
//! | `DELETE /v1/vms/{name}` | `202`, [`VmView`] (`destroying`; its events follow the create's on the same stream) |

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::vms::VmStatus;

/// `POST /v1/vms`: a VM for a directory user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateRequest {
    /// The directory user the VM is for (must exist in the directory): who logs in to it.
    pub owner: String,
    /// A flavor of the server's `[provision]` configuration that the requester's team may
    /// create.
    pub flavor: String,
    /// The VM's name (a DNS label); the default is the owner's name and the lowest free number,
    /// `alice-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A VM as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    /// Its name.
    pub name: String,
    /// The directory user it is for.
    pub owner: String,
    /// The team that asked.
    pub team: String,
    /// Its flavor.
    pub flavor: String,
    /// Where it stands.
    pub status: VmStatus,
    /// Its DNS name.
    pub fqdn: String,
    /// Its address, once reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its hypervisor, once chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// Its SSH host key (`ssh-ed25519 AAAA...`), once recorded: what `known_hosts` should hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
    /// How its owner logs in once it is ready, e.g. `ssh alice@alice-1.dev.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// Who asked (token name or signed-in user).
    pub requested_by: String,
    /// When it was asked for (RFC 3339, UTC).
    pub created_at: String,
    /// When its create or destroy last ended (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why its create failed: the step and the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<VmFailure>,
    /// Steps whose parts could not be undone and are still there (`dns`, `disk`, `domain`,
    /// `chef`, `reserve`): an operator has to remove them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_behind: Vec<String>,
    /// What to do next, when something is to be done (`vesemir vm destroy alice-1` after an
    /// interruption, the parts left behind...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Its resources.
    pub links: VmLinks,
}

/// Why a create failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmFailure {
    /// The step that failed (`reserve`, `dns`, `disk`, `domain`, `wait_ssh`, `chef`,
    /// `bootstrap`, `verify`).
    pub step: String,
    /// Why, as the adapter said it.
    pub reason: String,
}

/// A VM's resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmLinks {
    /// The VM's own URL path (`/v1/vms/{name}`; `DELETE` destroys it).
    #[serde(rename = "self")]
    pub self_: String,
    /// Its server-sent events.
    pub events: String,
    /// Where to POST to cancel its create: while it is `creating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
    /// Its web page.
    pub page: String,
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmList {
    /// The VMs, newest first.
    pub vms: Vec<VmView>,
}

/// One flavor a team may create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmFlavorView {
    /// Its name, as `flavor` of [`VmCreateRequest`].
    pub name: String,
    /// Virtual CPUs.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

/// `GET /v1/vm-flavors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmFlavorList {
    /// The flavors the requester's team may create, by name.
    pub flavors: Vec<VmFlavorView>,
    /// How many VMs one owner may hold for this team's requests.
    pub max_per_owner: u32,
}
