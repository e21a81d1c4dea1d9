//! VMs in one button (issue 19): the server side of provisioning. The routes are in
//! [`handlers`] (`POST /v1/vms`, `GET /v1/vms`, `GET /v1/vm-flavors`, `GET /v1/vms/{name}`,
//! `GET /v1/vms/{name}/events`, `POST /v1/vms/{name}/cancel`, `DELETE /v1/vms/{name}`; the
//! bodies are [`crate::vm_wire`]).
//!
//! - **Setup** ([`Vms::open`]): what VMs are built with comes from the front end
//!   ([`PortsFactory::provisioning`](crate::PortsFactory::provisioning)), who may ask for which
//!   flavor from `[vms]` ([`rules`]), and owners are looked up in the directory of `[ldap]`.
//!   `[vms]` without provisioning or without `[ldap]`, or naming a flavor the provisioning does
//!   not define, does not start. Provisioning without `[vms]` answers every VM route 404.
//! - **Runs** ([`run`]): a create or destroy is the core's [`Provision`] machine driven by
//!   the core's driver in a task of its own; every event is stored (the destroy's numbered after
//!   the create's), then announced to this instance's live followers ([`stream`]); the row
//!   follows the machine (placement once reserved, the end and its outcome).
//! - **Restarts**: at start, VMs whose create or destroy no live instance runs are marked
//!   `interrupted` (logged); at shutdown the runs of this instance are aborted and marked so.
//!
//! [`Provision`]: vesemir_core::provision::Provision

pub mod handlers;
pub mod naming;
pub mod rules;
pub mod run;
pub mod stream;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vesemir_core::request::{FieldError, ValidationErrors};
use vesemir_ldap::Directory;

use crate::config::VmRules;
use crate::ports::Provisioning;
use crate::store::Store;

pub use run::Running;

/// What the VM routes need: the setup (when `[vms]` is configured) and the runs of this
/// instance.
#[derive(Debug)]
pub struct Vms {
    setup: Option<Setup>,
    /// Creates and destroys running on this instance, by VM row id.
    running: Mutex<HashMap<i64, Running>>,
    /// Held while an order (destroy) checks a VM's status and changes it.
    pub(crate) orders: tokio::sync::Mutex<()>,
}

/// A configured VM service.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Who may ask for which flavor.
    pub rules: VmRules,
    /// What VMs are built with.
    pub provisioning: Provisioning,
    /// Where owners must exist.
    pub directory: Directory,
}

impl Vms {
    /// Checks `rules` against `provisioning` and the directory, or answers every problem, each
    /// naming its field and the fix. `None` rules: the VM routes answer 404 (whatever the
    /// provisioning).
    pub fn open(
        rules: Option<&VmRules>,
        provisioning: Option<Provisioning>,
        directory: Option<&Directory>,
    ) -> Result<Self, ValidationErrors> {
        let Some(rules) = rules else {
            if provisioning.is_some() {
                tracing::info!("[provision] is configured but [vms] is not: no team may create VMs");
            }
            return Ok(Self::unconfigured());
        };
        let mut problems = Vec::new();
        if provisioning.is_none() {
            problems.push(FieldError::new(
                "vms",
                "is set, but this server has nothing to build VMs with: add the [provision] section (hypervisors, flavors, addresses, DNS, Chef), or remove [vms]",
            ));
        }
        if directory.is_none() {
            problems.push(FieldError::new(
                "vms",
                "needs [ldap]: a VM's owner must exist in the directory; add the [ldap] section, or remove [vms]",
            ));
        }
        if let Some(provisioning) = &provisioning {
            problems.extend(rules::check(rules, &provisioning.driver.catalog));
        }
        if let Some(errors) = ValidationErrors::from_errors(problems) {
            return Err(errors);
        }
        match (provisioning, directory) {
            (Some(provisioning), Some(directory)) => Ok(Self {
                setup: Some(Setup { rules: rules.clone(), provisioning, directory: directory.clone() }),
                running: Mutex::default(),
                orders: tokio::sync::Mutex::default(),
            }),
            // Both were checked just above.
            _ => Err(ValidationErrors::one(FieldError::new("vms", "cannot be set up"))),
        }
    }

    /// No VM service: every VM route answers 404.
    pub fn unconfigured() -> Self {
        Self { setup: None, running: Mutex::default(), orders: tokio::sync::Mutex::default() }
    }

    /// The setup, when `[vms]` is configured.
    pub fn setup(&self) -> Option<&Setup> {
        self.setup.as_ref()
    }

    /// The run of VM row `id` on this instance, if one runs here.
    pub fn running(&self, id: i64) -> Option<Running> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
        // A panic while holding this lock leaves the map as it was: go on with it.
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At start: marks `interrupted` the VMs whose create or destroy no live instance runs, and
    /// logs each.
    pub async fn interrupt_unfinished(store: &Arc<dyn Store>) -> Result<usize, crate::StoreError> {
        let interrupted = store.interrupt_unfinished_vms(crate::clock::now_ms()).await?;
        for vm in &interrupted {
            tracing::warn!(
                vm = %vm.name,
                owner = %vm.owner,
                instance = %vm.instance,
                "the VM's create or destroy was interrupted by its server's stop: `vesemir vm destroy {}` takes down what was built",
                vm.name
            );
        }
        Ok(interrupted.len())
    }

    /// At shutdown: aborts every run of this instance and marks its VM `interrupted`.
    pub async fn abort_all(&self, store: &Arc<dyn Store>) -> usize {
        let runs: Vec<(i64, Running)> = self.lock().drain().collect();
        for (id, running) in &runs {
            running.abort();
            let update = crate::store::vms::VmUpdate {
                status: crate::store::vms::VmStatus::Interrupted,
                placement: None,
                record: None,
                outcome: None,
                finished_ms: Some(crate::clock::now_ms()),
            };
            match store.update_vm(*id, &update).await {
                Ok(()) => {
                    tracing::warn!(vm = %running.name(), "the server stops: the VM's run was aborted and is interrupted")
                }
                Err(e) => {
                    tracing::error!(vm = %running.name(), error = %e, "the server stops: the VM's run was aborted, and recording it failed (the next start marks it interrupted)")
                }
            }
        }
        runs.len()
    }
}

/// Why the VM routes refuse before anything else: `[vms]` is not configured.
pub(crate) fn not_configured() -> crate::api::ApiError {
    crate::api::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "this server creates no VMs: [vms] is not configured (the operators add [vms] and [provision] to its configuration)",
    )
}

/// The setup, or 404.
pub(crate) fn configured(vms: &Vms) -> Result<&Setup, crate::api::ApiError> {
    vms.setup().ok_or_else(not_configured)
}
