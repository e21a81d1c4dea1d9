//! The journaling decorator of the `LoadBalancer` port, and the event sink that records how
//! hosts and the run ended.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{Change, Done, Finished, Intent, JournalEntry, JournalError, JournalHeader, JournalWriter};
use crate::error::PortError;
use crate::event::{Event, EventKind, EventSink};
use crate::name::{HostName, ServerName};
use crate::ports::{AdminState, Backend, InstanceState, LoadBalancer, ServerLookup, ServerState, Weight};

type OriginalSlot = Arc<tokio::sync::Mutex<Option<Vec<InstanceState>>>>;

/// A [`LoadBalancer`] that writes an [`Intent`] to its journal before every change, and makes the
/// change only once the journal has it.
///
/// Before the first change of a server it reads the server's state on every instance
/// ([`LoadBalancer::status`]) and keeps it as the server's original, carried by every intent of
/// that server. When that read or the append fails, the call fails and the inner load balancer
/// is not touched. Reads pass through. Changes of one server are made one at a time, in the
/// order they were journaled. The journal's append is synchronous (it flushes to disk): it holds
/// the calling task for that long.
pub struct JournaledLoadBalancer<L, W> {
    inner: L,
    writer: W,
    hosts: HashMap<ServerName, HostName>,
    originals: Mutex<HashMap<ServerName, OriginalSlot>>,
}

impl<L: fmt::Debug, W: fmt::Debug> fmt::Debug for JournaledLoadBalancer<L, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournaledLoadBalancer")
            .field("inner", &self.inner)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl<L: LoadBalancer, W: JournalWriter> JournaledLoadBalancer<L, W> {
    /// Starts a run's journal: appends `header` ([`JournalEntry::Started`]) and returns the
    /// decorator, which changes only the servers of the header's plan (any other server is
    /// refused, unchanged: a change that cannot name its host is not journaled blind).
    pub fn start(inner: L, writer: W, header: &JournalHeader) -> Result<Self, JournalError> {
        writer.append(&JournalEntry::Started(header.clone()))?;
        let hosts = header.hosts.iter().map(|h| (h.server.clone(), h.name.clone())).collect();
        Ok(Self { inner, writer, hosts, originals: Mutex::new(HashMap::new()) })
    }

    /// The wrapped load balancer.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Journals `change` of `server`, then runs `call` (the inner change).
    async fn journaled<'a, F>(
        &'a self,
        backend: &'a Backend,
        server: &'a ServerName,
        change: Change,
        call: impl FnOnce() -> F + Send,
    ) -> Result<(), PortError>
    where
        F: std::future::Future<Output = Result<(), PortError>> + Send + 'a,
    {
        let Some(host) = self.hosts.get(server) else {
            return Err(PortError::rejected(
                format!("journal of {}/{server}", backend.name),
                format!("server {server} is not in this run's plan: refusing to change it unjournaled"),
            ));
        };
        let slot = {
            let mut originals = self.originals.lock().unwrap_or_else(PoisonError::into_inner);
            originals.entry(server.clone()).or_default().clone()
        };
        let mut original = slot.lock().await;
        let states = match &*original {
            Some(states) => states.clone(),
            None => {
                let states = self.inner.status(backend, server).await?;
                *original = Some(states.clone());
                states
            }
        };
        let intent = Intent { host: host.clone(), server: server.clone(), change, original: states };
        self.writer.append(&JournalEntry::Intent(intent)).map_err(|e| PortError::Adapter {
            adapter: "journal",
            source: format!("the journal could not be written, so nothing was changed: {e}").into(),
        })?;
        call().await
    }
}

#[async_trait]
impl<L: LoadBalancer, W: JournalWriter> LoadBalancer for JournaledLoadBalancer<L, W> {
    async fn resolve(&self, backend: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError> {
        self.inner.resolve(backend, lookup).await
    }

    async fn set_state(
        &self,
        backend: &Backend,
        server: &ServerName,
        state: AdminState,
    ) -> Result<(), PortError> {
        self.journaled(backend, server, Change::State { state }, || {
            self.inner.set_state(backend, server, state)
        })
        .await
    }

    async fn set_weight(
        &self,
        backend: &Backend,
        server: &ServerName,
        weight: Weight,
    ) -> Result<(), PortError> {
        self.journaled(backend, server, Change::Weight { weight }, || {
            self.inner.set_weight(backend, server, weight)
        })
        .await
    }

    async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        self.journaled(backend, server, Change::ShutdownSessions, || {
            self.inner.shutdown_sessions(backend, server)
        })
        .await
    }

    /// Not journaled: it changes no admin state or weight to put back, and a server marked
    /// DOWN comes back by its own checks.
    async fn mark_down(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        self.inner.mark_down(backend, server).await
    }

    async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError> {
        self.inner.status(backend, server).await
    }

    async fn servers(&self, backend: &Backend) -> Result<Vec<ServerState>, PortError> {
        self.inner.servers(backend).await
    }

    async fn restore(
        &self,
        backend: &Backend,
        server: &ServerName,
        to: &[InstanceState],
    ) -> Result<(), PortError> {
        let change = Change::Restore { to: to.to_vec() };
        self.journaled(backend, server, change, || self.inner.restore(backend, server, to)).await
    }

    async fn wait_drained(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.inner.wait_drained(backend, server, timeout).await
    }

    async fn wait_up(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.inner.wait_up(backend, server, timeout).await
    }
}

/// An [`EventSink`] that journals how each host ended ([`Done`], from
/// [`EventKind::HostFinished`]) and how the run ended ([`Finished`], from
/// [`EventKind::DeploymentFinished`]). A failed append cannot stop an event: it is kept and
/// logged, and the servers concerned stay listed by `replay` (the safe side).
#[derive(Debug)]
pub struct JournalSink<W> {
    writer: W,
    servers: HashMap<HostName, ServerName>,
    error: Mutex<Option<JournalError>>,
}

impl<W: JournalWriter> JournalSink<W> {
    /// A sink for the run of `header`.
    pub fn new(writer: W, header: &JournalHeader) -> Self {
        let servers = header.hosts.iter().map(|h| (h.name.clone(), h.server.clone())).collect();
        Self { writer, servers, error: Mutex::new(None) }
    }

    /// The first append that failed, if one did.
    pub fn error(&self) -> Option<JournalError> {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn append(&self, entry: &JournalEntry) {
        if let Err(e) = self.writer.append(entry) {
            tracing::warn!(error = %e, "could not journal how a host or the run ended");
            self.error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        }
    }
}

impl<W: JournalWriter> EventSink for JournalSink<W> {
    fn emit(&self, event: &Event) {
        match &event.kind {
            EventKind::HostFinished { host, outcome, error, rotation, .. } => {
                let Some(server) = self.servers.get(host) else { return };
                self.append(&JournalEntry::Done(Done {
                    host: host.clone(),
                    server: server.clone(),
                    outcome: *outcome,
                    rotation: *rotation,
                    error: error.clone(),
                }));
            }
            EventKind::DeploymentFinished { outcome, .. } => {
                self.append(&JournalEntry::Finished(Finished::Deployment { outcome: *outcome }));
            }
            _ => {}
        }
    }
}
