//! Each deployment's write-ahead journal, kept in the [`Store`]: the core's
//! [`JournaledLoadBalancer`] writes an intent (with the server's original state) before every
//! load balancer change, and the change is made only once the store has it durably; the core's
//! [`JournalSink`] records how hosts and the run ended. A store that fails stops the deployment
//! from starting hosts ([`StoreFailure`]). After a restart, [`recover`] puts back what a
//! journal left out, with the core's [`recover_server`] (health gate first).
//!
//! The core's [`JournalWriter`] is synchronous and the store is not, so the writer only queues
//! entries: one task per deployment writes them to the store in order, and the load balancer
//! that [`JournaledLoadBalancer`] wraps ([`DurableFirst`]) waits until every entry queued so
//! far is written before it calls the real one. Nothing blocks the runtime.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tracing::{error, warn};
use vesemir_core::error::PortError;
use vesemir_core::journal::{
    health_check, recover_server, replay, Finished, JournalEntry, JournalError, JournalHeader, JournalSink,
    JournalWriter, JournaledLoadBalancer, PendingServer, Recovered, RecoveryConfig, RecoveryOutcome, RunId,
    Unfinished,
};
use vesemir_core::name::ServerName;
use vesemir_core::ports::{
    AdminState, Backend, InstanceState, LoadBalancer, ServerLookup, ServerState, Weight,
};
use vesemir_core::request::DeploymentRequest;
use vesemir_core::{Backoff, Control, DeploymentReport, Event, EventSink, Host, Ports, Prepared};

use crate::store::{Status, Store, StoreError};

/// How a journal entry the store refused is retried before the deployment is stopped: four
/// attempts, 100 ms doubling, with jitter (the event writer's policy).
const JOURNAL_RETRY: Backoff = Backoff {
    attempts: 4,
    initial: Duration::from_millis(100),
    max: Duration::from_millis(400),
    jitter: 0.2,
};

/// The first store failure of a running deployment. Recording it cancels the deployment
/// (no new host starts; hosts in flight finish as far as the journal lets them).
#[derive(Debug, Clone)]
pub struct StoreFailure {
    first: Arc<Mutex<Option<String>>>,
    control: Control,
}

impl StoreFailure {
    /// A recorder that cancels through `control`.
    pub fn new(control: Control) -> Self {
        Self { first: Arc::new(Mutex::new(None)), control }
    }

    /// The store failed (`what`: the write that failed, with the error): stops starting hosts.
    pub fn failed(&self, what: String) {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            error!(error = %what, "the database failed: cancelling the deployment, no new host starts");
            *first = Some(what);
        }
        drop(first);
        self.control.cancel();
    }

    /// Why the store failed, if it did.
    pub fn reason(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Where the writer task is: entries written so far, and the failure that stopped it.
#[derive(Debug, Clone, Default)]
struct Written {
    count: u64,
    failed: Option<String>,
}

/// Queued entries and how many were ever queued.
#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<JournalEntry>,
    queued: u64,
    closing: bool,
}

/// A deployment's journal in the store: a [`JournalWriter`] that queues entries for the
/// deployment's writer task.
#[derive(Debug)]
pub struct StoreJournal {
    id: i64,
    queue: Mutex<Queue>,
    wake: Notify,
    written: watch::Sender<Written>,
}

impl StoreJournal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Only plain queue updates happen under this lock.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every entry queued so far is in the store; the store's failure otherwise.
    async fn durable(&self) -> Result<(), String> {
        let target = self.lock().queued;
        let mut written = self.written.subscribe();
        let state = written
            .wait_for(|w| w.count >= target || w.failed.is_some())
            .await
            .map_err(|_| "the journal's writer stopped".to_owned())?
            .clone();
        match state.failed {
            Some(reason) if state.count < target => Err(reason),
            _ => Ok(()),
        }
    }

    /// Writes queued entries in order until closed (and drained) or the store fails for good.
    async fn write_all(self: Arc<Self>, store: Arc<dyn Store>, failure: StoreFailure) {
        loop {
            let next = {
                let queue = self.lock();
                match queue.entries.front() {
                    Some(entry) => Some(entry.clone()),
                    None if queue.closing => return,
                    None => None,
                }
            };
            let Some(entry) = next else {
                self.wake.notified().await;
                continue;
            };
            if let Err(e) = self.write(&*store, &entry).await {
                let reason = format!("the deployment's journal could not be written: {e}");
                failure.failed(reason.clone());
                self.written.send_modify(|w| w.failed = Some(reason));
                return;
            }
            self.lock().entries.pop_front();
            self.written.send_modify(|w| w.count += 1);
        }
    }

    /// Writes one entry, retried per [`JOURNAL_RETRY`].
    async fn write(&self, store: &dyn Store, entry: &JournalEntry) -> Result<(), StoreError> {
        let mut retries = JOURNAL_RETRY.retries(self.id.unsigned_abs() ^ self.written.borrow().count);
        loop {
            match store.append_journal(self.id, entry).await {
                Ok(()) => return Ok(()),
                Err(e) => match retries.after_failure() {
                    Some(delay) => {
                        warn!(error = %e, attempt = retries.failures(), "writing the journal failed: retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

impl JournalWriter for StoreJournal {
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        if let Some(reason) = self.written.borrow().failed.clone() {
            return Err(JournalError { journal: format!("deployment {}", self.id), reason });
        }
        let mut queue = self.lock();
        queue.entries.push_back(entry.clone());
        queue.queued += 1;
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }
}

/// The load balancer [`JournaledLoadBalancer`] wraps: before each change it waits until every
/// journal entry queued so far (the change's intent among them) is in the store, and refuses
/// the change, untouched, when the store failed. Reads pass through.
#[derive(Debug)]
pub struct DurableFirst {
    inner: Arc<dyn LoadBalancer>,
    journal: Arc<StoreJournal>,
}

impl DurableFirst {
    async fn durable(&self) -> Result<(), PortError> {
        self.journal.durable().await.map_err(|reason| PortError::Adapter {
            adapter: "journal",
            source: format!("nothing was changed: {reason}").into(),
        })
    }
}

#[async_trait]
impl LoadBalancer for DurableFirst {
    async fn resolve(&self, backend: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError> {
        self.inner.resolve(backend, lookup).await
    }

    async fn set_state(
        &self,
        backend: &Backend,
        server: &ServerName,
        state: AdminState,
    ) -> Result<(), PortError> {
        self.durable().await?;
        self.inner.set_state(backend, server, state).await
    }

    async fn set_weight(
        &self,
        backend: &Backend,
        server: &ServerName,
        weight: Weight,
    ) -> Result<(), PortError> {
        self.durable().await?;
        self.inner.set_weight(backend, server, weight).await
    }

    async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        self.durable().await?;
        self.inner.shutdown_sessions(backend, server).await
    }

    async fn mark_down(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        self.durable().await?;
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
        self.durable().await?;
        self.inner.restore(backend, server, to).await
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

/// A running deployment's journal: the ports to run over (the load balancer journaled), the
/// event sink that records how hosts end, and the store failure that stops it.
#[derive(Debug)]
pub struct DeploymentJournal {
    journal: Arc<StoreJournal>,
    writer: tokio::task::JoinHandle<()>,
    ports: Ports,
    sink: JournalSink<Arc<StoreJournal>>,
    failure: StoreFailure,
}

impl DeploymentJournal {
    /// Starts deployment `id`'s journal: its header is in the store before this returns, and
    /// the ports' load balancer journals every change. On failure, why (nothing was changed).
    /// A later store failure cancels through `control`.
    pub async fn start(
        store: Arc<dyn Store>,
        id: i64,
        prepared: &Prepared,
        ports: &Ports,
        control: &Control,
    ) -> Result<Self, String> {
        let cannot = |e: &dyn std::fmt::Display| {
            format!(
                "could not start, nothing was changed: the deployment's journal could not be written: {e}"
            )
        };
        let record = store.get(id).await.map_err(|e| cannot(&e))?;
        let request = record.and_then(|r| serde_json::from_str(&r.request).ok()).unwrap_or_default();
        let header = header(id, prepared, request).map_err(|e| cannot(&e))?;
        let failure = StoreFailure::new(control.clone());
        let journal = Arc::new(StoreJournal {
            id,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            written: watch::Sender::new(Written::default()),
        });
        let writer = tokio::spawn(journal.clone().write_all(store, failure.clone()));
        let durable = DurableFirst { inner: ports.load_balancer.clone(), journal: journal.clone() };
        let journaled =
            JournaledLoadBalancer::start(durable, journal.clone(), &header).map_err(|e| cannot(&e))?;
        let started = Self {
            sink: JournalSink::new(journal.clone(), &header),
            ports: Ports { load_balancer: Arc::new(journaled), ..ports.clone() },
            journal,
            writer,
            failure,
        };
        match started.journal.durable().await {
            Ok(()) => Ok(started),
            Err(reason) => {
                started.writer.abort();
                Err(cannot(&reason))
            }
        }
    }

    /// The ports the deployment runs over.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The store failure recorder, for the deployment's other writes (its events).
    pub fn failure(&self) -> StoreFailure {
        self.failure.clone()
    }

    /// `events` with each event journaled first.
    pub fn sink<S: EventSink>(&self, events: S) -> JournaledEvents<'_, S> {
        JournaledEvents { journal: &self.sink, events }
    }

    /// After the run: writes what is left of the journal and says why the store failed during
    /// the run, if it did.
    pub async fn close(self) -> Option<String> {
        let during_run = self.failure.reason();
        self.journal.lock().closing = true;
        self.journal.wake.notify_one();
        if self.writer.await.is_err() {
            error!("the journal's writer panicked: the journal may lack its last entries");
        }
        if during_run.is_none() {
            if let Err(reason) = self.journal.durable().await {
                warn!(error = %reason, "the journal's last entries (how hosts ended) could not be written: its servers stay listed as unfinished");
            }
        }
        during_run
    }
}

/// An event sink that journals each event (how hosts and the run ended), then passes it on.
pub struct JournaledEvents<'a, S> {
    journal: &'a JournalSink<Arc<StoreJournal>>,
    events: S,
}

impl<S: EventSink> EventSink for JournaledEvents<'_, S> {
    fn emit(&self, event: &Event) {
        self.journal.emit(event);
        self.events.emit(event);
    }
}

/// Deployment `id`'s journal header: the run `deployment-<id>`, the plan's hosts and servers.
fn header(id: i64, prepared: &Prepared, request: serde_json::Value) -> Result<JournalHeader, String> {
    let run = RunId::new(format!("deployment-{id}"))?;
    Ok(JournalHeader::of_prepared(run, prepared, request, SystemTime::now()))
}

/// A deployment's ending when the store failed during its run (`reason`): never `succeeded`
/// (`stopped`, or `completed_with_failures` when every host was tried), the reason in its
/// `error`, with the hosts that may be out of rotation (from the report), returned to be
/// recorded as `out_of_rotation`.
pub fn stopped_by_store(
    reason: &str,
    report: &DeploymentReport,
    status: Status,
    error: &mut Option<String>,
) -> (Status, Vec<String>) {
    let out: Vec<String> = report.out_of_rotation().map(|h| h.name.to_string()).collect();
    let listed = if out.is_empty() { "none".to_owned() } else { out.join(", ") };
    let message = format!(
        "stopped: {reason}; no host was started after it. Hosts that may be out of rotation: {listed} (POST .../recover puts back what the journal recorded)"
    );
    *error = Some(match error.take() {
        Some(other) => format!("{other}; {message}"),
        None => message,
    });
    let status = if status == Status::CompletedWithFailures { status } else { Status::Stopped };
    (status, out)
}

/// Deployments being recovered now, so two recoveries of one deployment never run at once.
#[derive(Debug, Default)]
pub struct Recoveries(Mutex<std::collections::BTreeSet<i64>>);

impl Recoveries {
    /// Marks deployment `id` as being recovered until the guard drops; `None` when it already is.
    pub fn start(self: &Arc<Self>, id: i64) -> Option<RecoveryGuard> {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(id).then(|| RecoveryGuard { recoveries: self.clone(), id })
    }

    /// How many recoveries run now (shutdown waits for them within its grace).
    pub fn running(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Deployment `id` is being recovered while this lives.
#[derive(Debug)]
pub struct RecoveryGuard {
    recoveries: Arc<Recoveries>,
    id: i64,
}

impl Drop for RecoveryGuard {
    fn drop(&mut self) {
        self.recoveries.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

/// What a recovery did for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecovery {
    /// The server's host.
    pub host: String,
    /// The server.
    pub server: String,
    /// What happened.
    pub outcome: RecoveryOutcome,
}

/// What a recovery of one deployment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecovery {
    /// Each server the journal had left out, in the order the deployment first changed them.
    pub servers: Vec<ServerRecovery>,
    /// Hosts still out after it (those that failed their gate), sorted.
    pub out_of_rotation: Vec<String>,
    /// Whether nothing is left: the journal got its `Finished`.
    pub finished: bool,
}

/// Why a deployment cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The deployment kept no journal (it never changed anything, or ran on a server that kept
    /// none).
    #[error(
        "deployment {0} has no journal: nothing was recorded to put back (check out_of_rotation by hand)"
    )]
    NoJournal(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What deployment `id`'s journal leaves unfinished.
pub async fn unfinished(store: &dyn Store, id: i64) -> Result<Unfinished, RecoverError> {
    let unfinished = replay(store.journal(id).await?);
    if unfinished.header.is_none() {
        return Err(RecoverError::NoJournal(id));
    }
    Ok(unfinished)
}

/// Puts back every server deployment `id`'s journal left out, each with [`recover_server`]
/// (health gate first, then its original state on every instance), appending `Recovered` for
/// each put back and `Finished` when none is left, and recording the hosts still out as the
/// deployment's `out_of_rotation`. `request` is the deployment's request as validated now: its
/// health command is the gate.
pub async fn recover(
    store: &dyn Store,
    id: i64,
    ports: &Ports,
    request: &DeploymentRequest,
    config: &RecoveryConfig,
    output_limit: usize,
) -> Result<DeploymentRecovery, RecoverError> {
    recover_hosts(store, id, ports, request, config, output_limit, None).await
}

/// [`recover`], only for the servers of `only`'s hosts when given (`POST .../restore` with
/// hosts; a follow-up putting back the servers its parent left out once it deployed them). The
/// deployment's `out_of_rotation` keeps the pending servers not asked for.
pub async fn recover_hosts(
    store: &dyn Store,
    id: i64,
    ports: &Ports,
    request: &DeploymentRequest,
    config: &RecoveryConfig,
    output_limit: usize,
    only: Option<&std::collections::BTreeSet<vesemir_core::name::HostName>>,
) -> Result<DeploymentRecovery, RecoverError> {
    let unfinished = unfinished(store, id).await?;
    let Some(header) = unfinished.header.as_ref() else { return Err(RecoverError::NoJournal(id)) };
    let mut servers = Vec::new();
    let mut not_asked: Vec<String> = Vec::new();
    for pending in &unfinished.servers {
        if only.is_some_and(|only| !only.contains(&pending.host)) {
            not_asked.push(pending.host.to_string());
            continue;
        }
        let outcome = recover_one(header, pending, ports, request, config, output_limit).await;
        if !matches!(outcome, RecoveryOutcome::LeftOut { .. }) {
            let entry = JournalEntry::Recovered(Recovered {
                host: pending.host.clone(),
                server: pending.server.clone(),
            });
            store.append_journal(id, &entry).await?;
        }
        servers.push(ServerRecovery {
            host: pending.host.to_string(),
            server: pending.server.to_string(),
            outcome,
        });
    }
    let mut out_of_rotation: Vec<String> = servers
        .iter()
        .filter(|s| matches!(s.outcome, RecoveryOutcome::LeftOut { .. }))
        .map(|s| s.host.clone())
        .chain(not_asked)
        .collect();
    out_of_rotation.sort();
    let finished = out_of_rotation.is_empty();
    if finished && unfinished.finished != Some(Finished::Recovery) {
        store.append_journal(id, &JournalEntry::Finished(Finished::Recovery)).await?;
    }
    store.set_out_of_rotation(id, &out_of_rotation).await?;
    Ok(DeploymentRecovery { servers, out_of_rotation, finished })
}

async fn recover_one(
    header: &JournalHeader,
    pending: &PendingServer,
    ports: &Ports,
    request: &DeploymentRequest,
    config: &RecoveryConfig,
    output_limit: usize,
) -> RecoveryOutcome {
    let left_out = |reason: String| RecoveryOutcome::LeftOut { reason };
    let health = if pending.originally_in_rotation() {
        let host = header.host_of(&pending.server).map(|h| Host {
            name: h.name.clone(),
            address: h.address.clone(),
            attributes: Default::default(),
        });
        match host {
            Some(host) => health_check(request, &host, output_limit),
            None => return left_out("its host is not in the journal's plan: put it back by hand".into()),
        }
    } else {
        None
    };
    recover_server(&*ports.load_balancer, &*ports.executor, &header.backend, pending, health.as_ref(), config)
        .await
}
