//! The three ports the rollout talks through: where the hosts are ([`Inventory`]), how traffic
//! reaches them ([`LoadBalancer`]) and how a changeset runs on them ([`Executor`]); and the
//! optional fourth, [`HealthProbe`], the orchestrator's own HTTP health check of a host.
//!
//! All three are async, dyn-compatible (`async-trait`) and `Send + Sync + Debug`, because front
//! ends choose adapters at run time. Forwarding impls for `&T`, `Box<T>` and `Arc<T>` let callers
//! hold them however they like.

mod executor;
mod health_probe;
mod inventory;
mod load_balancer;

pub use executor::{
    Executor, ExitStatus, FileUpload, OutputLine, OutputReceiver, OutputSink, OutputStream, RemoteCommand,
};
pub use health_probe::{HealthProbe, HttpCheck, ProbeOutcome};
pub use inventory::{Inventory, Selector, TermKind};
pub use load_balancer::{
    check_restore, AdminState, Backend, InstanceState, LbEndpoint, LoadBalancer, LoadBalancerExt,
    Operational, ServerLookup, ServerState, ServerStatus, Weight, MAX_WEIGHT,
};
