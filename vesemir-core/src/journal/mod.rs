//! The write-ahead journal of a local deployment: what a deployer writes down BEFORE each load
//! balancer change, so that no server it took out is ever forgotten, whatever ends the process.
//!
//! A run's journal is a sequence of [`JournalEntry`]: one [`Started`](JournalEntry::Started)
//! header, then an [`Intent`] before every change of a server (with the server's original state
//! on every instance, read before its first change), a [`Done`] when a host ends, [`Recovered`]
//! when `recover` put a server back, and [`Finished`] when the run ended. [`replay`] folds the
//! entries into what is left to put back ([`Unfinished`]). Where entries are kept is the front
//! end's business: it implements [`JournalWriter`] (the CLI: an fsync'd JSON-lines file), and
//! this module stays pure.
//!
//! [`JournaledLoadBalancer`] makes the rule mechanical: it wraps any [`LoadBalancer`](crate::ports::LoadBalancer) and journals
//! every change before making it. [`JournalSink`] turns a rollout's events into [`Done`] and
//! [`Finished`] entries. [`recover_server`] puts one server back, health gate first.

mod load_balancer;
mod recover;
pub mod takeover;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::{DeploymentOutcome, HostOutcome, Rotation};
use crate::name::{AppName, EnvironmentName, HostName, ServerName, Version};
use crate::ports::{AdminState, Backend, InstanceState, Weight};

pub use load_balancer::{JournalSink, JournaledLoadBalancer};
pub use recover::{health_check, recover_server, HealthCheck, RecoveryConfig, RecoveryOutcome};

/// A run's identity: a journal's name. Letters, digits, `-`, `_` and `.`, starting with a letter
/// or digit, at most 64 characters, so it is safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// Parses a run id, refusing anything that is not safe as a file name.
    pub fn new(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        let first_ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if first_ok && rest_ok && value.len() <= 64 {
            Ok(Self(value))
        } else {
            Err(format!(
                "{value:?} is not a run id: letters, digits, '-', '_' and '.', starting with a letter or digit, at most 64"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RunId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One host of the run's plan and its server, so a journal alone says where each server's host is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHost {
    /// The host.
    pub name: HostName,
    /// The address SSH reaches it at (for the health command when recovering).
    pub address: String,
    /// Its server in the backend.
    pub server: ServerName,
}

/// The first entry of a run: what is deployed where, by whom, since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// The run.
    pub run: RunId,
    /// The application deployed.
    pub application: AppName,
    /// The environment deployed to.
    pub environment: EnvironmentName,
    /// The version deployed.
    pub version: Version,
    /// The backend and every load balancer instance fronting it.
    pub backend: Backend,
    /// The plan's hosts and their servers.
    pub hosts: Vec<JournalHost>,
    /// The request as written (its wire form, JSON), to rebuild the health gate when recovering.
    pub request: serde_json::Value,
    /// Who ran it (the request's `requested_by`, and where from when the front end knows).
    pub requested_by: String,
    /// When it started (the front end's clock).
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
}

impl JournalHeader {
    /// The header of run `run` of `prepared`: its target, backend and plan's hosts, with the
    /// request's wire form (`request`) and when it started (the front end's clock).
    pub fn of_prepared(
        run: RunId,
        prepared: &crate::driver::Prepared,
        request: serde_json::Value,
        started_at: SystemTime,
    ) -> Self {
        let r = &prepared.request;
        Self {
            run,
            application: r.application.clone(),
            environment: r.environment.clone(),
            version: r.version.clone(),
            backend: prepared.backend.clone(),
            hosts: prepared
                .plan
                .hosts
                .iter()
                .map(|h| JournalHost {
                    name: h.host.name.clone(),
                    address: h.host.address.clone(),
                    server: h.server.clone(),
                })
                .collect(),
            request,
            requested_by: r.requested_by.to_string(),
            started_at,
        }
    }

    /// The plan's host whose server is `server`.
    pub fn host_of(&self, server: &ServerName) -> Option<&JournalHost> {
        self.hosts.iter().find(|h| &h.server == server)
    }
}

/// A load balancer change, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// `set_state`: drain, maintenance or ready.
    State {
        /// The admin state set.
        state: AdminState,
    },
    /// `set_weight`, a percentage of the configured weight.
    Weight {
        /// The weight set.
        weight: Weight,
    },
    /// `shutdown_sessions`.
    ShutdownSessions,
    /// `restore` to recorded states.
    Restore {
        /// The states restored, per instance.
        to: Vec<InstanceState>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::State { state } => write!(f, "set {state}"),
            Change::Weight { weight } => write!(f, "set weight {weight}"),
            Change::ShutdownSessions => f.write_str("shut down sessions"),
            Change::Restore { to } => write!(f, "restore ({})", describe_states(to)),
        }
    }
}

/// Written before a change of a server: the change, and the server's state on every instance as
/// it was before the run's first change of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The server's host.
    pub host: HostName,
    /// The server.
    pub server: ServerName,
    /// What is about to be done.
    pub change: Change,
    /// The server's original state on every instance.
    pub original: Vec<InstanceState>,
}

/// Written when a host ended, in rotation or deliberately left out (and reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The host.
    pub host: HostName,
    /// Its server.
    pub server: ServerName,
    /// How it ended.
    pub outcome: HostOutcome,
    /// Whether it is in rotation now.
    pub rotation: Rotation,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Written when `recover` put a server back to its original state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// The host.
    pub host: HostName,
    /// Its server.
    pub server: ServerName,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Finished {
    /// The deployment ran to its end (hosts it left out are still listed by [`replay`]).
    Deployment {
        /// How it ended.
        outcome: DeploymentOutcome,
    },
    /// `recover` put back every server the run had left out: nothing is left.
    Recovery,
}

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum JournalEntry {
    /// The run's header, first.
    Started(JournalHeader),
    /// A change is about to be made.
    Intent(Intent),
    /// A host ended.
    Done(Done),
    /// A server was put back by `recover`.
    Recovered(Recovered),
    /// The run ended.
    Finished(Finished),
}

/// Why a journal could not be written (or read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal {journal}: {reason}")]
pub struct JournalError {
    /// Which journal (a file's path, a run id).
    pub journal: String,
    /// What went wrong.
    pub reason: String,
}

/// Keeps a run's entries. Synchronous: `append` returns only once the entry is durable (written
/// and flushed to stable storage), because a load balancer change follows it at once.
pub trait JournalWriter: Send + Sync + fmt::Debug {
    /// Appends one entry durably.
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError>;
}

impl<T: JournalWriter + ?Sized> JournalWriter for Arc<T> {
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        (**self).append(entry)
    }
}

impl<T: JournalWriter + ?Sized> JournalWriter for &T {
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        (**self).append(entry)
    }
}

/// Keeps entries in memory (tests; embedders that journal elsewhere), optionally failing.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: std::sync::Mutex<Vec<JournalEntry>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries so far.
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Makes every later append fail (`true`), like a full disk, or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

impl JournalWriter for MemoryJournal {
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JournalError { journal: "memory".into(), reason: "no space left on device".into() });
        }
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry.clone());
        Ok(())
    }
}

/// Why a server is still to be put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Pending {
    /// A change was intended and the host never ended: the process died mid-flight.
    Interrupted,
    /// The host ended out of rotation (or in an unknown state) and was reported.
    LeftOut {
        /// How the host ended.
        outcome: HostOutcome,
        /// Its rotation then.
        rotation: Rotation,
        /// Why it failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// A server a journal says is still to be put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingServer {
    /// Its host.
    pub host: HostName,
    /// The server.
    pub server: ServerName,
    /// Its state on every instance before the run first changed it: what to put back.
    pub original: Vec<InstanceState>,
    /// The last change intended on it.
    pub last_change: Change,
    /// Why it is pending.
    #[serde(flatten)]
    pub pending: Pending,
}

impl PendingServer {
    /// Whether the server took traffic on some instance before the run: putting it back puts
    /// it into rotation, so it must pass the health gate first.
    pub fn originally_in_rotation(&self) -> bool {
        self.original.iter().any(InstanceState::in_rotation)
    }
}

/// What a journal left unfinished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unfinished {
    /// The run's header, when the journal has one.
    pub header: Option<JournalHeader>,
    /// How the run ended, when it did (`None`: the process died, or still runs).
    pub finished: Option<Finished>,
    /// The servers to put back, in the order the run first changed them.
    pub servers: Vec<PendingServer>,
}

impl Unfinished {
    /// Whether nothing is left to put back.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// Folds a journal's entries (in the order written) into what it left unfinished: every server
/// with an [`Intent`] and no later [`Done`] in rotation or [`Recovered`], with its original state
/// (from the first intent) and its last intended change. A [`Done`] out of rotation leaves the
/// server listed as [`Pending::LeftOut`]; an intent after it lists it as interrupted again.
pub fn replay(entries: impl IntoIterator<Item = JournalEntry>) -> Unfinished {
    let mut header = None;
    let mut finished = None;
    let mut servers: Vec<Option<PendingServer>> = Vec::new();
    let mut index: HashMap<ServerName, usize> = HashMap::new();
    // Originals outlive a server's close: a later intent (a second pass) keeps the first.
    let mut originals: HashMap<ServerName, Vec<InstanceState>> = HashMap::new();
    for entry in entries {
        match entry {
            // A later header (a run resumed by another server instance after a takeover) keeps
            // the hosts of the earlier ones: servers they left out are still found by host.
            JournalEntry::Started(mut h) => {
                if let Some(before) = header.take() {
                    let JournalHeader { hosts: earlier, .. } = before;
                    let later: Vec<JournalHost> = std::mem::take(&mut h.hosts);
                    h.hosts =
                        earlier.into_iter().filter(|e| !later.iter().any(|l| l.server == e.server)).collect();
                    h.hosts.extend(later);
                }
                header = Some(h);
            }
            JournalEntry::Intent(intent) => {
                let original = originals.entry(intent.server.clone()).or_insert(intent.original).clone();
                let pending = PendingServer {
                    host: intent.host,
                    server: intent.server.clone(),
                    original,
                    last_change: intent.change,
                    pending: Pending::Interrupted,
                };
                match index.get(&intent.server) {
                    Some(&i) => servers[i] = Some(pending),
                    None => {
                        index.insert(intent.server, servers.len());
                        servers.push(Some(pending));
                    }
                }
            }
            JournalEntry::Done(done) => {
                let Some(slot) = index.get(&done.server).and_then(|&i| servers.get_mut(i)) else {
                    continue;
                };
                if done.rotation == Rotation::InRotation {
                    *slot = None;
                } else if let Some(server) = slot {
                    server.pending = Pending::LeftOut {
                        outcome: done.outcome,
                        rotation: done.rotation,
                        error: done.error,
                    };
                }
            }
            JournalEntry::Recovered(recovered) => {
                if let Some(slot) = index.get(&recovered.server).and_then(|&i| servers.get_mut(i)) {
                    *slot = None;
                }
            }
            JournalEntry::Finished(end) => finished = Some(end),
        }
    }
    Unfinished { header, finished, servers: servers.into_iter().flatten().collect() }
}

/// A server's states on every instance in a few words:
/// `ready weight 37 (up) on 127.0.0.1:9001, maint weight 0 (down) on 127.0.0.1:9002`.
pub fn describe_states(states: &[InstanceState]) -> String {
    if states.is_empty() {
        return "no instance".to_owned();
    }
    states
        .iter()
        .map(|s| format!("{} weight {} ({}) on {}", s.admin, s.weight, s.operational, s.instance))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
