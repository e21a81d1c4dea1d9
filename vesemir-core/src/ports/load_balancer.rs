//! The `LoadBalancer` port: take a host's server out of rotation and put it back, on every
//! load balancer instance that fronts it.

use std::fmt::{self, Debug};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::PortError;
use crate::name::{BackendName, ServerName};

/// How often the default [`LoadBalancer::wait_drained`] and [`LoadBalancer::wait_up`] poll.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Where one load balancer instance's control interface listens (HAProxy's runtime API).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum LbEndpoint {
    /// A TCP address.
    Tcp {
        /// IP address or DNS name.
        address: String,
        /// TCP port.
        port: u16,
    },
    /// A unix socket on this machine.
    Unix {
        /// The socket's path.
        socket: PathBuf,
    },
}

impl fmt::Display for LbEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LbEndpoint::Tcp { address, port } if address.contains(':') => {
                write!(f, "[{address}]:{port}")
            }
            LbEndpoint::Tcp { address, port } => write!(f, "{address}:{port}"),
            LbEndpoint::Unix { socket } => write!(f, "unix:{}", socket.display()),
        }
    }
}

/// A backend and the instances that serve it: every operation applies to all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// The backend's name, the same on every instance.
    pub name: BackendName,
    /// The instances fronting it.
    pub instances: Vec<LbEndpoint>,
}

/// How to find a host's server in a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLookup {
    /// The server has this name (rendered from the request's name template).
    Name(ServerName),
    /// The server whose address is this host's address.
    Address(String),
}

impl fmt::Display for ServerLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerLookup::Name(name) => write!(f, "server named {name}"),
            ServerLookup::Address(address) => write!(f, "server with address {address}"),
        }
    }
}

/// The administrative state Vesemir sets on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In rotation: takes new traffic.
    Ready,
    /// Takes no new traffic; established sessions continue.
    Drain,
    /// Out of rotation: no traffic, health checks stopped.
    Maint,
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        })
    }
}

/// A weight as a percentage (0 to 100) of the server's configured weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Weight(u8);

impl Weight {
    /// The configured weight: full traffic.
    pub const FULL: Weight = Weight(100);
    /// No new traffic, while health checks still run.
    pub const ZERO: Weight = Weight(0);

    /// A percentage from 0 to 100.
    pub fn percent(value: u8) -> Result<Self, String> {
        if value <= 100 {
            Ok(Self(value))
        } else {
            Err(format!("weight {value}% is above 100%"))
        }
    }

    /// The percentage.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Weight {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        Self::percent(value)
    }
}

impl From<Weight> for u8 {
    fn from(weight: Weight) -> u8 {
        weight.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// What an instance says of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerStatus {
    /// Serving and passing health checks.
    Up,
    /// Failing health checks.
    Down,
    /// Administratively draining.
    Drain,
    /// In maintenance.
    Maint,
    /// Any other status, as the instance reported it.
    Other(String),
}

/// One instance's view of one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// Which instance said this.
    pub instance: LbEndpoint,
    /// The server's status there.
    pub status: ServerStatus,
    /// Its current effective weight.
    pub weight: u32,
    /// Its configured (initial) weight.
    pub configured_weight: u32,
    /// Its current sessions.
    pub sessions: u64,
}

/// Takes servers out of rotation and puts them back on every instance of a [`Backend`].
///
/// Each mutating call applies to all instances. When an instance refuses or cannot be reached,
/// the adapter puts the instances it already changed back as they were and returns the error, so
/// a call either changed every instance or none.
#[async_trait]
pub trait LoadBalancer: Send + Sync + Debug {
    /// The name of the server `lookup` finds in `backend`, the same on every instance. An
    /// unknown backend or server is [`PortError::NotFound`]; nothing is changed.
    async fn resolve(&self, backend: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError>;

    /// Sets the server's administrative state on every instance.
    async fn set_state(
        &self,
        backend: &Backend,
        server: &ServerName,
        state: AdminState,
    ) -> Result<(), PortError>;

    /// Sets the server's weight, as a percentage of its configured weight, on every instance.
    async fn set_weight(
        &self,
        backend: &Backend,
        server: &ServerName,
        weight: Weight,
    ) -> Result<(), PortError>;

    /// Ends the server's established sessions on every instance.
    async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError>;

    /// What every instance says of the server.
    async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError>;

    /// Waits until the server has no sessions on any instance, for at most `timeout`
    /// ([`PortError::Timeout`] past it). The default polls [`status`](Self::status).
    async fn wait_drained(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        poll_until(self, backend, server, timeout, "drain", |states| states.iter().all(|s| s.sessions == 0))
            .await
    }

    /// Waits until every instance reports the server [`ServerStatus::Up`], for at most
    /// `timeout`. The default polls [`status`](Self::status).
    async fn wait_up(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        poll_until(self, backend, server, timeout, "wait for UP", |states| {
            states.iter().all(|s| s.status == ServerStatus::Up)
        })
        .await
    }
}

async fn poll_until<L: LoadBalancer + ?Sized>(
    lb: &L,
    backend: &Backend,
    server: &ServerName,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[InstanceState]) -> bool + Send,
) -> Result<(), PortError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let states = lb.status(backend, server).await?;
        if done(&states) {
            return Ok(());
        }
        if tokio::time::Instant::now() + DEFAULT_POLL_INTERVAL > deadline {
            return Err(PortError::timeout(format!("{what} of {}/{server}", backend.name), timeout));
        }
        tokio::time::sleep(DEFAULT_POLL_INTERVAL).await;
    }
}

/// Conveniences over any [`LoadBalancer`].
#[async_trait]
pub trait LoadBalancerExt: LoadBalancer {
    /// Sessions summed over every instance.
    async fn total_sessions(&self, backend: &Backend, server: &ServerName) -> Result<u64, PortError> {
        Ok(self.status(backend, server).await?.iter().map(|s| s.sessions).sum())
    }
}

impl<T: LoadBalancer + ?Sized> LoadBalancerExt for T {}

macro_rules! forward_load_balancer {
    ($($wrapper:ty),*) => {$(
        #[async_trait]
        impl<T: LoadBalancer + ?Sized> LoadBalancer for $wrapper {
            async fn resolve(&self, backend: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError> {
                (**self).resolve(backend, lookup).await
            }
            async fn set_state(&self, backend: &Backend, server: &ServerName, state: AdminState) -> Result<(), PortError> {
                (**self).set_state(backend, server, state).await
            }
            async fn set_weight(&self, backend: &Backend, server: &ServerName, weight: Weight) -> Result<(), PortError> {
                (**self).set_weight(backend, server, weight).await
            }
            async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
                (**self).shutdown_sessions(backend, server).await
            }
            async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError> {
                (**self).status(backend, server).await
            }
            async fn wait_drained(&self, backend: &Backend, server: &ServerName, timeout: Duration) -> Result<(), PortError> {
                (**self).wait_drained(backend, server, timeout).await
            }
            async fn wait_up(&self, backend: &Backend, server: &ServerName, timeout: Duration) -> Result<(), PortError> {
                (**self).wait_up(backend, server, timeout).await
            }
        }
    )*};
}

forward_load_balancer!(&T, Box<T>, Arc<T>);
