//! Vesemir's core: the deployment request, the three ports, the sans-IO rollout state machine,
//! its events, and the async driver that runs it over the ports.
//!
//! Nothing here opens a socket or spawns a process: adapters (`vesemir-chef`, `vesemir-haproxy`,
//! `vesemir-ssh`) implement the ports, front ends compose them.
#![warn(missing_docs)]

pub mod backoff;
pub mod crash;
pub mod debian_version;
pub mod driver;
pub mod error;
pub mod fake;
pub mod fleet;
pub mod history;
pub mod host;
pub mod host_locks;
pub mod journal;
pub mod key_file;
pub mod lock;
pub mod name;
pub mod ports;
pub mod request;

pub use error::{BoxError, PortError};
pub use host::Host;
pub mod event;
pub mod plan;
pub mod progress;
pub mod provision;
pub mod render;
pub mod report;
pub mod rollout;
pub mod static_inventory;
mod time;

pub use backoff::Backoff;
pub use crash::{run_catching_panics, Crash};
pub use debian_version::DebianVersion;
pub use driver::{prepare, run, Control, DriverConfig, Ports, PrepareError, Prepared};
pub use event::{Event, EventKind, EventSink};
pub use plan::Plan;
pub use progress::{HostProgress, Progress};
pub use report::DeploymentReport;
pub use rollout::Rollout;
