//! The fleet as it really is, checked before anything changes: which target servers are not in
//! rotation (and what the request says to do with them), whether a server found by name is the
//! host (same address), and how much of the out-of-rotation budget the backend leaves. Pure:
//! [`prepare`](crate::prepare) reads the load balancer once and hands the answer here.

use std::fmt;
use std::net::IpAddr;

use crate::name::{HostName, ServerName};
use crate::plan::{Plan, PlannedHost};
use crate::ports::ServerState;
use crate::request::NotInRotationPolicy;

/// A target server that is not in rotation (or not the same on every box) before the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotInRotation {
    /// The host behind it.
    pub host: HostName,
    /// The server, with its state on every box.
    pub server: ServerState,
}

impl fmt::Display for NotInRotation {
    /// One line: `web-05 (host web-05): MAINT down, weight 100/100 on 127.0.0.1:9001; MAINT ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (host {}): {}", self.server.name, self.host, self.server.describe())
    }
}

/// A server found by name whose address on a box is not the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressMismatch {
    /// The host.
    pub host: HostName,
    /// The host's address.
    pub host_address: String,
    /// The server found by the host's name.
    pub server: ServerName,
    /// The box that says so.
    pub instance: String,
    /// The server's address there.
    pub server_address: String,
}

impl fmt::Display for AddressMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {} has address {}, but its server {} has address {} on {}: is it the right server? fix the server name template or the inventory",
            self.host, self.host_address, self.server, self.server_address, self.instance
        )
    }
}

/// Why the real state forbids the deployment. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRefusal {
    /// Target servers not in rotation, with `servers_not_in_rotation = "refuse"`.
    NotInRotation(Vec<NotInRotation>),
    /// A server found by name is not the host.
    AddressMismatch(Vec<AddressMismatch>),
    /// The server of a host the lookup found is missing from the backend's listing.
    Missing {
        /// The host.
        host: HostName,
        /// Its server.
        server: ServerName,
    },
}

/// The hosts with their servers' original states, and what is worth a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The hosts, each with [`PlannedHost::original`] filled in and [`PlannedHost::skip`] set
    /// by the policy.
    pub hosts: Vec<PlannedHost>,
    /// Things that stop nothing (an address that could not be compared).
    pub warnings: Vec<String>,
}

/// Gives each host its server's state from `servers` (one [`LoadBalancer::servers`] answer),
/// checks that a server found by name has the host's address on every box (when
/// `by_name`; addresses are compared only when both are IP addresses, else a warning), and
/// applies `policy` to the servers not in rotation
/// ([`ServerState::is_fully_in_rotation`]): refuse them all at once, skip them, or include them.
///
/// [`LoadBalancer::servers`]: crate::ports::LoadBalancer::servers
pub fn check_servers(
    hosts: Vec<PlannedHost>,
    servers: &[ServerState],
    policy: NotInRotationPolicy,
    by_name: bool,
) -> Result<Checked, StateRefusal> {
    let mut checked = Checked { hosts: Vec::with_capacity(hosts.len()), warnings: Vec::new() };
    let mut not_in_rotation = Vec::new();
    let mut mismatches = Vec::new();
    for mut planned in hosts {
        let Some(state) = servers.iter().find(|s| s.name == planned.server) else {
            return Err(StateRefusal::Missing { host: planned.host.name, server: planned.server });
        };
        if by_name {
            compare_addresses(&planned, state, &mut mismatches, &mut checked.warnings);
        }
        planned.original = state.instances.clone();
        if !state.is_fully_in_rotation() {
            match policy {
                NotInRotationPolicy::Refuse => not_in_rotation
                    .push(NotInRotation { host: planned.host.name.clone(), server: state.clone() }),
                NotInRotationPolicy::Skip => planned.skip = true,
                NotInRotationPolicy::Include => {}
            }
        }
        checked.hosts.push(planned);
    }
    if !mismatches.is_empty() {
        return Err(StateRefusal::AddressMismatch(mismatches));
    }
    if !not_in_rotation.is_empty() {
        return Err(StateRefusal::NotInRotation(not_in_rotation));
    }
    Ok(checked)
}

fn compare_addresses(
    planned: &PlannedHost,
    state: &ServerState,
    mismatches: &mut Vec<AddressMismatch>,
    warnings: &mut Vec<String>,
) {
    let host_ip = planned.host.address.parse::<IpAddr>().ok();
    for seen in &state.instances {
        let Some(address) = &seen.address else {
            warnings.push(format!(
                "server {} of host {} has no address on {}: cannot check it is the host",
                planned.server, planned.host.name, seen.instance
            ));
            continue;
        };
        match (host_ip, address.parse::<IpAddr>().ok()) {
            (Some(a), Some(b)) if a != b => mismatches.push(AddressMismatch {
                host: planned.host.name.clone(),
                host_address: planned.host.address.clone(),
                server: planned.server.clone(),
                instance: seen.instance.to_string(),
                server_address: address.clone(),
            }),
            (Some(_), Some(_)) => {}
            _ if address == &planned.host.address => {}
            _ => warnings.push(format!(
                "host {} has address {} and its server {} has address {} on {}: not both IP addresses, so not compared",
                planned.host.name, planned.host.address, planned.server, address, seen.instance
            )),
        }
    }
}

/// The out-of-rotation budget on the real backend: at no moment more than `concurrency`
/// servers of the backend out of rotation, counting those already out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The plan's concurrency: servers of the backend out of rotation at once, at most.
    pub concurrency: usize,
    /// Servers of the backend out of rotation before anything changed (targets skipped or
    /// included, and servers of other hosts).
    pub already_out: Vec<ServerState>,
}

impl Budget {
    /// The backend's servers out of rotation now, from one [`LoadBalancer::servers`] answer.
    ///
    /// [`LoadBalancer::servers`]: crate::ports::LoadBalancer::servers
    pub fn new(concurrency: usize, servers: &[ServerState]) -> Self {
        let already_out = servers.iter().filter(|s| !s.in_rotation()).cloned().collect();
        Self { concurrency, already_out }
    }

    /// How many more servers may leave rotation: `concurrency` less those already out.
    pub fn effective(&self) -> usize {
        self.concurrency.saturating_sub(self.already_out.len())
    }

    /// Whether the plan can run at all: refused when a host in rotation must leave it and the
    /// servers already out leave no room. (Hosts already out add nothing while deployed.)
    pub fn allows(&self, plan: &Plan) -> bool {
        let takes_one_out = plan.hosts.iter().any(|h| !h.skip && h.original_state().in_rotation());
        !takes_one_out || self.effective() > 0
    }
}

impl fmt::Display for Budget {
    /// `concurrency 2, 1 already out (web-07): 1 more may leave rotation`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "concurrency {}, {} already out", self.concurrency, self.already_out.len())?;
        if !self.already_out.is_empty() {
            let names: Vec<&str> = self.already_out.iter().map(|s| s.name.as_str()).collect();
            write!(f, " ({})", names.join(", "))?;
        }
        write!(f, ": {} more may leave rotation at once", self.effective())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use crate::ports::{AdminState, InstanceState, LbEndpoint, Operational, ServerStatus};

    fn state(port: u16, admin: AdminState, weight: u32, address: &str) -> InstanceState {
        InstanceState {
            instance: LbEndpoint::Tcp { address: "127.0.0.1".into(), port },
            status: ServerStatus::Up,
            weight,
            configured_weight: 100,
            sessions: 0,
            admin,
            operational: if admin == AdminState::Maint { Operational::Down } else { Operational::Up },
            check: None,
            address: Some(address.into()),
        }
    }

    fn server(name: &str, admin: AdminState, address: &str) -> ServerState {
        ServerState {
            name: ServerName::new(name).expect("valid"),
            instances: vec![state(9001, admin, 100, address), state(9002, admin, 100, address)],
        }
    }

    fn planned(name: &str, address: &str) -> PlannedHost {
        PlannedHost::new(
            Host::new(HostName::new(name).expect("valid"), address).expect("valid"),
            ServerName::new(name).expect("valid"),
        )
    }

    #[test]
    fn each_policy_treats_servers_not_in_rotation_its_way() {
        let servers =
            [server("a", AdminState::Ready, "10.0.0.1"), server("b", AdminState::Maint, "10.0.0.2")];
        let hosts = || vec![planned("a", "10.0.0.1"), planned("b", "10.0.0.2")];
        let refused = check_servers(hosts(), &servers, NotInRotationPolicy::Refuse, true);
        let Err(StateRefusal::NotInRotation(list)) = refused else { panic!("refused: {refused:?}") };
        assert_eq!(
            list.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["b (host b): MAINT down, weight 100/100 on 127.0.0.1:9001; MAINT down, weight 100/100 on 127.0.0.1:9002"]
        );
        let skipped = check_servers(hosts(), &servers, NotInRotationPolicy::Skip, true).expect("skips");
        assert_eq!(skipped.hosts.iter().map(|h| h.skip).collect::<Vec<_>>(), [false, true]);
        let included =
            check_servers(hosts(), &servers, NotInRotationPolicy::Include, true).expect("includes");
        assert!(included.hosts.iter().all(|h| !h.skip && h.original.len() == 2));
    }

    #[test]
    fn a_server_found_by_name_must_have_the_hosts_address() {
        let servers = [server("a", AdminState::Ready, "10.0.0.9")];
        let refused =
            check_servers(vec![planned("a", "10.0.0.1")], &servers, NotInRotationPolicy::Refuse, true);
        let Err(StateRefusal::AddressMismatch(list)) = refused else { panic!("{refused:?}") };
        assert!(list[0]
            .to_string()
            .contains("host a has address 10.0.0.1, but its server a has address 10.0.0.9"));
        let by_address =
            check_servers(vec![planned("a", "10.0.0.1")], &servers, NotInRotationPolicy::Refuse, false);
        assert!(by_address.is_ok(), "not compared when found by address");
        let named =
            check_servers(vec![planned("a", "a.example.com")], &servers, NotInRotationPolicy::Refuse, true)
                .expect("a DNS name is not compared");
        assert_eq!(named.warnings.len(), 2, "{:?}", named.warnings);
    }

    #[test]
    fn the_budget_counts_servers_already_out() {
        let servers =
            [server("a", AdminState::Ready, "10.0.0.1"), server("x", AdminState::Drain, "10.0.0.3")];
        let budget = Budget::new(2, &servers);
        assert_eq!(budget.effective(), 1);
        assert_eq!(budget.to_string(), "concurrency 2, 1 already out (x): 1 more may leave rotation at once");
        assert_eq!(Budget::new(1, &servers).effective(), 0);
    }
}
