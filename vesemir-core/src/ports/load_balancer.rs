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
        /// IP address or DNS name the runtime API listens on.
        address: String,
        /// The runtime API's TCP port.
        port: u16,
    },
    /// A unix socket on this machine.
    Unix {
        /// The path of the runtime API's unix socket (HAProxy's `stats socket`).
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

/// A server's administrative state: the one Vesemir sets, and the one it reads (HAProxy's
/// `srv_admin_state` bits: any maintenance bit, forced, inherited from a tracked server, from
/// DNS resolution or from the configuration, is [`Maint`](AdminState::Maint); else any drain
/// bit is [`Drain`](AdminState::Drain); else [`Ready`](AdminState::Ready)).
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

    /// The weight as a percentage of the configured weight, 0 to 100.
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

/// What the health checks (or their absence) make of a server, apart from its
/// [`AdminState`]: HAProxy's `srv_op_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operational {
    /// Running (`srv_op_state` 2): passing its checks, or not checked.
    Up,
    /// Stopped (`srv_op_state` 0): failing its checks. HAProxy also stops a server while it is
    /// in maintenance.
    Down,
    /// Starting (`srv_op_state` 1): up, its weight still ramping up under `slowstart`.
    Starting,
    /// Stopping (`srv_op_state` 3, `NOLB` in `show stat`): up, but taking no new traffic (an
    /// agent's weight 0, or `disable-on-404`).
    Stopping,
}

impl fmt::Display for Operational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operational::Up => "up",
            Operational::Down => "down",
            Operational::Starting => "starting",
            Operational::Stopping => "stopping",
        })
    }
}

/// The most a weight can be, absolute: HAProxy's `set weight` accepts 0 to 256.
pub const MAX_WEIGHT: u32 = 256;

/// One instance's view of one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// Which instance said this.
    pub instance: LbEndpoint,
    /// The server's status there, as one word (kept for callers that read only this).
    pub status: ServerStatus,
    /// Its current effective weight, absolute (0 to [`MAX_WEIGHT`]).
    pub weight: u32,
    /// Its configured (initial) weight.
    pub configured_weight: u32,
    /// Sessions open on it there now (`scur`); draining waits for 0.
    pub sessions: u64,
    /// Its administrative state there.
    pub admin: AdminState,
    /// What its health checks make of it there.
    pub operational: Operational,
    /// The last health check's status as the instance words it (`L7OK`, `L4CON`, `L7STS`...);
    /// `None` when the server has no checks, or they are paused (in maintenance).
    #[serde(default)]
    pub check: Option<String>,
    /// The server's address on that instance (an IP address), to check that a server found by
    /// name is the host; `None` when the instance has none (an unresolved DNS name).
    #[serde(default)]
    pub address: Option<String>,
}

impl InstanceState {
    /// Whether the server takes new traffic on this instance: its admin state is
    /// [`AdminState::Ready`], it is [`Operational::Up`], and its effective weight is above 0.
    /// Anything else (drain, maintenance, down, starting, stopping, weight 0) is out of rotation.
    pub fn in_rotation(&self) -> bool {
        self.admin == AdminState::Ready && self.operational == Operational::Up && self.weight > 0
    }
}

impl fmt::Display for InstanceState {
    /// One line for people: `MAINT down, weight 100/100 on 127.0.0.1:9001`, with the last
    /// check's status when there is one (`READY down, weight 100/100, check L7STS on ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admin = self.admin.to_string().to_uppercase();
        write!(f, "{admin} {}, weight {}/{}", self.operational, self.weight, self.configured_weight)?;
        if let Some(check) = &self.check {
            write!(f, ", check {check}")?;
        }
        write!(f, " on {}", self.instance)
    }
}

/// One server of a backend, as every instance sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// The server's name.
    pub name: ServerName,
    /// Its state on each instance that has it, in the backend's order of instances. An instance
    /// that does not have the server is missing from this list (compare with the backend's
    /// instances, see [`ServerState::missing_on`]).
    pub instances: Vec<InstanceState>,
}

impl ServerState {
    /// One `ServerState` per server from readings `(server, its state on one instance)`, servers
    /// in the order first read, each server's instances in the order read (so read instance by
    /// instance, in the backend's order, they keep that order). Linear in the readings: an
    /// index by name, not a search of the servers found so far per reading.
    pub fn gather(readings: impl IntoIterator<Item = (ServerName, InstanceState)>) -> Vec<ServerState> {
        let mut found: Vec<ServerState> = Vec::new();
        let mut at: std::collections::HashMap<ServerName, usize> = std::collections::HashMap::new();
        for (name, state) in readings {
            match at.get(&name) {
                Some(&i) => found[i].instances.push(state),
                None => {
                    at.insert(name.clone(), found.len());
                    found.push(ServerState { name, instances: vec![state] });
                }
            }
        }
        found
    }

    /// Whether the server is in rotation ([`InstanceState::in_rotation`]) on every instance
    /// listed, and at least one is listed. It says nothing of instances that lack the server.
    pub fn in_rotation(&self) -> bool {
        !self.instances.is_empty() && self.instances.iter().all(InstanceState::in_rotation)
    }

    /// Whether every instance listed has the server in the same admin state at the same
    /// effective weight (vacuously true for one or no instance).
    pub fn agrees(&self) -> bool {
        self.instances.windows(2).all(|w| w[0].admin == w[1].admin && w[0].weight == w[1].weight)
    }

    /// Whether the server is in rotation on every instance listed ([`in_rotation`]) and the
    /// same there ([`agrees`]): the one rule for "a server someone else has not taken out".
    ///
    /// [`in_rotation`]: ServerState::in_rotation
    /// [`agrees`]: ServerState::agrees
    pub fn is_fully_in_rotation(&self) -> bool {
        self.in_rotation() && self.agrees()
    }

    /// Its state on each instance, for people: each instance's line (see [`InstanceState`]'s
    /// `Display`) joined by `; `.
    pub fn describe(&self) -> String {
        if self.instances.is_empty() {
            return "on no load balancer".to_owned();
        }
        self.instances.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }

    /// The instances of `backend` that do not have this server.
    pub fn missing_on<'a>(&self, backend: &'a Backend) -> Vec<&'a LbEndpoint> {
        backend.instances.iter().filter(|i| !self.instances.iter().any(|s| &s.instance == *i)).collect()
    }
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

    /// What every instance says of the server, in the backend's order of instances.
    async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError>;

    /// Every server of the backend, as every instance sees it: the real state to respect before
    /// acting. Asks each instance once for the whole backend, not once per server. A server
    /// that some instances lack is in the answer with only the instances that have it
    /// ([`ServerState::missing_on`] names the others). Servers come in the first instance's
    /// order, then those only later instances have. An unknown backend is
    /// [`PortError::NotFound`]; an instance that cannot be reached fails the whole call.
    async fn servers(&self, backend: &Backend) -> Result<Vec<ServerState>, PortError>;

    /// Puts the server back, on each instance listed in `to` (each one of the backend's
    /// instances, each at most once), to the admin state and the absolute effective weight
    /// recorded there (typically from [`status`](Self::status) or [`servers`](Self::servers)
    /// before a change). Instances not listed are left alone, so a state that differed from box
    /// to box is restored box by box. Sessions, status and check in `to` are ignored.
    ///
    /// A weight above [`MAX_WEIGHT`], or an instance that is not the backend's, is
    /// [`PortError::Rejected`] before anything changes. Like the other changes it is
    /// all-or-nothing: when one instance refuses, the instances already changed are put back.
    async fn restore(
        &self,
        backend: &Backend,
        server: &ServerName,
        to: &[InstanceState],
    ) -> Result<(), PortError>;

    /// Marks the server DOWN on every instance without stopping its health checks, so that
    /// it stays out of rotation until checks made from now on pass (HAProxy: `set server
    /// <b>/<s> health down`, whose health then needs `rise` passing checks, and `rise + fall
    /// - 1` to read plain `UP` again). An instance whose own checks already took the server
    /// DOWN after it was drained and waited for (so during the changeset) may be left as it
    /// is: only checks made after that DOWN bring it back, which proves the same thing sooner.
    /// For the rollout's `checks_while_out`; the default refuses, so a load balancer without
    /// it is never silently trusted.
    async fn mark_down(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        Err(PortError::rejected(
            format!("backend {}/{server}", backend.name),
            "this load balancer cannot mark a server DOWN while its checks run: turn checks_while_out off",
        ))
    }

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
    let deadline = crate::time::deadline(tokio::time::Instant::now().into_std(), timeout);
    loop {
        let states = lb.status(backend, server).await?;
        if done(&states) {
            return Ok(());
        }
        let now = tokio::time::Instant::now().into_std();
        if crate::time::deadline(now, DEFAULT_POLL_INTERVAL) > deadline {
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
            async fn mark_down(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
                (**self).mark_down(backend, server).await
            }
            async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError> {
                (**self).status(backend, server).await
            }
            async fn servers(&self, backend: &Backend) -> Result<Vec<ServerState>, PortError> {
                (**self).servers(backend).await
            }
            async fn restore(&self, backend: &Backend, server: &ServerName, to: &[InstanceState]) -> Result<(), PortError> {
                (**self).restore(backend, server, to).await
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

/// Checks what [`LoadBalancer::restore`] is asked before anything changes: every instance is
/// one of the backend's, listed once, and every weight is at most [`MAX_WEIGHT`]. Adapters call
/// it first, so they all refuse the same requests the same way.
pub fn check_restore(backend: &Backend, server: &ServerName, to: &[InstanceState]) -> Result<(), PortError> {
    let target = format!("restore of {}/{server}", backend.name);
    for (i, state) in to.iter().enumerate() {
        if !backend.instances.contains(&state.instance) {
            return Err(PortError::rejected(
                target,
                format!("{} is not an instance of backend {}", state.instance, backend.name),
            ));
        }
        if to[..i].iter().any(|s| s.instance == state.instance) {
            return Err(PortError::rejected(target, format!("{} is listed twice", state.instance)));
        }
        if state.weight > MAX_WEIGHT {
            return Err(PortError::rejected(
                target,
                format!(
                    "weight {} on {} is above {MAX_WEIGHT}, the most HAProxy accepts",
                    state.weight, state.instance
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(port: u16, admin: AdminState, operational: Operational, weight: u32) -> InstanceState {
        InstanceState {
            instance: LbEndpoint::Tcp { address: "127.0.0.1".into(), port },
            status: ServerStatus::Up,
            weight,
            configured_weight: 100,
            sessions: 0,
            admin,
            operational,
            check: Some("L7OK".into()),
            address: Some("10.0.0.1".into()),
        }
    }

    fn server(instances: Vec<InstanceState>) -> ServerState {
        ServerState { name: ServerName::new("web-01").unwrap_or_else(|e| panic!("{e}")), instances }
    }

    #[test]
    fn in_rotation_needs_ready_up_and_a_weight() {
        use AdminState::*;
        use Operational::*;
        assert!(state(1, Ready, Up, 1).in_rotation());
        for (admin, op, weight) in [
            (Drain, Up, 100),
            (Maint, Up, 100),
            (Ready, Down, 100),
            (Ready, Starting, 100),
            (Ready, Stopping, 100),
            (Ready, Up, 0),
        ] {
            assert!(!state(1, admin, op, weight).in_rotation(), "{admin} {op} {weight}");
        }
    }

    #[test]
    fn a_server_is_in_rotation_and_agrees_only_if_every_instance_does() {
        use AdminState::*;
        use Operational::*;
        let both = server(vec![state(1, Ready, Up, 37), state(2, Ready, Up, 37)]);
        assert!(both.in_rotation() && both.agrees());
        let one_down = server(vec![state(1, Ready, Up, 37), state(2, Ready, Down, 37)]);
        assert!(!one_down.in_rotation() && one_down.agrees(), "the operational state is not agreement");
        let one_maint = server(vec![state(1, Ready, Up, 37), state(2, Maint, Down, 37)]);
        assert!(!one_maint.in_rotation() && !one_maint.agrees());
        let weights = server(vec![state(1, Ready, Up, 37), state(2, Ready, Up, 38)]);
        assert!(weights.in_rotation() && !weights.agrees());
        assert!(!server(vec![]).in_rotation(), "a server seen nowhere is not in rotation");
        let backend = Backend {
            name: BackendName::new("be").unwrap_or_else(|e| panic!("{e}")),
            instances: vec![state(1, Ready, Up, 1).instance, state(2, Ready, Up, 1).instance],
        };
        assert_eq!(server(vec![state(2, Ready, Up, 1)]).missing_on(&backend), [&backend.instances[0]]);
    }

    #[test]
    fn restore_requests_are_checked_before_anything_changes() {
        use AdminState::*;
        use Operational::*;
        let backend = Backend {
            name: BackendName::new("be").unwrap_or_else(|e| panic!("{e}")),
            instances: vec![state(1, Ready, Up, 1).instance, state(2, Ready, Up, 1).instance],
        };
        let name = ServerName::new("web-01").unwrap_or_else(|e| panic!("{e}"));
        assert!(check_restore(&backend, &name, &[state(1, Drain, Up, 256), state(2, Maint, Down, 0)]).is_ok());
        assert!(check_restore(&backend, &name, &[]).is_ok());
        for bad in [
            vec![state(1, Ready, Up, 257)],
            vec![state(3, Ready, Up, 1)],
            vec![state(1, Ready, Up, 1), state(1, Drain, Up, 1)],
        ] {
            let outcome = check_restore(&backend, &name, &bad);
            assert!(matches!(outcome, Err(PortError::Rejected { .. })), "{bad:?}: {outcome:?}");
        }
    }
}
