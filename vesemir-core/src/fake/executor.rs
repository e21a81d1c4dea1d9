//! A fake [`Executor`]: records every command and upload per host, and can make a host
//! unreachable, a command fail or hang, or every command slow. Its host locks live in a
//! [`FakeLocks`] table that several fake executors can share, so two "deployers" in one test
//! contend for the same hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::lock;
use crate::error::PortError;
use crate::host::Host;
use crate::lock::{HeldLock, LockClaim, LockHolder, LockOutcome, RefreshOutcome, ReleaseOutcome};
use crate::name::{EnvVarName, HostName};
use crate::ports::{Executor, ExitStatus, FileUpload, OutputSink, OutputStream, RemoteCommand};

/// A command the fake ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command line, as rendered.
    pub script: String,
    /// The environment variables it was given.
    pub env: Vec<(EnvVarName, String)>,
}

#[derive(Debug, Clone)]
enum Fault {
    /// Exit with `code`; `times`: only the next so many matching commands (then they pass).
    Exit {
        contains: String,
        code: i32,
        times: Option<u32>,
    },
    Hang {
        contains: String,
    },
}

#[derive(Debug, Default)]
struct State {
    unreachable: BTreeSet<HostName>,
    unauthorized: BTreeSet<HostName>,
    faults: BTreeMap<HostName, Vec<Fault>>,
    latency: Duration,
    connect_latency: Duration,
    /// When each connect (to a reachable host) ended, by host, in order.
    connect_times: BTreeMap<HostName, Vec<Instant>>,
    connected: BTreeSet<HostName>,
    connects: usize,
    commands: BTreeMap<HostName, Vec<CommandRecord>>,
    uploads: BTreeMap<HostName, Vec<FileUpload>>,
}

/// A fake executor. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor {
    state: Arc<Mutex<State>>,
    locks: FakeLocks,
}

/// The host locks of fake executors, by host name, with the same rules as the SSH adapter's
/// lock files (see [`crate::lock`]); idle and held times by tokio's clock, so a test with
/// paused time can make a lock stale. Clones share the table.
#[derive(Debug, Clone, Default)]
pub struct FakeLocks {
    table: Arc<Mutex<BTreeMap<HostName, LockEntry>>>,
}

#[derive(Debug, Clone)]
struct LockEntry {
    holder: LockHolder,
    taken: Instant,
    touched: Instant,
}

impl LockEntry {
    fn new(holder: LockHolder) -> Self {
        let now = Instant::now();
        Self { holder, taken: now, touched: now }
    }

    fn held(&self) -> HeldLock {
        let now = Instant::now();
        HeldLock {
            holder: self.holder.clone(),
            held_for: now.saturating_duration_since(self.taken),
            idle_for: now.saturating_duration_since(self.touched),
        }
    }
}

impl FakeLocks {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a lock held by `holder` on `host`, replacing any: someone else deploying there.
    pub fn hold(&self, host: &HostName, holder: LockHolder) {
        lock(&self.table).insert(host.clone(), LockEntry::new(holder));
    }

    /// Who holds `host`'s lock now.
    pub fn holder(&self, host: &HostName) -> Option<LockHolder> {
        lock(&self.table).get(host).map(|entry| entry.holder.clone())
    }

    /// Every host with a lock now.
    pub fn locked(&self) -> BTreeSet<HostName> {
        lock(&self.table).keys().cloned().collect()
    }

    fn acquire(&self, host: &HostName, claim: &LockClaim) -> LockOutcome {
        let mut table = lock(&self.table);
        match table.get_mut(host) {
            None => {
                table.insert(host.clone(), LockEntry::new(claim.holder.clone()));
                LockOutcome::Acquired
            }
            Some(entry) if entry.holder == claim.holder => {
                entry.touched = Instant::now();
                LockOutcome::AlreadyOurs
            }
            Some(entry) if entry.held().idle_for > claim.stale_after => {
                let previous = entry.held();
                *entry = LockEntry::new(claim.holder.clone());
                LockOutcome::TookOverStale { previous }
            }
            Some(entry) => LockOutcome::Held(entry.held()),
        }
    }

    fn release(&self, host: &HostName, holder: &LockHolder) -> ReleaseOutcome {
        let mut table = lock(&self.table);
        match table.get(host) {
            None => ReleaseOutcome::NotHeld,
            Some(entry) if entry.holder == *holder => {
                table.remove(host);
                ReleaseOutcome::Released
            }
            Some(entry) => ReleaseOutcome::HeldByOther(entry.held()),
        }
    }

    fn refresh(&self, host: &HostName, holder: &LockHolder) -> RefreshOutcome {
        match lock(&self.table).get_mut(host) {
            Some(entry) if entry.holder == *holder => {
                entry.touched = Instant::now();
                RefreshOutcome::Refreshed
            }
            other => RefreshOutcome::Lost { now_held_by: other.map(|entry| entry.held()) },
        }
    }

    fn read(&self, host: &HostName) -> Option<HeldLock> {
        lock(&self.table).get(host).map(LockEntry::held)
    }

    fn break_lock(&self, host: &HostName) -> Option<HeldLock> {
        lock(&self.table).remove(host).map(|entry| entry.held())
    }
}

impl FakeExecutor {
    /// An executor where every host is reachable and every command exits 0 at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// An executor whose host locks live in `locks`, shared with other executors made from it.
    pub fn with_locks(locks: FakeLocks) -> Self {
        Self { locks, ..Self::default() }
    }

    /// The table of host locks this executor uses.
    pub fn locks(&self) -> &FakeLocks {
        &self.locks
    }

    /// Makes `host` refuse connections.
    pub fn set_unreachable(&self, host: &HostName) {
        lock(&self.state).unreachable.insert(host.clone());
    }

    /// Makes `host` accept connections again (undoes [`set_unreachable`](Self::set_unreachable)).
    pub fn set_reachable(&self, host: &HostName) {
        lock(&self.state).unreachable.remove(host);
    }

    /// Makes `host` refuse the credentials.
    pub fn set_unauthorized(&self, host: &HostName) {
        lock(&self.state).unauthorized.insert(host.clone());
    }

    /// Makes commands on `host` whose text contains `contains` exit with `code`, printing a
    /// line on stderr.
    pub fn fail_command(&self, host: &HostName, contains: &str, code: i32) {
        lock(&self.state).faults.entry(host.clone()).or_default().push(Fault::Exit {
            contains: contains.to_owned(),
            code,
            times: None,
        });
    }

    /// Makes the next `times` commands on `host` whose text contains `contains` exit with
    /// `code` (a flaky mirror, a package lock held for a moment); later ones pass.
    pub fn fail_command_times(&self, host: &HostName, contains: &str, code: i32, times: u32) {
        lock(&self.state).faults.entry(host.clone()).or_default().push(Fault::Exit {
            contains: contains.to_owned(),
            code,
            times: Some(times),
        });
    }

    /// Makes commands on `host` whose text contains `contains` run until their timeout.
    pub fn hang_command(&self, host: &HostName, contains: &str) {
        lock(&self.state)
            .faults
            .entry(host.clone())
            .or_default()
            .push(Fault::Hang { contains: contains.to_owned() });
    }

    /// Makes every command take `latency`.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Makes every [`connect`](Executor::connect) take `latency` (an SSH key exchange), after
    /// which the host is reachable or not as set.
    pub fn set_connect_latency(&self, latency: Duration) {
        lock(&self.state).connect_latency = latency;
    }

    /// When `connect` calls on `host` ended without error (tokio's clock), in order.
    pub fn connect_times(&self, host: &HostName) -> Vec<Instant> {
        lock(&self.state).connect_times.get(host).cloned().unwrap_or_default()
    }

    /// The commands run on `host`, in order.
    pub fn commands(&self, host: &HostName) -> Vec<CommandRecord> {
        lock(&self.state).commands.get(host).cloned().unwrap_or_default()
    }

    /// The uploads made to `host`, in order.
    pub fn uploads(&self, host: &HostName) -> Vec<FileUpload> {
        lock(&self.state).uploads.get(host).cloned().unwrap_or_default()
    }

    /// Hosts with an open session now.
    pub fn connected(&self) -> BTreeSet<HostName> {
        lock(&self.state).connected.clone()
    }

    /// How many sessions were opened in all.
    pub fn connects(&self) -> usize {
        lock(&self.state).connects
    }

    fn ensure_connected(&self, host: &Host) -> Result<(), PortError> {
        let mut state = lock(&self.state);
        if state.unreachable.contains(&host.name) {
            return Err(PortError::unreachable(format!("{host}"), "injected fault: connection refused"));
        }
        if state.unauthorized.contains(&host.name) {
            return Err(PortError::Unauthorized {
                target: host.to_string(),
                reason: "injected fault: key refused".into(),
            });
        }
        if state.connected.insert(host.name.clone()) {
            state.connects += 1;
        }
        Ok(())
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn connect(&self, host: &Host) -> Result<(), PortError> {
        let latency = lock(&self.state).connect_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        self.ensure_connected(host)?;
        lock(&self.state).connect_times.entry(host.name.clone()).or_default().push(Instant::now());
        Ok(())
    }

    async fn run(
        &self,
        host: &Host,
        command: &RemoteCommand,
        output: OutputSink,
    ) -> Result<ExitStatus, PortError> {
        self.ensure_connected(host)?;
        let (fault, latency) = {
            let mut state = lock(&self.state);
            state
                .commands
                .entry(host.name.clone())
                .or_default()
                .push(CommandRecord { script: command.script.clone(), env: command.env.clone() });
            let fault = state.faults.get_mut(&host.name).and_then(|faults| {
                let i = faults.iter().position(|f| match f {
                    Fault::Exit { contains, .. } | Fault::Hang { contains } => {
                        command.script.contains(contains.as_str())
                    }
                })?;
                let fault = faults[i].clone();
                if let Fault::Exit { times: Some(times), .. } = &mut faults[i] {
                    *times = times.saturating_sub(1);
                    if *times == 0 {
                        faults.remove(i);
                    }
                }
                Some(fault)
            });
            (fault, state.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency.min(command.timeout)).await;
        }
        match fault {
            None => Ok(ExitStatus::code(0)),
            Some(Fault::Exit { code, .. }) => {
                output.send(OutputStream::Stderr, format!("injected failure: exit {code}"));
                Ok(ExitStatus::code(code))
            }
            Some(Fault::Hang { .. }) => {
                tokio::time::sleep(command.timeout).await;
                Err(PortError::timeout(format!("command on {}", host.name), command.timeout))
            }
        }
    }

    async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError> {
        self.ensure_connected(host)?;
        lock(&self.state).uploads.entry(host.name.clone()).or_default().push(upload.clone());
        Ok(())
    }

    async fn close(&self, host: &Host) {
        lock(&self.state).connected.remove(&host.name);
    }

    async fn acquire_lock(&self, host: &Host, claim: &LockClaim) -> Result<LockOutcome, PortError> {
        self.ensure_connected(host)?;
        Ok(self.locks.acquire(&host.name, claim))
    }

    async fn release_lock(&self, host: &Host, holder: &LockHolder) -> Result<ReleaseOutcome, PortError> {
        self.ensure_connected(host)?;
        Ok(self.locks.release(&host.name, holder))
    }

    async fn refresh_lock(&self, host: &Host, holder: &LockHolder) -> Result<RefreshOutcome, PortError> {
        self.ensure_connected(host)?;
        Ok(self.locks.refresh(&host.name, holder))
    }

    async fn read_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
        self.ensure_connected(host)?;
        Ok(self.locks.read(&host.name))
    }

    async fn break_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
        self.ensure_connected(host)?;
        Ok(self.locks.break_lock(&host.name))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn host() -> Host {
        Host::new(HostName::new("web-01").expect("name"), "10.0.0.1").expect("host")
    }

    fn holder(deployment: &str) -> LockHolder {
        LockHolder {
            deployment: deployment.into(),
            requested_by: "alice".into(),
            application: "shop".into(),
            environment: "production".into(),
            machine: LockHolder::machine_of("ci-runner-7", 311),
            since_unix: 1_700_000_000,
        }
    }

    fn claim(deployment: &str, stale_after: Duration) -> LockClaim {
        LockClaim { holder: holder(deployment), stale_after }
    }

    #[tokio::test(start_paused = true)]
    async fn two_executors_sharing_a_table_contend() {
        let locks = FakeLocks::new();
        let (first, second) =
            (FakeExecutor::with_locks(locks.clone()), FakeExecutor::with_locks(locks.clone()));
        let hour = Duration::from_secs(3600);
        assert_eq!(first.acquire_lock(&host(), &claim("1", hour)).await.ok(), Some(LockOutcome::Acquired));
        tokio::time::advance(Duration::from_secs(5)).await;
        match second.acquire_lock(&host(), &claim("2", hour)).await {
            Ok(LockOutcome::Held(held)) => {
                assert_eq!(held.holder, holder("1"));
                assert_eq!(held.held_for, Duration::from_secs(5));
            }
            other => panic!("the second deployer must see the first: {other:?}"),
        }
        // An executor with its own table does not see the lock.
        let alone = FakeExecutor::new();
        assert_eq!(alone.acquire_lock(&host(), &claim("3", hour)).await.ok(), Some(LockOutcome::Acquired));
        assert_eq!(locks.holder(&host().name), Some(holder("1")));
    }

    #[tokio::test(start_paused = true)]
    async fn staleness_follows_tokio_time_and_refresh_restarts_it() {
        let executor = FakeExecutor::new();
        let minute = Duration::from_secs(60);
        assert!(executor.acquire_lock(&host(), &claim("1", minute)).await.is_ok());
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(executor.refresh_lock(&host(), &holder("1")).await.ok(), Some(RefreshOutcome::Refreshed));
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(matches!(
            executor.acquire_lock(&host(), &claim("2", minute)).await,
            Ok(LockOutcome::Held(_))
        ));
        tokio::time::advance(Duration::from_secs(11)).await;
        match executor.acquire_lock(&host(), &claim("2", minute)).await {
            Ok(LockOutcome::TookOverStale { previous }) => {
                assert_eq!(previous.holder, holder("1"));
                assert_eq!(previous.held_for, Duration::from_secs(111));
                assert_eq!(previous.idle_for, Duration::from_secs(61));
            }
            other => panic!("a lock idle past stale_after must be taken over: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_host_cannot_be_locked() {
        let executor = FakeExecutor::new();
        executor.set_unreachable(&host().name);
        let error = executor
            .acquire_lock(&host(), &claim("1", Duration::from_secs(60)))
            .await
            .expect_err("unreachable");
        assert!(error.is_unreachable(), "{error}");
    }
}
