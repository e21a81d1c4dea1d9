//! Vesemir's [`LoadBalancer`](vesemir_core::ports::LoadBalancer) port over HAProxy's runtime
//! API: drain, maintenance, ready, weights and session shutdown on every HAProxy instance that
//! fronts a backend, over unix sockets or TCP (`stats socket ... level admin`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vesemir_core::PortError> {
//! use vesemir_core::name::BackendName;
//! use vesemir_core::ports::{AdminState, Backend, LbEndpoint, LoadBalancer, ServerLookup};
//! use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};
//!
//! let lb = HaproxyLoadBalancer::new(HaproxyConfig::default());
//! let backend = Backend {
//!     name: BackendName::new("be_web").expect("a valid name"),
//!     instances: vec![
//!         LbEndpoint::Unix { socket: "/run/haproxy/admin.sock".into() },
//!         LbEndpoint::Tcp { address: "10.0.0.2".into(), port: 9999 },
//!     ],
//! };
//! let server = lb.resolve(&backend, &ServerLookup::Address("10.0.1.7".into())).await?;
//! lb.set_state(&backend, &server, AdminState::Drain).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod adapter;
mod command;
mod config;
mod error;
mod gate;
mod join;
mod reply;
mod servers_state;
mod stat;
mod transport;

pub use adapter::HaproxyLoadBalancer;
pub use config::HaproxyConfig;
pub use gate::open_connections;
