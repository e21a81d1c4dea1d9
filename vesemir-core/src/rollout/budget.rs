//! The backend's budget, checked before each take-out: at no moment more than `concurrency`
//! servers of the whole backend out of rotation, counting those this rollout did not take out
//! (servers already out, servers of other hosts, a host that went down by itself, another
//! deployer's hosts).
//!
//! A connected host enters `Admit`: the rollout asks for the backend's servers
//! ([`Action::ReadBackend`]; one read serves every host waiting when its answer comes), counts
//! the servers out of rotation it does not itself hold, and drains a waiting host only if the
//! total, that host included, stays within `concurrency`. Otherwise the hosts wait
//! ([`WaitReason::BackendBudget`]) and the backend is read again after [`BUDGET_RECHECK`].
//! A host whose own server changed since the deployment was prepared is left as found
//! (skipped): someone else is acting on it.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::batches::TimerKey;
use super::host::Stage;
use super::{Action, ActionResult, HostId, Rollout};
use crate::event::{EventKind, HostOutcome, Phase, Rotation, StopReason, WaitReason};
use crate::name::ServerName;
use crate::ports::{Operational, ServerState};

/// How long hosts waiting for room in the backend's budget wait before the backend is read again.
pub const BUDGET_RECHECK: Duration = Duration::from_secs(1);

/// How long hosts wait for room in the backend's budget while none of this rollout's hosts is
/// in flight (so only servers it does not hold fill the budget): past it, the rollout stops
/// ([`StopReason::BackendBudget`]). While its own hosts are in flight it waits for them.
pub const BUDGET_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// What the budget keeps between reads so that a read costs one pass over the listing: which
/// host each server of the plan belongs to (built once), and where each host's server was in the
/// last listing (the adapters list a backend in the same order each time).
#[derive(Debug, Default)]
pub(super) struct BudgetIndex {
    by_server: HashMap<ServerName, usize>,
    listed_at: Vec<Option<usize>>,
}

impl BudgetIndex {
    /// The index of a plan's servers (`servers[h]` is host `h`'s).
    pub(super) fn new<'a>(servers: impl ExactSizeIterator<Item = &'a ServerName>) -> Self {
        let listed_at = vec![None; servers.len()];
        Self { by_server: servers.enumerate().map(|(h, s)| (s.clone(), h)).collect(), listed_at }
    }

    fn host_of(&self, server: &ServerName) -> Option<usize> {
        self.by_server.get(server).copied()
    }
}

impl Rollout {
    /// The action of a host entering admission: read the backend, unless a read is already out
    /// (its answer will serve this host too) or the re-check timer runs.
    pub(super) fn admit_action(&mut self, host: HostId) -> (Option<Action>, Option<Phase>) {
        let action = (self.read_by.is_none() && self.budget_timer.is_none()).then(|| {
            self.read_by = Some(host.0);
            Action::ReadBackend { host }
        });
        (action, Some(Phase::CheckingBudget))
    }

    /// The backend's answer (or the read's failure) came back through host `h`.
    pub(super) fn advance_admit(&mut self, h: usize, result: ActionResult, now: Instant) {
        if self.read_by == Some(h) {
            self.read_by = None;
        }
        match result {
            ActionResult::Backend(servers) => self.admit(&servers, now),
            ActionResult::Failed(e) => self.read_failed(&e.message, now),
            ActionResult::Done | ActionResult::Exited(_) => {
                self.read_failed("the load balancer gave no list of servers", now)
            }
        }
    }

    /// The budget timer fired: read the backend again for the hosts still waiting.
    pub(super) fn budget_recheck(&mut self, now: Instant) {
        self.budget_timer = None;
        if self.budget_stopped() {
            self.end_admitting(now);
            return;
        }
        if self.read_by.is_some() {
            return;
        }
        if let Some(h) = self.admitting().into_iter().find(|&h| !self.hosts[h].awaiting) {
            self.read_by = Some(h);
            self.hosts[h].awaiting = true;
            self.actions.push_back(Action::ReadBackend { host: HostId(h) });
        }
    }

    /// Whether the rollout stopped because the budget stayed full: hosts waiting for admission
    /// then end. (On any other stop they are in flight and finish, as a connected host always
    /// has.)
    pub(super) fn budget_stopped(&self) -> bool {
        matches!(self.stop, Some(StopReason::BackendBudget { .. }))
    }

    /// Ends every host waiting for admission and not awaiting a read, once the budget stayed
    /// full too long: they were never taken out.
    pub(super) fn end_admitting(&mut self, now: Instant) {
        for h in self.admitting() {
            if !self.hosts[h].awaiting {
                let error = "not taken out: the backend's out-of-rotation budget stayed full".to_owned();
                self.fail(h, HostOutcome::Skipped, error, now);
            }
        }
    }

    /// Hosts waiting for admission, in plan order.
    fn admitting(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&h| self.hosts[h].stage == Stage::Admit && self.hosts[h].outcome.is_none())
            .collect()
    }

    fn read_failed(&mut self, message: &str, now: Instant) {
        for h in self.admitting() {
            if !self.hosts[h].awaiting {
                let error = format!(
                    "reading the backend before taking the host out failed: {message}; host not deployed, left as it was"
                );
                self.fail(h, HostOutcome::Failed, error, now);
            }
        }
    }

    /// Whether host `h` holds its server out of rotation (or may): past admission and not
    /// ended, or ended and not back in rotation.
    fn holds(&self, h: usize) -> bool {
        let run = &self.hosts[h];
        match run.outcome {
            None => !matches!(run.stage, Stage::Pending | Stage::Connect | Stage::Admit),
            Some(_) => run.started.is_some() && run.rotation() != Rotation::InRotation,
        }
    }

    /// Admits the waiting hosts the budget has room for, given the backend's `servers`.
    ///
    /// One pass over the listing: O(servers) cheap state checks, one lookup per server out of
    /// rotation and one per waiting host (usually a comparison at the position its server had in
    /// the last listing), rather than sets of names rebuilt per waiting host.
    fn admit(&mut self, servers: &[ServerState], now: Instant) {
        if self.budget_stopped() {
            self.end_admitting(now);
            return;
        }
        let held: Vec<bool> = (0..self.hosts.len()).map(|h| self.holds(h)).collect();
        // Servers out of rotation that no host of this rollout holds, and which of this
        // rollout's hosts such a server belongs to (it moves to held when that host is admitted).
        let mut count = held.iter().filter(|&&x| x).count();
        let mut out_unheld = vec![false; self.hosts.len()];
        for server in servers.iter().filter(|s| !s.in_rotation()) {
            match self.budget_index.host_of(&server.name) {
                Some(h) if held[h] => {}
                Some(h) => {
                    out_unheld[h] = true;
                    count += 1;
                }
                None => count += 1,
            }
        }
        let mut listing: Option<HashMap<&ServerName, usize>> = None;
        let mut waiting = false;
        for h in self.admitting() {
            if self.hosts[h].awaiting {
                continue;
            }
            let server = &self.plan.hosts[h].server;
            let cached =
                self.budget_index.listed_at[h].filter(|&i| servers.get(i).is_some_and(|s| &s.name == server));
            let at = cached.or_else(|| {
                let map = listing
                    .get_or_insert_with(|| servers.iter().enumerate().map(|(i, s)| (&s.name, i)).collect());
                map.get(server).copied()
            });
            self.budget_index.listed_at[h] = at;
            let own = at.map(|i| &servers[i]);
            if let Some(reason) = self.changed_since_prepared(h, own) {
                if let Some(own) = own {
                    let run = &mut self.hosts[h];
                    run.set_states(&own.instances);
                    run.checks_down = own.instances.iter().any(|s| s.operational != Operational::Up);
                }
                self.fail(h, HostOutcome::Skipped, reason, now);
                continue;
            }
            let with = if out_unheld[h] { count } else { count + 1 };
            if with <= self.plan.concurrency {
                count = with;
                out_unheld[h] = false;
                self.enter(h, Stage::Drain, now);
            } else {
                waiting = true;
            }
        }
        if waiting {
            let wait = (count, self.plan.concurrency);
            if self.budget_blocked(now) {
                let reason = StopReason::BackendBudget { out: wait.0, concurrency: wait.1 };
                self.stop = Some(reason);
                self.emit(now, EventKind::stopping(reason));
                self.end_admitting(now);
                return;
            }
            if self.budget_waiting != Some(wait) {
                self.budget_waiting = Some(wait);
                let reason = WaitReason::BackendBudget { out: wait.0, concurrency: wait.1 };
                self.emit(now, EventKind::Waiting { reason });
            }
            let at = now + BUDGET_RECHECK;
            self.budget_timer = Some(at);
            self.timers.push(Reverse((at, TimerKey::Budget)));
        } else {
            self.budget_waiting = None;
            self.budget_blocked_since = None;
        }
    }

    /// Whether hosts have waited for the budget longer than [`BUDGET_WAIT_LIMIT`] with none of
    /// this rollout's hosts in flight (past admission).
    fn budget_blocked(&mut self, now: Instant) -> bool {
        let own_in_flight = self.hosts.iter().any(|run| {
            run.outcome.is_none() && !matches!(run.stage, Stage::Pending | Stage::Connect | Stage::Admit)
        });
        if own_in_flight {
            self.budget_blocked_since = None;
            return false;
        }
        let since = *self.budget_blocked_since.get_or_insert(now);
        now.saturating_duration_since(since) >= BUDGET_WAIT_LIMIT
    }

    /// Why host `h` must be left as found: its server's state on some box is not what it was
    /// when the deployment was prepared (admin state, weight, or checks), or it is gone.
    fn changed_since_prepared(&self, h: usize, now: Option<&ServerState>) -> Option<String> {
        let planned = &self.plan.hosts[h];
        if planned.original.is_empty() {
            return None;
        }
        let Some(now) = now else {
            return Some("its server is no longer in the backend: left as found".to_owned());
        };
        let key = |s: &crate::ports::InstanceState| {
            (s.instance.clone(), s.admin, s.weight, s.operational == Operational::Up)
        };
        let same = now.instances.len() == planned.original.len()
            && now.instances.iter().zip(&planned.original).all(|(a, b)| key(a) == key(b));
        (!same).then(|| {
            format!(
                "its server changed during the deployment (was {}; now {}): left as found",
                planned.original_state().describe(),
                now.describe()
            )
        })
    }
}
