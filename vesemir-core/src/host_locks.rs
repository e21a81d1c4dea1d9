//! Host locks around a deployment: one rollout per server, whoever started it, wherever. The
//! driver takes the lock of every host of the plan while preparing (before any load balancer
//! change), keeps them fresh while running, and gives each back once its host has finished,
//! on every ending. The locks live on the hosts ([`Executor::acquire_lock`] and friends; the
//! rules are in [`crate::lock`]); this module is the driver's side of them.
//!
//! # The rules
//!
//! - **All or nothing.** Every host of the plan is claimed at once (bounded concurrency, each
//!   claim within the driver's call timeout). If any host is held by another holder, the
//!   claims that succeeded are released and preparing fails with [`LockConflicts`], naming
//!   each holder: nothing was changed anywhere.
//! - **Waiting.** With [`LockPolicy::wait`] above zero, a refused attempt releases what it
//!   took (so two deployers waiting on each other's hosts never deadlock) and tries again
//!   after a delay of [`LOCK_WAIT_BACKOFF`], until `wait` runs out; each wait is announced
//!   through [`LockPolicy::on_wait`] (and a `tracing` line), naming who holds what.
//! - **Unreachable is not a conflict.** A host whose claim fails (unreachable, timed out,
//!   refused credentials...) is not a conflict: the deployment goes ahead and that host's first
//!   action, the connect, fails with the claim's error without touching it, so the rollout
//!   reports it exactly as it reports a host it cannot connect to (`unreachable` for an
//!   unreachable host or a claim that timed out). Its lock is released at the end anyway, in
//!   case a claim that timed out did go through (releasing never removes another's lock).
//! - **Stale takeover.** A lock idle for longer than [`LockPolicy::stale_after`] (by the
//!   host's clock) is taken over; the run starts with a `Warning` event naming the previous
//!   holder.
//! - **Refresh.** While running, the locks of hosts not finished yet are refreshed every
//!   `stale_after / 3`. A lock found lost (broken by `vesemir unlock`, or taken over by a
//!   deployer that judged it stale) gives a `Warning` event; the rollout goes on.
//! - **Release.** A host's lock is released once its `HostFinished` event is out, and every
//!   lock still held before `DeploymentFinished` is emitted, whatever the ending (success,
//!   failure, stop, cancel, abort, the server's deployment timeout, which is an abort). A
//!   release that fails gives a `Warning` event: the lock goes stale after `stale_after`, or an
//!   operator breaks it.
//! - **Dropped, killed.** When the run's future (or the [`Prepared`](crate::Prepared) holding
//!   the locks without running) is dropped, the locks still held are released by a task
//!   spawned on the current tokio runtime: best effort, as a process that exits right after
//!   may end it first. A deployer killed outright (`kill -9`, a crash, a lost machine) leaves
//!   its locks on the hosts: they go stale `stale_after` after their last refresh and the next
//!   deployer takes them over with a warning, or `vesemir unlock HOST` breaks them at once.

use crate::driver::bounded;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::PortError;
use crate::event::{Event, EventKind, EventSink, HostOutcome};
use crate::host::Host;
use crate::lock::{
    HeldLock, LockClaim, LockConflict, LockHolder, LockOutcome, RefreshOutcome, ReleaseOutcome,
};
use crate::name::HostName;

use crate::ports::Executor;
use crate::rollout::{ErrorKind, HostError};

/// How a deployment takes host locks: who it is, when a lock counts as abandoned, and how long
/// to wait for hosts someone else holds.
#[derive(Debug, Clone)]
pub struct LockPolicy {
    /// Who claims the locks.
    pub holder: LockHolder,
    /// A lock idle (not taken or refreshed) for longer than this, by the host's clock, is
    /// abandoned and taken over with a warning. Every deployer of a fleet must use the same
    /// value; it must be well above the time a deployer may go without refreshing (the driver
    /// refreshes every third of it).
    pub stale_after: Duration,
    /// How long to keep trying when hosts are held by others (zero: refuse at once).
    pub wait: Duration,
    /// Told about each wait, e.g. to print who holds what.
    pub on_wait: Option<WaitNotice>,
}

/// A callback told about each wait for host locks.
#[derive(Clone)]
pub struct WaitNotice(pub Arc<dyn Fn(&LockWait<'_>) + Send + Sync>);

impl fmt::Debug for WaitNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitNotice(..)")
    }
}

/// One wait for host locks: who holds them, and how long the deployer keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct LockWait<'a> {
    /// The hosts held by others at the last attempt.
    pub conflicts: &'a [LockConflict],
    /// The delay before the next attempt.
    pub retry_in: Duration,
    /// How much of the wait is left.
    pub left: Duration,
}

impl fmt::Display for LockWait<'_> {
    /// `waiting for host locks (next try in 2s, 9m 58s left): web-3 is locked by ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waiting for host locks (next try in {}, {} left): {}",
            whole_seconds(self.retry_in),
            whole_seconds(self.left),
            Joined(self.conflicts)
        )
    }
}

/// How a deployer waiting for host locks spaces its attempts: 1 s doubling to 15 s, up to half
/// of each delay off at random so that waiting deployers do not retry in step. Attempts are
/// bounded by [`LockPolicy::wait`], not by the policy.
pub const LOCK_WAIT_BACKOFF: Backoff = Backoff {
    attempts: u32::MAX,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(15),
    jitter: 0.5,
};

/// Hosts held by other deployers: why a deployment could not start. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConflicts {
    /// Each host held by someone else, with its holder.
    pub conflicts: Vec<LockConflict>,
    /// How long the deployer waited between attempts before giving up (zero when it did not
    /// wait).
    pub waited: Duration,
}

impl LockConflicts {
    /// The locked hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &HostName> {
        self.conflicts.iter().map(|c| &c.host)
    }
}

impl std::error::Error for LockConflicts {}

impl fmt::Display for LockConflicts {
    /// `web-3 is locked by deployment 42 of shop/production (alice on ci-runner-7 pid 311), since 4m 12s`,
    /// one such clause per host, joined by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Joined(&self.conflicts))?;
        if !self.waited.is_zero() {
            write!(f, " (still, after waiting {})", whole_seconds(self.waited))?;
        }
        Ok(())
    }
}

/// The host locks a prepared deployment holds. Shared by the [`Prepared`](crate::Prepared)
/// deployment and its run; whatever is still held when the last handle is dropped is released
/// by a spawned task (best effort, see the [module documentation](self)).
#[derive(Debug)]
pub struct HostLocks {
    executor: Arc<dyn Executor>,
    holder: LockHolder,
    stale_after: Duration,
    call_timeout: Duration,
    concurrency: usize,
    /// Hosts whose lock may be ours: claimed (`true`), or whose claim failed and may still have
    /// gone through (`false`: released quietly).
    held: Mutex<BTreeMap<HostName, (Host, bool)>>,
    /// Hosts whose claim failed: the error their first connect reports instead of connecting
    /// (a retried connect claims again: [`HostLocks::reclaim`]).
    refused: Mutex<BTreeMap<HostName, HostError>>,
    /// Stale locks taken over, with their previous holders.
    took_over: Vec<(HostName, HeldLock)>,
}

impl HostLocks {
    /// Who holds these locks.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// The hosts whose lock is held now.
    pub fn held(&self) -> BTreeSet<HostName> {
        self.table().iter().filter(|(_, (_, sure))| *sure).map(|(name, _)| name.clone()).collect()
    }

    /// Why `host` could not be locked, if it could not: its connect fails with this.
    pub fn refused(&self, host: &HostName) -> Option<HostError> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).get(host).cloned()
    }

    /// Before a host is tried again (`strategy.retry_unreachable`): makes sure its lock is
    /// ours, claiming it once more (no waiting) if the first claim failed. A lock another
    /// deployer took in between is [`ErrorKind::Rejected`], naming the holder; a host still
    /// out of reach is [`ErrorKind::Unreachable`].
    pub(crate) async fn reclaim(&self, host: &Host) -> Result<(), HostError> {
        if self.table().get(&host.name).is_some_and(|(_, sure)| *sure) {
            return Ok(());
        }
        let claim = LockClaim { holder: self.holder.clone(), stale_after: self.stale_after };
        let what = || format!("taking the host lock of {}", host.name);
        match bounded(self.call_timeout, what, self.executor.acquire_lock(host, &claim)).await {
            Ok(LockOutcome::Held(held)) => {
                let conflict = LockConflict { host: host.name.clone(), held };
                Err(HostError::new(ErrorKind::Rejected, format!("not tried again: {conflict}")))
            }
            Ok(outcome) => {
                if let LockOutcome::TookOverStale { previous } = outcome {
                    tracing::warn!(host = %host.name, previous = %previous, "took over a stale host lock to try the host again");
                }
                self.table().insert(host.name.clone(), (host.clone(), true));
                self.refused.lock().unwrap_or_else(PoisonError::into_inner).remove(&host.name);
                Ok(())
            }
            Err(error) => {
                let kind = match HostError::from(&error).kind {
                    ErrorKind::Unreachable | ErrorKind::Timeout => ErrorKind::Unreachable,
                    kind => kind,
                };
                Err(HostError::new(kind, format!("taking the host lock failed: {}", error.chain())))
            }
        }
    }

    /// The stale locks taken over, with their previous holders.
    pub fn took_over(&self) -> &[(HostName, HeldLock)] {
        &self.took_over
    }

    /// Releases every lock still held, `concurrency` at a time, and says how each went. For a
    /// front end that prepared a deployment and will not run it; `run` releases on its own.
    pub async fn release_all(&self) -> Vec<(HostName, bool, Result<ReleaseOutcome, PortError>)> {
        let hosts: Vec<(Host, bool)> = std::mem::take(&mut *self.table()).into_values().collect();
        let (executor, holder, bound) = (self.executor.clone(), self.holder.clone(), self.call_timeout);
        let results =
            for_each_host(hosts.iter().map(|(h, _)| h.clone()).collect(), self.concurrency, move |host| {
                let (executor, holder) = (executor.clone(), holder.clone());
                async move { release(&*executor, &host, &holder, bound).await }
            })
            .await;
        hosts.into_iter().zip(results).map(|((host, sure), result)| (host.name, sure, result)).collect()
    }

    /// Takes `host` out of the table of held locks, if it is there.
    fn take(&self, host: &HostName) -> Option<(Host, bool)> {
        self.table().remove(host)
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<HostName, (Host, bool)>> {
        // Only plain map updates happen under this lock: a poisoned map is still usable.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for HostLocks {
    fn drop(&mut self) {
        let hosts: Vec<Host> = std::mem::take(&mut *self.table()).into_values().map(|(h, _)| h).collect();
        if hosts.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                hosts = hosts.len(),
                "host locks dropped outside a runtime: they go stale instead"
            );
            return;
        };
        let (executor, holder, bound) = (self.executor.clone(), self.holder.clone(), self.call_timeout);
        runtime.spawn(async move {
            for host in hosts {
                if let Err(e) = release(&*executor, &host, &holder, bound).await {
                    tracing::warn!(host = %host.name, error = %e.chain(), "releasing a host lock failed: it goes stale");
                }
            }
        });
    }
}

/// Claims the lock of every one of `hosts` (the plan's targets) for `policy`, all or nothing, waiting as the policy
/// says. See the [module documentation](self) for the rules.
pub async fn acquire(
    mut hosts: Vec<Host>,
    executor: &Arc<dyn Executor>,
    policy: &LockPolicy,
    call_timeout: Duration,
    concurrency: usize,
) -> Result<HostLocks, LockConflicts> {
    // In name order, so that a refusal lists the hosts as the plan does, whatever the
    // inventory's order.
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let claim = LockClaim { holder: policy.holder.clone(), stale_after: policy.stale_after };
    let deadline = Instant::now() + policy.wait;
    let mut waited = Duration::ZERO;
    let mut retries = LOCK_WAIT_BACKOFF.retries(seed(&policy.holder));
    loop {
        let (exec, claim_for) = (executor.clone(), claim.clone());
        let outcomes = for_each_host(hosts.clone(), concurrency, move |host| {
            let (executor, claim) = (exec.clone(), claim_for.clone());
            async move {
                let what = || format!("taking the host lock of {}", host.name);
                bounded(call_timeout, what, executor.acquire_lock(&host, &claim)).await
            }
        })
        .await;
        let mut locks = HostLocks {
            executor: executor.clone(),
            holder: policy.holder.clone(),
            stale_after: policy.stale_after,
            call_timeout,
            concurrency,
            held: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            took_over: Vec::new(),
        };
        let mut conflicts = Vec::new();
        for (host, outcome) in hosts.iter().zip(outcomes) {
            let name = host.name.clone();
            match outcome {
                Ok(LockOutcome::Held(held)) => conflicts.push(LockConflict { host: name, held }),
                Ok(outcome) => {
                    if let LockOutcome::TookOverStale { previous } = outcome {
                        locks.took_over.push((name.clone(), previous));
                    }
                    locks.table().insert(name, (host.clone(), true));
                }
                Err(error) => {
                    let kind = match HostError::from(&error).kind {
                        ErrorKind::Unreachable | ErrorKind::Timeout => ErrorKind::Unreachable,
                        kind => kind,
                    };
                    let message = format!("taking the host lock failed: {}", error.chain());
                    locks
                        .refused
                        .get_mut()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name.clone(), HostError::new(kind, message));
                    locks.table().insert(name, (host.clone(), false));
                }
            }
        }
        if conflicts.is_empty() {
            return Ok(locks);
        }
        // Give back what this attempt took before waiting or failing: holding part of the
        // fleet while waiting for the rest is how two deployers deadlock.
        for (host, sure, result) in locks.release_all().await {
            if let (true, Err(e)) = (sure, result) {
                tracing::warn!(host = %host, error = %e.chain(), "giving back a host lock failed: it goes stale");
            }
        }
        let now = Instant::now();
        let delay = retries.after_failure().unwrap_or(LOCK_WAIT_BACKOFF.max);
        if now >= deadline {
            return Err(LockConflicts { conflicts, waited });
        }
        let left = deadline - now;
        let wait = LockWait { conflicts: &conflicts, retry_in: delay.min(left), left };
        tracing::info!("{wait}");
        if let Some(notice) = &policy.on_wait {
            (notice.0)(&wait);
        }
        tokio::time::sleep(delay.min(left)).await;
        waited += delay.min(left);
    }
}

/// The locks' side of a run: forwards the rollout's events (renumbered, so the lock's own
/// warnings fit in the sequence without gaps), releases each host's lock after its
/// `HostFinished`, refreshes the others, and holds `DeploymentFinished` back until every lock
/// is given back. With no locks it only forwards.
#[derive(Debug)]
pub(crate) struct RunLocks {
    locks: Option<Arc<HostLocks>>,
    tasks: JoinSet<LockTask>,
    refreshing: BTreeSet<HostName>,
    next_refresh: Option<Instant>,
    started: Instant,
    /// Added to the rollout's event numbers: how many events this module inserted.
    inserted: u64,
    last: Option<(u64, Duration)>,
    finished: Option<Event>,
    /// Keep the locks of hosts that ended unreachable until the end (they may be tried again:
    /// `strategy.retry_unreachable`) rather than give them back at their `HostFinished`.
    keep_unreachable: bool,
    /// Hosts that ended unreachable whose locks are kept: not refreshed until tried again.
    parked: BTreeSet<HostName>,
}

/// A lock call of the run, ended.
#[derive(Debug)]
pub(crate) enum LockTask {
    Released(Host, bool, Result<ReleaseOutcome, PortError>),
    Refreshed(Host, Result<RefreshOutcome, PortError>),
}

impl RunLocks {
    pub(crate) fn new(locks: Option<Arc<HostLocks>>, keep_unreachable: bool) -> Self {
        let started = Instant::now();
        let next_refresh = locks.as_ref().map(|l| started + refresh_every(l.stale_after));
        Self {
            locks,
            tasks: JoinSet::new(),
            refreshing: BTreeSet::new(),
            next_refresh,
            started,
            inserted: 0,
            last: None,
            finished: None,
            keep_unreachable,
            parked: BTreeSet::new(),
        }
    }

    /// Forwards one of the rollout's events.
    pub(crate) fn forward(&mut self, sink: &dyn EventSink, mut event: Event) {
        let Some(locks) = self.locks.clone() else {
            sink.emit(&event);
            return;
        };
        event.seq += self.inserted;
        if matches!(event.kind, EventKind::DeploymentFinished { .. }) {
            self.finished = Some(event);
            return;
        }
        let first = self.last.is_none();
        self.last = Some((event.seq, event.elapsed));
        sink.emit(&event);
        if first {
            for (host, previous) in locks.took_over() {
                let message = format!("took over the stale host lock of {previous}");
                self.warn(sink, Some(host.clone()), message);
            }
        }
        if let EventKind::HostRetry { host, .. } = &event.kind {
            self.parked.remove(host);
        }
        if let EventKind::HostFinished { host, outcome, .. } = &event.kind {
            if self.keep_unreachable && *outcome == HostOutcome::Unreachable {
                // Kept (not refreshed: it did not answer) until it is tried again or the end.
                self.parked.insert(host.clone());
                return;
            }
            if let Some((host, sure)) = locks.take(host) {
                let (executor, holder, bound) =
                    (locks.executor.clone(), locks.holder.clone(), locks.call_timeout);
                self.tasks.spawn(async move {
                    let result = release(&*executor, &host, &holder, bound).await;
                    LockTask::Released(host, sure, result)
                });
            }
        }
    }

    /// The next lock call that ended, or `None` when refreshes are due (never resolves
    /// without locks).
    pub(crate) async fn next(&mut self) -> Option<LockTask> {
        let refresh = async {
            match self.next_refresh {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(Ok(task)) = self.tasks.join_next() => Some(task),
            () = refresh => None,
        }
    }

    /// Handles what [`next`](Self::next) gave: starts due refreshes, or reports a lock call.
    pub(crate) fn handle(&mut self, sink: &dyn EventSink, task: Option<LockTask>) {
        let Some(locks) = self.locks.clone() else { return };
        match task {
            None => {
                let every = refresh_every(locks.stale_after);
                self.next_refresh = Some(Instant::now() + every);
                let hosts: Vec<Host> =
                    locks.table().values().filter(|(_, sure)| *sure).map(|(h, _)| h.clone()).collect();
                for host in hosts {
                    if self.parked.contains(&host.name) || !self.refreshing.insert(host.name.clone()) {
                        continue;
                    }
                    let (executor, holder) = (locks.executor.clone(), locks.holder.clone());
                    self.tasks.spawn(async move {
                        // A refresh may queue behind a long step on the host's session: it has
                        // until the next round.
                        let what = || format!("refreshing the host lock of {}", host.name);
                        let result = bounded(every, what, executor.refresh_lock(&host, &holder)).await;
                        LockTask::Refreshed(host, result)
                    });
                }
            }
            Some(LockTask::Refreshed(host, result)) => {
                self.refreshing.remove(&host.name);
                let still_ours = locks.table().contains_key(&host.name);
                match result {
                    Ok(RefreshOutcome::Refreshed) => {}
                    Ok(lost @ RefreshOutcome::Lost { .. }) if still_ours => {
                        let message = format!("{lost}: another deployer may start on this host");
                        self.warn(sink, Some(host.name), message);
                    }
                    Err(PortError::Timeout { .. }) => {
                        tracing::debug!(host = %host.name, "refreshing a host lock timed out: the host is busy");
                    }
                    Err(e) if still_ours => {
                        let message = format!("refreshing the host lock failed: {}", e.chain());
                        self.warn(sink, Some(host.name), message);
                    }
                    Ok(_) | Err(_) => {}
                }
            }
            Some(LockTask::Released(host, sure, result)) => self.released(sink, host.name, sure, result),
        }
    }

    /// Gives back every lock still held, waits for every lock call, then emits the held-back
    /// `DeploymentFinished`.
    pub(crate) async fn finish(mut self, sink: &dyn EventSink) {
        if let Some(locks) = self.locks.clone() {
            for (host, sure, result) in locks.release_all().await {
                self.released(sink, host, sure, result);
            }
            while let Some(joined) = self.tasks.join_next().await {
                if let Ok(LockTask::Released(host, sure, result)) = joined {
                    self.released(sink, host.name, sure, result);
                }
            }
        }
        if let Some(mut event) = self.finished.take() {
            event.seq = self.last.map_or(event.seq, |(seq, _)| seq + 1);
            sink.emit(&event);
        }
    }

    fn released(
        &mut self,
        sink: &dyn EventSink,
        host: HostName,
        sure: bool,
        result: Result<ReleaseOutcome, PortError>,
    ) {
        match result {
            Ok(ReleaseOutcome::Released | ReleaseOutcome::NotHeld) => {}
            Ok(other @ ReleaseOutcome::HeldByOther(_)) if sure => {
                self.warn(sink, Some(host), other.to_string())
            }
            Err(e) if sure => {
                let message = format!(
                    "releasing the host lock failed: {}; it goes stale {} after its last refresh, or break it by hand",
                    e.chain(),
                    whole_seconds(self.locks.as_ref().map_or(Duration::ZERO, |l| l.stale_after))
                );
                self.warn(sink, Some(host), message);
            }
            Ok(_) | Err(_) => {}
        }
    }

    /// Emits a `Warning` event of this module's own, numbered after the last event.
    fn warn(&mut self, sink: &dyn EventSink, host: Option<HostName>, message: String) {
        let (seq, elapsed) = self.last.unwrap_or((0, Duration::ZERO));
        let elapsed = elapsed.max(Instant::now().saturating_duration_since(self.started));
        let event = Event { seq: seq + 1, elapsed, kind: EventKind::Warning { host, message } };
        self.inserted += 1;
        self.last = Some((event.seq, elapsed));
        sink.emit(&event);
    }
}

impl Drop for RunLocks {
    fn drop(&mut self) {
        // A run dropped mid-way: its locks are released by `HostLocks`' own drop once the last
        // handle goes; this one goes now, so the prepared deployment's handle is the last.
        self.tasks.detach_all();
    }
}

/// How often a run refreshes its locks: a third of `stale_after`, at least a second.
fn refresh_every(stale_after: Duration) -> Duration {
    (stale_after / 3).max(Duration::from_secs(1))
}

async fn release(
    executor: &dyn Executor,
    host: &Host,
    holder: &LockHolder,
    bound: Duration,
) -> Result<ReleaseOutcome, PortError> {
    let what = || format!("releasing the host lock of {}", host.name);
    let result = bounded(bound, what, executor.release_lock(host, holder)).await;
    // The host is done with: the session the release opened goes too.
    let _ = tokio::time::timeout(bound, executor.close(host)).await;
    result
}

/// Runs `call` for every host, `concurrency` at a time, and gives the results in host order.
async fn for_each_host<T, F, Fut>(hosts: Vec<Host>, concurrency: usize, call: F) -> Vec<Result<T, PortError>>
where
    T: Send + 'static,
    F: Fn(Host) -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>> + Send + 'static,
{
    let mut results: Vec<Option<Result<T, PortError>>> =
        std::iter::repeat_with(|| None).take(hosts.len()).collect();
    let mut pending = JoinSet::new();
    let mut next = hosts.into_iter().enumerate();
    loop {
        while pending.len() < concurrency.max(1) {
            let Some((index, host)) = next.next() else { break };
            let call = call(host);
            pending.spawn(async move { (index, call.await) });
        }
        let Some(joined) = pending.join_next().await else { break };
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(PortError::Adapter {
                    adapter: "executor",
                    source: "a host lock call panicked: a bug, please report it".into(),
                })
            })
        })
        .collect()
}

/// A seed for the wait's jitter that differs between deployers (the core draws no randomness).
fn seed(holder: &LockHolder) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    holder.hash(&mut hasher);
    hasher.finish()
}

/// A duration to the nearest second: `4m 12s`.
fn whole_seconds(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs((duration + Duration::from_millis(500)).as_secs()))
}

/// Conflicts joined by `; `.
struct Joined<'a>(&'a [LockConflict]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, conflict) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{conflict}")?;
        }
        Ok(())
    }
}
