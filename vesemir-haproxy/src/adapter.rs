//! [`HaproxyLoadBalancer`]: the [`LoadBalancer`] port over HAProxy's runtime API, applying every
//! change to all instances of a backend, or to none.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{
    check_restore, AdminState, Backend, InstanceState, LbEndpoint, LoadBalancer, ServerLookup, ServerState,
    Weight,
};
use vesemir_core::PortError;

use crate::command::Command;
use crate::config::HaproxyConfig;
use crate::error::HaproxyError;
use crate::join::{join_all, task};
use crate::servers_state::{self, ServerRow};
use crate::stat::{self, StatRow};
use crate::{reply, transport};

/// The [`LoadBalancer`] port over HAProxy's runtime API (`stats socket ... level admin`), on
/// unix sockets and TCP.
///
/// Every change first reads the server on every instance of the backend (so an unknown backend
/// or server, or an instance that is down, is an error before anything changes), then applies
/// the change on all instances at once; if one refuses, the instances that changed are put back
/// as they were. Instances are always asked concurrently, so an operation takes as long as the
/// slowest instance, not the sum. Each command travels alone on its own connection, built only from validated
/// names.
///
/// Polling (`wait_drained`, `wait_up`) asks each instance for the server's own `show stat` row
/// by its numeric id once it is known, not for the whole backend; clones share what they
/// learnt. `status` adds the backend's `show servers state` (admin and operational states,
/// address, configured weight); `servers` asks each instance once for the whole backend with
/// both commands.
///
/// The effective weight reported is `show stat`'s `weight`, except for a server in
/// maintenance: HAProxy does not recompute it there, so a weight set during maintenance would
/// not show; its `srv_uweight` (the weight it comes back with) is reported instead.
///
/// Connections open at once to one instance are bounded by
/// [`HaproxyConfig::max_connections_per_instance`], counted for the whole process (every
/// adapter and clone shares the count: [`open_connections`](crate::open_connections)).
#[derive(Debug, Clone, Default)]
pub struct HaproxyLoadBalancer {
    config: HaproxyConfig,
    server_ids: Arc<Mutex<HashMap<ServerKey, u32>>>,
    /// Per server and instance, its checks' UP-to-DOWN count (`chkdown`) when `wait_drained`
    /// last saw it drained, forgotten at its next state change and used up by `mark_down`:
    /// a count grown since then is a DOWN HAProxy's checks saw during the changeset.
    drained_marks: Arc<Mutex<HashMap<ServerKey, u64>>>,
}

/// A server on one instance: its id there can change when the instance reloads.
type ServerKey = (LbEndpoint, BackendName, ServerName);

impl HaproxyLoadBalancer {
    /// An adapter with these timeouts.
    pub fn new(config: HaproxyConfig) -> Self {
        Self { config, server_ids: Arc::default(), drained_marks: Arc::default() }
    }

    /// The `chkdown` counts recorded by `wait_drained`. Plain numbers, each read or replaced
    /// whole: a poisoned lock is taken over.
    fn marks(&self) -> MutexGuard<'_, HashMap<ServerKey, u64>> {
        self.drained_marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the counts recorded for `server` on every instance of `backend`.
    fn forget_marks(&self, backend: &Backend, server: &ServerName) {
        let mut marks = self.marks();
        for instance in &backend.instances {
            marks.remove(&(instance.clone(), backend.name.clone(), server.clone()));
        }
    }

    /// Sends one command to `instance`, waiting for a free connection slot there first (the
    /// process-wide count of [`crate::gate`]).
    async fn send(&self, instance: &LbEndpoint, command: &Command) -> Result<String, HaproxyError> {
        let _slot = crate::gate::acquire(instance, self.config.max_connections_per_instance).await;
        transport::send(instance, command, &self.config).await
    }

    /// The cache of server ids. It holds plain numbers that are checked on every use, so the
    /// state a panicking holder left is as good as any: a poisoned lock is taken over.
    fn ids(&self) -> MutexGuard<'_, HashMap<ServerKey, u32>> {
        self.server_ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configuration it was made with (timeouts, connection cap).
    pub fn config(&self) -> &HaproxyConfig {
        &self.config
    }

    async fn servers_state(
        &self,
        instance: &LbEndpoint,
        backend: &Backend,
    ) -> Result<Vec<ServerRow>, HaproxyError> {
        let command = Command::ShowServersState(backend.name.clone());
        let text = self.send(instance, &command).await?;
        if !text.starts_with("1\n") {
            return Err(reply::classify_read(instance, &command, &text));
        }
        servers_state::parse(&text).map_err(|what| HaproxyError::Malformed {
            instance: instance.clone(),
            command: command.to_string(),
            what,
        })
    }

    async fn show_stat(&self, instance: &LbEndpoint, command: Command) -> Result<Vec<StatRow>, HaproxyError> {
        let text = self.send(instance, &command).await?;
        if !text.starts_with('#') {
            return Err(reply::classify_read(instance, &command, &text));
        }
        stat::parse(&text).map_err(|e| HaproxyError::Malformed {
            instance: instance.clone(),
            command: command.to_string(),
            what: e.0,
        })
    }

    /// The server's `show stat` row on one instance: its row alone when its id is known (and
    /// still names it), else the whole backend's, learning the id.
    async fn stat_row(
        &self,
        instance: &LbEndpoint,
        backend: &Backend,
        server: &ServerName,
    ) -> Result<StatRow, HaproxyError> {
        let key = (instance.clone(), backend.name.clone(), server.clone());
        let is_it = |row: &StatRow| row.server == server.as_str() && row.backend == backend.name.as_str();
        let known = self.ids().get(&key).copied();
        if let Some(sid) = known {
            let rows = self.show_stat(instance, Command::ShowStatServer(backend.name.clone(), sid)).await?;
            if let Some(row) = rows.into_iter().find(is_it) {
                return Ok(row);
            }
            self.ids().remove(&key);
        }
        let row = self
            .show_stat(instance, Command::ShowStat(backend.name.clone()))
            .await?
            .into_iter()
            .find(is_it)
            .ok_or_else(|| no_such_server(instance, backend, server))?;
        if let Some(sid) = row.sid {
            self.ids().insert(key, sid);
        }
        Ok(row)
    }

    /// The server's `show servers state` row on one instance.
    async fn state_row(
        &self,
        instance: &LbEndpoint,
        backend: &Backend,
        server: &ServerName,
    ) -> Result<ServerRow, HaproxyError> {
        self.servers_state(instance, backend)
            .await?
            .into_iter()
            .find(|row| row.name == server.as_str())
            .ok_or_else(|| no_such_server(instance, backend, server))
    }

    /// Reads the server on every instance: the check before any change, and what to put back.
    async fn snapshot(&self, backend: &Backend, server: &ServerName) -> Result<Vec<ServerRow>, HaproxyError> {
        let reads =
            instances(backend)?.iter().map(|instance| task(self.state_row(instance, backend, server)));
        join_all(reads).await.into_iter().collect()
    }

    async fn change(&self, instance: &LbEndpoint, command: &Command) -> Result<(), HaproxyError> {
        debug_assert!(command.is_change());
        let text = self.send(instance, command).await?;
        reply::check_change(instance, command, &text)
    }

    /// Sends `command` to every instance after checking the server exists on all; when one
    /// fails, sends `undo(row before)` to the instances that changed (or may have: their reply
    /// was lost).
    async fn change_everywhere(
        &self,
        backend: &Backend,
        server: &ServerName,
        command: Command,
        undo: impl Fn(&ServerRow) -> Option<Command>,
    ) -> Result<(), HaproxyError> {
        let before = self.snapshot(backend, server).await?;
        let changes = backend.instances.iter().map(|instance| task(self.change(instance, &command)));
        let outcomes = join_all(changes).await;
        let mut cause = None;
        let mut changed = Vec::new();
        for ((instance, row), outcome) in backend.instances.iter().zip(&before).zip(outcomes) {
            match outcome {
                Ok(()) => changed.push((instance, row)),
                Err(e) => {
                    // A command whose reply was lost may have been obeyed: put it back too.
                    if e.may_have_applied() {
                        changed.push((instance, row));
                    }
                    cause.get_or_insert(e);
                }
            }
        }
        let Some(cause) = cause else { return Ok(()) };
        let mut failures = Vec::new();
        for (instance, row) in &changed {
            let Some(undo) = undo(row) else { continue };
            if let Err(e) = self.change(instance, &undo).await {
                failures.push(format!("`{undo}` on {instance}: {e}"));
            }
        }
        tracing::warn!(%cause, put_back = changed.len(), "haproxy change failed; instances already changed put back");
        if failures.is_empty() {
            Err(cause)
        } else {
            Err(HaproxyError::RollbackFailed { cause: Box::new(cause), failures: failures.join("; ") })
        }
    }

    /// Everything one instance says of every server of the backend: one `show servers state`
    /// and one `show stat`, at once. A server in one reply but not the other (added or removed
    /// between the two) is left out.
    async fn backend_on(
        &self,
        instance: &LbEndpoint,
        backend: &Backend,
    ) -> Result<Vec<(ServerName, InstanceState)>, HaproxyError> {
        let stats = self.show_stat(instance, Command::ShowStat(backend.name.clone()));
        let (rows, stats) = tokio::join!(self.servers_state(instance, backend), stats);
        let (rows, stats) = (rows?, stats?);
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(stat) =
                stats.iter().find(|s| s.server == row.name && s.backend == backend.name.as_str())
            else {
                continue;
            };
            let name = ServerName::new(&row.name)
                .map_err(|source| HaproxyError::BadName { instance: instance.clone(), source })?;
            if let Some(sid) = stat.sid {
                self.ids().insert((instance.clone(), backend.name.clone(), name.clone()), sid);
            }
            found.push((name, instance_state(instance, row, stat)));
        }
        Ok(found)
    }

    /// Restores one instance: the weight, then the state when it goes back to ready (so it
    /// enters rotation at its weight), else the state first (so it leaves rotation at once).
    /// Says whether a command may have been obeyed when it fails.
    async fn restore_on(
        &self,
        backend: &Backend,
        server: &ServerName,
        to: &InstanceState,
    ) -> Result<(), (HaproxyError, bool)> {
        let weight = Command::SetWeightAbsolute(backend.name.clone(), server.clone(), to.weight);
        let state = Command::SetState(backend.name.clone(), server.clone(), to.admin);
        let order = if to.admin == AdminState::Ready { [weight, state] } else { [state, weight] };
        let mut sent_one = false;
        for command in &order {
            if let Err(e) = self.change(&to.instance, command).await {
                let may_have = sent_one || e.may_have_applied();
                return Err((e, may_have));
            }
            sent_one = true;
        }
        Ok(())
    }

    /// Polls `show stat` on every instance until `done` holds for the server on all of them,
    /// for at most `timeout`. `describe` says what is still missing, for the timeout error.
    async fn poll_stat(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
        done: impl Fn(&StatRow) -> bool + Send + Sync,
        describe: impl Fn(&LbEndpoint, &StatRow) -> String + Send + Sync,
    ) -> Result<Result<Vec<StatRow>, String>, PortError> {
        let instances = instances(backend)?;
        let mut waiting_for = String::from("no answer from the instances yet");
        let polling = async {
            loop {
                let reads = instances.iter().map(|instance| task(self.stat_row(instance, backend, server)));
                let rows: Vec<StatRow> = join_all(reads).await.into_iter().collect::<Result<_, _>>()?;
                let missing: Vec<String> = instances
                    .iter()
                    .zip(&rows)
                    .filter(|(_, row)| !done(row))
                    .map(|(instance, row)| describe(instance, row))
                    .collect();
                if missing.is_empty() {
                    return Ok::<Vec<StatRow>, HaproxyError>(rows);
                }
                waiting_for = missing.join(", ");
                tokio::time::sleep(self.config.poll_interval).await;
            }
        };
        match bounded(timeout, polling).await {
            Some(result) => result.map(Ok).map_err(PortError::from),
            None => Ok(Err(waiting_for)),
        }
    }
}

async fn bounded<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, future).await.ok()
}

/// One instance's view of a server, from its two rows there.
fn instance_state(instance: &LbEndpoint, row: &ServerRow, stat: &StatRow) -> InstanceState {
    let admin = row.admin();
    InstanceState {
        instance: instance.clone(),
        status: stat.status.status(),
        // HAProxy leaves `show stat`'s weight as it was while a server is in maintenance.
        weight: if admin == AdminState::Maint { row.weight } else { stat.weight },
        configured_weight: row.configured_weight,
        sessions: stat.sessions,
        admin,
        operational: row.operational,
        check: stat.check.clone(),
        address: row.ip(),
    }
}

fn instances(backend: &Backend) -> Result<&[LbEndpoint], HaproxyError> {
    if backend.instances.is_empty() {
        Err(HaproxyError::NoInstances { backend: backend.name.to_string() })
    } else {
        Ok(&backend.instances)
    }
}

fn no_such_server(instance: &LbEndpoint, backend: &Backend, server: &ServerName) -> HaproxyError {
    HaproxyError::NoSuchServer {
        instance: instance.clone(),
        backend: backend.name.to_string(),
        server: server.to_string(),
    }
}

/// Whether a server row has the host's address (an IP, compared as an IP, or a DNS name).
fn has_address(row: &ServerRow, address: &str) -> bool {
    match (row.address.parse::<IpAddr>(), address.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) if a == b => return true,
        _ => {}
    }
    let fqdn = row.fqdn.as_deref().map(|f| f.trim_end_matches('.'));
    fqdn.is_some_and(|f| f.eq_ignore_ascii_case(address.trim_end_matches('.')))
}

/// Finds the server `lookup` names among one instance's rows.
fn find_server(
    instance: &LbEndpoint,
    backend: &Backend,
    rows: &[ServerRow],
    lookup: &ServerLookup,
) -> Result<ServerName, HaproxyError> {
    match lookup {
        ServerLookup::Name(name) => rows
            .iter()
            .any(|row| row.name == name.as_str())
            .then(|| name.clone())
            .ok_or_else(|| no_such_server(instance, backend, name)),
        ServerLookup::Address(address) => {
            let hits: Vec<&ServerRow> = rows.iter().filter(|row| has_address(row, address)).collect();
            match hits.as_slice() {
                [] => Err(HaproxyError::NoServerAtAddress {
                    instance: instance.clone(),
                    backend: backend.name.to_string(),
                    address: address.clone(),
                }),
                [row] => ServerName::new(&row.name)
                    .map_err(|source| HaproxyError::BadName { instance: instance.clone(), source }),
                many => Err(HaproxyError::AmbiguousAddress {
                    instance: instance.clone(),
                    backend: backend.name.to_string(),
                    address: address.clone(),
                    servers: many
                        .iter()
                        .map(|r| r.name.escape_debug().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    }
}

#[async_trait]
impl LoadBalancer for HaproxyLoadBalancer {
    async fn resolve(&self, backend: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError> {
        let instances = instances(backend)?;
        let reads = instances.iter().map(|instance| task(self.servers_state(instance, backend)));
        let replies = join_all(reads).await;
        let mut found: Option<(ServerName, &LbEndpoint)> = None;
        for (instance, rows) in instances.iter().zip(replies) {
            let rows = rows?;
            let name = find_server(instance, backend, &rows, lookup)?;
            match &found {
                Some((elsewhere, elsewhere_instance)) if *elsewhere != name => {
                    return Err(HaproxyError::Inconsistent {
                        instance: instance.clone(),
                        here: name.to_string(),
                        elsewhere_instance: (*elsewhere_instance).clone(),
                        elsewhere: elsewhere.to_string(),
                    }
                    .into())
                }
                Some(_) => {}
                None => found = Some((name, instance)),
            }
        }
        found
            .map(|(name, _)| name)
            .ok_or_else(|| PortError::not_found(format!("{lookup} in backend {}", backend.name)))
    }

    async fn set_state(
        &self,
        backend: &Backend,
        server: &ServerName,
        state: AdminState,
    ) -> Result<(), PortError> {
        self.forget_marks(backend, server);
        let command = Command::SetState(backend.name.clone(), server.clone(), state);
        let undo = |row: &ServerRow| {
            Some(Command::SetState(backend.name.clone(), server.clone(), row.admin_state()))
        };
        Ok(self.change_everywhere(backend, server, command, undo).await?)
    }

    async fn set_weight(
        &self,
        backend: &Backend,
        server: &ServerName,
        weight: Weight,
    ) -> Result<(), PortError> {
        if weight != Weight::ZERO && weight != Weight::FULL {
            // HAProxy rounds `weight N%` down without a word: 50% of a configured weight of 1 is
            // 0, which silently takes the server out of rotation while the ramp thinks it serves.
            for state in self.status(backend, server).await? {
                if state.configured_weight * u32::from(weight.get()) / 100 == 0 {
                    return Err(PortError::rejected(
                        format!("load balancer {}", state.instance),
                        format!(
                            "server {}/{server} has weight {} in its configuration, and {weight} of it rounds to 0 (no traffic): give the servers a weight of 100 or more in haproxy.cfg, or use larger ramp steps",
                            backend.name, state.configured_weight
                        ),
                    ));
                }
            }
        }
        let command = Command::SetWeightPercent(backend.name.clone(), server.clone(), weight);
        let undo = |row: &ServerRow| {
            Some(Command::SetWeightAbsolute(backend.name.clone(), server.clone(), row.weight))
        };
        Ok(self.change_everywhere(backend, server, command, undo).await?)
    }

    /// `set server <b>/<s> health down` on every instance, after checking that each instance
    /// runs health checks on the server (a `check_status` in its `show stat` row): on a server
    /// without checks nothing would ever bring it back, so that is refused before any change.
    ///
    /// An instance whose own checks already took the server DOWN since `wait_drained` last saw
    /// it drained (its `chkdown` grew since then, and no state change came between) is left as
    /// it is: HAProxy saw the restart, so the server is either still DOWN or back UP by checks
    /// made after that DOWN, which is what marking it would prove; marking it again would only
    /// make it wait for the next scheduled check (up to `inter`). Each mark is used once.
    /// Nothing is undone when an instance fails: a server marked DOWN on some instances comes
    /// back by its own checks there.
    async fn mark_down(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        let reads = instances(backend)?.iter().map(|instance| task(self.stat_row(instance, backend, server)));
        let rows: Vec<StatRow> = join_all(reads).await.into_iter().collect::<Result<_, _>>()?;
        if let Some((instance, _)) = backend.instances.iter().zip(&rows).find(|(_, row)| row.check.is_none())
        {
            return Err(PortError::rejected(
                format!("load balancer {instance}"),
                format!(
                    "server {}/{server} has no running health check there (no `check` on its line, or checks paused): checks_while_out needs HAProxy's own checks",
                    backend.name
                ),
            ));
        }
        let to_mark: Vec<LbEndpoint> = {
            let mut marks = self.marks();
            backend
                .instances
                .iter()
                .zip(&rows)
                .filter(|(instance, row)| {
                    let key = ((*instance).clone(), backend.name.clone(), server.clone());
                    let seen_down =
                        matches!((marks.remove(&key), row.chkdown), (Some(then), Some(now)) if now > then);
                    !seen_down
                })
                .map(|(instance, _)| instance.clone())
                .collect()
        };
        if to_mark.len() < backend.instances.len() {
            tracing::debug!(
                backend = %backend.name,
                %server,
                left = backend.instances.len() - to_mark.len(),
                "checks already saw the server DOWN since it was drained: not marked there"
            );
        }
        if to_mark.is_empty() {
            return Ok(());
        }
        let marked = Backend { name: backend.name.clone(), instances: to_mark };
        let command = Command::HealthDown(backend.name.clone(), server.clone());
        Ok(self.change_everywhere(&marked, server, command, |_| None).await?)
    }

    async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        // Ended sessions cannot be put back: nothing to undo.
        let command = Command::ShutdownSessions(backend.name.clone(), server.clone());
        Ok(self.change_everywhere(backend, server, command, |_| None).await?)
    }

    async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError> {
        let reads = instances(backend)?.iter().map(|instance| {
            task(async move {
                let (row, stat) = tokio::join!(
                    self.state_row(instance, backend, server),
                    self.stat_row(instance, backend, server)
                );
                Ok::<_, HaproxyError>(instance_state(instance, &row?, &stat?))
            })
        });
        Ok(join_all(reads).await.into_iter().collect::<Result<_, _>>()?)
    }

    /// One `show servers state` and one `show stat` of the whole backend per instance, all at
    /// once; a server one instance lacks is listed with the others.
    async fn servers(&self, backend: &Backend) -> Result<Vec<ServerState>, PortError> {
        let reads = instances(backend)?.iter().map(|instance| task(self.backend_on(instance, backend)));
        let mut readings = Vec::new();
        for seen in join_all(reads).await {
            readings.extend(seen?);
        }
        Ok(ServerState::gather(readings))
    }

    /// `set server <b>/<s> weight <n>` and `set server <b>/<s> state <state>` on each listed
    /// instance; when one fails, the instances that changed get their weight (`srv_uweight`)
    /// and runtime state back as read before.
    async fn restore(
        &self,
        backend: &Backend,
        server: &ServerName,
        to: &[InstanceState],
    ) -> Result<(), PortError> {
        check_restore(backend, server, to)?;
        self.forget_marks(backend, server);
        if to.is_empty() {
            return Ok(());
        }
        let reads = to.iter().map(|state| task(self.state_row(&state.instance, backend, server)));
        let before: Vec<ServerRow> = join_all(reads).await.into_iter().collect::<Result<_, _>>()?;
        let changes = to.iter().map(|state| task(self.restore_on(backend, server, state)));
        let outcomes = join_all(changes).await;
        let mut cause = None;
        let mut changed = Vec::new();
        for ((state, row), outcome) in to.iter().zip(&before).zip(outcomes) {
            match outcome {
                Ok(()) => changed.push((&state.instance, row)),
                Err((e, may_have_applied)) => {
                    if may_have_applied {
                        changed.push((&state.instance, row));
                    }
                    cause.get_or_insert(e);
                }
            }
        }
        let Some(cause) = cause else { return Ok(()) };
        let mut failures = Vec::new();
        for (instance, row) in &changed {
            let undo = [
                Command::SetWeightAbsolute(backend.name.clone(), server.clone(), row.weight),
                Command::SetState(backend.name.clone(), server.clone(), row.admin_state()),
            ];
            for command in &undo {
                if let Err(e) = self.change(instance, command).await {
                    failures.push(format!("`{command}` on {instance}: {e}"));
                }
            }
        }
        tracing::warn!(%cause, put_back = changed.len(), "haproxy restore failed; instances already changed put back");
        if failures.is_empty() {
            Err(cause.into())
        } else {
            Err(HaproxyError::RollbackFailed { cause: Box::new(cause), failures: failures.join("; ") }.into())
        }
    }

    /// Polls only the server's `show stat` row (one round trip per instance) until `scur` is 0
    /// on every instance. Then records each instance's `chkdown` for `mark_down`.
    async fn wait_drained(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        let outcome = self
            .poll_stat(
                backend,
                server,
                timeout,
                |row| row.sessions == 0,
                |instance, row| format!("{} sessions on {instance}", row.sessions),
            )
            .await?;
        let rows = outcome.map_err(|left| {
            PortError::timeout(format!("drain of {}/{server} ({left} left)", backend.name), timeout)
        })?;
        let mut marks = self.marks();
        for (instance, row) in backend.instances.iter().zip(rows) {
            let key = (instance.clone(), backend.name.clone(), server.clone());
            match row.chkdown {
                Some(count) => marks.insert(key, count),
                None => marks.remove(&key),
            };
        }
        Ok(())
    }

    /// Polls the server's `show stat` row until every instance reports plain `UP` (or `no check`). HAProxy puts
    /// a server that leaves maintenance at `UP n/m` before any check has run, so the plain
    /// `UP` this waits for is proof of passing checks (unless the server has `fall 1`).
    async fn wait_up(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        let outcome = self
            .poll_stat(
                backend,
                server,
                timeout,
                |row| row.status.proven_up(),
                |instance, row| format!("{} on {instance}", row.status.raw),
            )
            .await?;
        outcome.map(drop).map_err(|left| {
            PortError::timeout(format!("wait for {}/{server} to be UP (still {left})", backend.name), timeout)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::name::BackendName;

    fn row(name: &str, address: &str, fqdn: Option<&str>) -> ServerRow {
        ServerRow {
            name: name.into(),
            address: address.into(),
            fqdn: fqdn.map(Into::into),
            admin_bits: 0,
            operational: vesemir_core::ports::Operational::Up,
            weight: 1,
            configured_weight: 1,
        }
    }

    fn backend() -> Backend {
        Backend { name: BackendName::new("be").unwrap(), instances: vec![instance()] }
    }

    fn instance() -> LbEndpoint {
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 1 }
    }

    #[test]
    fn addresses_match_as_ips_or_dns_names() {
        assert!(has_address(&row("a", "::1", None), "0:0:0:0:0:0:0:1"));
        assert!(has_address(&row("a", "10.0.0.1", Some("web-01.example.com")), "WEB-01.example.com"));
        assert!(!has_address(&row("a", "10.0.0.1", None), "10.0.0.10"));
    }

    #[test]
    fn a_server_name_from_a_reply_is_validated_before_use() {
        for bad in ["web;shutdown", "web\u{b}x", &"w".repeat(65)] {
            let rows = [row(bad, "10.0.0.1", None)];
            let lookup = ServerLookup::Address("10.0.0.1".into());
            let error = find_server(&instance(), &backend(), &rows, &lookup).expect_err(bad);
            assert!(matches!(error, HaproxyError::BadName { .. }), "{bad:?}: {error:?}");
        }
    }

    #[test]
    fn an_address_shared_by_two_servers_is_ambiguous() {
        let rows = [row("a", "10.0.0.1", None), row("b", "10.0.0.1", None)];
        let error = find_server(&instance(), &backend(), &rows, &ServerLookup::Address("10.0.0.1".into()))
            .expect_err("ambiguous");
        assert!(matches!(error, HaproxyError::AmbiguousAddress { .. }), "{error:?}");
    }

    #[test]
    fn no_instances_is_an_error() {
        let empty = Backend { name: BackendName::new("be").unwrap(), instances: vec![] };
        assert!(matches!(instances(&empty), Err(HaproxyError::NoInstances { .. })));
    }
}
