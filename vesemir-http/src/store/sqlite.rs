//! The SQLite store: one file, WAL journal, migrations applied in order at open. Commits are
//! `synchronous = NORMAL` (durable against a crash of the process, not of the machine), except
//! deployment journal entries, committed with `synchronous = FULL` (the WAL is synced before the
//! commit returns), because a load balancer change follows each one.
//!
//! One server per file: leases and fencing work as on PostgreSQL (the conformance suite checks
//! both), but a lease held by another instance is taken for a dead one's at startup
//! ([`Store::interrupt_unfinished`]), since no two servers share a file.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use vesemir_core::journal::JournalEntry;
use vesemir_core::name::HostName;
use vesemir_core::{Event, HostProgress};

use super::codec::{
    decode_hosts, encode_hosts, from_millis, from_text, hosts_left_by_journal, hosts_out_of_rotation,
    lost_leases, millis, to_text, STOPPED,
};
use super::vm_codec::{
    from_json, list_limit, reservation, reserve_error, to_json, to_json_opt, vm_row, ReservationColumns,
    VmColumns, HOLDING, RESERVATION_COLUMNS, RUNNING, VM_COLUMNS,
};
use super::vms::{NewVm, VmFilter, VmInserted, VmRow, VmStatus, VmUpdate};
use super::{
    DeploymentRecord, Finish, HostRecord, Inserted, InstanceId, Interrupted, ListFilter, NewDeployment,
    Origin, Renewal, SignInAttempt, SignInFailures, SignInKey, Status, Store, StoreError, StoreOptions,
    WebSession,
};
use super::{HookDelivery, HookRecorded, HookState, NewHookDelivery, NotificationAttempt, SourceState};
use super::{PromotionStatus, PromotionWait};
use vesemir_core::provision::{ProvisionEvent, Reservation, ReservationRequest, ReserveError, VmName};

/// The schema, one migration per entry, applied in order and recorded in `schema_migrations`.
/// Never edit a shipped entry: add a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    application TEXT NOT NULL,
    environment TEXT NOT NULL,
    team TEXT NOT NULL,
    version TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    playbook TEXT,
    query TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    host_count INTEGER,
    totals TEXT,
    out_of_rotation TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    body_sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER
);
CREATE UNIQUE INDEX deployments_idempotency ON deployments (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX deployments_app_env ON deployments (application, environment, id);
CREATE INDEX deployments_team ON deployments (team, id);
CREATE INDEX deployments_status ON deployments (status, id);
CREATE TABLE deployment_hosts (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    server TEXT NOT NULL,
    outcome TEXT,
    phase TEXT NOT NULL,
    error TEXT,
    rotation TEXT NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    PRIMARY KEY (deployment_id, name)
);
CREATE TABLE events (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE deployment_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    body TEXT NOT NULL
);
CREATE INDEX deployment_journal_deployment ON deployment_journal (deployment_id, id);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE deployment_origin (
    deployment_id INTEGER PRIMARY KEY REFERENCES deployments (id),
    retry_of INTEGER,
    rollback_of INTEGER,
    only_hosts TEXT,
    resume INTEGER,
    then_hosts TEXT
);
"#,
    ),
    (
        4,
        r#"
ALTER TABLE deployments ADD COLUMN lease_owner TEXT;
ALTER TABLE deployments ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN lease_expires_ms INTEGER;
CREATE UNIQUE INDEX deployments_one_active ON deployments (application, environment)
    WHERE status IN ('queued', 'running');
"#,
    ),
    (
        5,
        r#"
-- Web sessions (issue 17: directory sign-in).
CREATE TABLE web_sessions (
    id_sha256 TEXT PRIMARY KEY,
    csrf TEXT NOT NULL,
    name TEXT NOT NULL,
    teams TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_ms);
"#,
    ),
    (
        6,
        r#"
CREATE TABLE hook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hook TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    deployment_id INTEGER REFERENCES deployments (id),
    error TEXT,
    received_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX hook_deliveries_id ON hook_deliveries (hook, delivery_id);
CREATE UNIQUE INDEX hook_deliveries_body ON hook_deliveries (hook, body_sha256);
CREATE INDEX hook_deliveries_waiting ON hook_deliveries (hook, state, seq);
CREATE TABLE deployment_promotion (
    deployment_id INTEGER PRIMARY KEY REFERENCES deployments (id),
    promoted_from INTEGER NOT NULL REFERENCES deployments (id)
);
CREATE INDEX deployment_promotion_from ON deployment_promotion (promoted_from);
CREATE TABLE notification_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    target TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX notification_deliveries_deployment ON notification_deliveries (deployment_id, seq);
"#,
    ),
    (
        7,
        r#"
-- Failed sign-ins (issue 17: attempt limits shared by every instance on one database).
CREATE TABLE sign_in_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX sign_in_failures_key ON sign_in_failures (subject, at_ms);
CREATE INDEX sign_in_failures_at ON sign_in_failures (at_ms);
"#,
    ),
    (
        8,
        r#"
-- Issue 18: what each unit's package source watcher last found (vesemir-http/src/source.rs).
CREATE TABLE source_state (
    unit TEXT PRIMARY KEY,
    index_url TEXT NOT NULL,
    package TEXT NOT NULL,
    seen_version TEXT,
    etag TEXT,
    last_modified TEXT,
    checked_ms INTEGER NOT NULL,
    error TEXT
);
"#,
    ),
    (
        9,
        r#"
-- Issue 18: promotions that wait for a person's confirmation (promote_confirm).
CREATE TABLE promotion_waits (
    deployment_id INTEGER PRIMARY KEY REFERENCES deployments (id),
    to_application TEXT NOT NULL,
    to_environment TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    decided_by TEXT,
    decided_ms INTEGER
);
CREATE INDEX promotion_waits_status ON promotion_waits (status, deployment_id);
"#,
    ),
    (
        10,
        r#"
-- Issue 19: the VMs the server provisions (store/vms.rs), their events, and the addresses and
-- hypervisor slots reserved for them.
CREATE TABLE vms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    team TEXT NOT NULL,
    flavor TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    placement TEXT,
    record TEXT,
    outcome TEXT,
    instance TEXT NOT NULL
);
CREATE UNIQUE INDEX vms_one_holding_name ON vms (name)
    WHERE status IN ('creating', 'ready', 'destroying', 'interrupted');
CREATE INDEX vms_name ON vms (name, id);
CREATE INDEX vms_owner ON vms (owner, id);
CREATE INDEX vms_team ON vms (team, id);
CREATE INDEX vms_status ON vms (status, id);
CREATE TABLE vm_events (
    vm_id INTEGER NOT NULL REFERENCES vms (id),
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vm_id, seq)
);
CREATE TABLE vm_reservations (
    vm TEXT PRIMARY KEY,
    hypervisor TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    size TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"#,
    ),
];

const COLUMNS: &str = "id, application, environment, team, version, requested_by, playbook, query, request, \
     status, error, host_count, totals, out_of_rotation, cancel_requested, idempotency_key, body_sha256, \
     created_ms, started_ms, finished_ms, lease_owner";

/// Deployments in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    options: StoreOptions,
    /// Deployments this instance holds, by id, with their lease epoch.
    held: Arc<Mutex<HashMap<i64, i64>>>,
}

fn err(context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::new(context, e)
}

impl SqliteStore {
    /// Changes VM `id` as `update` says, only while its status is `from` when given: whether
    /// a row changed.
    async fn update_vm_where(
        &self,
        id: i64,
        from: Option<VmStatus>,
        update: &VmUpdate,
    ) -> Result<bool, StoreError> {
        let context = "updating a VM";
        let done = sqlx::query(
            "UPDATE vms SET status = ?, placement = COALESCE(?, placement), record = COALESCE(?, record), \
             outcome = COALESCE(?, outcome), finished_ms = COALESCE(?, finished_ms), instance = ? \
             WHERE id = ? AND (? IS NULL OR status = ?)",
        )
        .bind(update.status.as_str())
        .bind(to_json_opt(update.placement.as_ref(), context)?)
        .bind(to_json_opt(update.record.as_ref(), context)?)
        .bind(to_json_opt(update.outcome.as_ref(), context)?)
        .bind(update.finished_ms)
        .bind(self.options.instance.as_str())
        .bind(id)
        .bind(from.map(VmStatus::as_str))
        .bind(from.map(VmStatus::as_str))
        .execute(&self.pool)
        .await
        .map_err(err(context))?;
        Ok(done.rows_affected() > 0)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies pending migrations,
    /// as an instance named after this machine with the default lease.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default()).await
    }

    /// Like [`SqliteStore::open`], as `options.instance` with leases of `options.lease`.
    pub async fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str("sqlite://")
            .map_err(err("parsing options"))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::new(format!("opening {}", path.display()), e))?;
        let store = Self { pool, options, held: Arc::default() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(err("creating schema_migrations"))?;
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(err("reading schema_migrations"))?;
        super::refuse_newer_schema(newest, MIGRATIONS)?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await.map_err(err("starting a migration"))?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err("reading schema_migrations"))?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::new(format!("applying migration {version}"), e))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)")
                .bind(version)
                .bind(crate::clock::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(err("recording a migration"))?;
            tx.commit().await.map_err(err("committing a migration"))?;
        }
        Ok(())
    }

    /// A write transaction that takes the database's write lock at once (waiting up to the busy
    /// timeout): its lease check and its writes then see the same state, where a deferred one
    /// could fail at its first write when another connection wrote after its check.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        // Only plain map updates happen under this lock; a poisoned lock still holds a usable map.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_ms(&self) -> i64 {
        millis(self.options.lease)
    }

    /// Fails unless this instance may write about deployment `id` now: it holds its lease (same
    /// epoch, not expired), or, holding none, no live lease exists. Run inside the write's
    /// transaction.
    async fn check_lease(
        &self,
        conn: &mut sqlx::SqliteConnection,
        id: i64,
        context: &str,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT lease_owner, lease_epoch, lease_expires_ms IS NOT NULL AND lease_expires_ms > ? AS live \
             FROM deployments WHERE id = ?",
        )
        .bind(crate::clock::now_ms())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("reading a lease"))?;
        let Some(row) = row else {
            return Err(StoreError::new(context, format!("no deployment {id}")));
        };
        let owner: Option<String> = row.try_get("lease_owner").map_err(err("reading a lease"))?;
        let epoch: i64 = row.try_get("lease_epoch").map_err(err("reading a lease"))?;
        let live: bool = row.try_get("live").map_err(err("reading a lease"))?;
        let held = self.held().get(&id).copied();
        let allowed = match held {
            Some(mine) => live && epoch == mine && owner.as_deref() == Some(self.options.instance.as_str()),
            None => !live,
        };
        if allowed {
            Ok(())
        } else {
            Err(StoreError::lease_lost(context, id))
        }
    }

    async fn insert_once(&self, d: &NewDeployment) -> Result<Option<Inserted>, StoreError> {
        let now = crate::clock::now_ms();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO deployments (application, environment, team, version, requested_by, playbook, query, \
             request, status, idempotency_key, body_sha256, created_ms, lease_owner, lease_epoch, lease_expires_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, 1, ?) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&d.application)
        .bind(&d.environment)
        .bind(&d.team)
        .bind(&d.version)
        .bind(&d.requested_by)
        .bind(&d.playbook)
        .bind(&d.query)
        .bind(&d.request)
        .bind(&d.idempotency_key)
        .bind(&d.body_sha256)
        .bind(d.created_ms)
        .bind(self.options.instance.as_str())
        .bind(now.saturating_add(self.lease_ms()))
        .fetch_optional(&self.pool)
        .await
        .map_err(err("inserting a deployment"))?;
        if let Some(id) = id {
            self.held().insert(id, 1);
            return Ok(Some(Inserted::New(id)));
        }
        // A unique index refused it: the idempotency key, or another active deployment.
        if let Some(key) = &d.idempotency_key {
            if let Some(existing) = self.by_idempotency_key(&d.requested_by, key).await? {
                return Ok(Some(Inserted::Existing(Box::new(existing))));
            }
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM deployments WHERE application = ? AND environment = ? \
             AND status IN ('queued', 'running')"
        ))
        .bind(&d.application)
        .bind(&d.environment)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading the active deployment"))?;
        // None: the one in the way ended meanwhile; the caller tries again.
        row.as_ref().map(deployment).transpose().map(|d| d.map(|d| Inserted::Conflict(Box::new(d))))
    }
}

fn deployment(row: &SqliteRow) -> Result<DeploymentRecord, StoreError> {
    let status: String = row.try_get("status").map_err(err("reading status"))?;
    let status = Status::parse(&status)
        .ok_or_else(|| StoreError::new("reading status", format!("unknown status {status:?}")))?;
    let out: String = row.try_get("out_of_rotation").map_err(err("reading out_of_rotation"))?;
    let out_of_rotation =
        serde_json::from_str(&out).map_err(|e| StoreError::new("reading out_of_rotation", e))?;
    let totals: Option<String> = row.try_get("totals").map_err(err("reading totals"))?;
    let totals = totals
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::new("reading totals", e))?;
    let get = |e| StoreError::new("reading a deployment", e);
    Ok(DeploymentRecord {
        id: row.try_get("id").map_err(get)?,
        application: row.try_get("application").map_err(get)?,
        environment: row.try_get("environment").map_err(get)?,
        team: row.try_get("team").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        requested_by: row.try_get("requested_by").map_err(get)?,
        playbook: row.try_get("playbook").map_err(get)?,
        query: row.try_get("query").map_err(get)?,
        request: row.try_get("request").map_err(get)?,
        status,
        error: row.try_get("error").map_err(get)?,
        host_count: row.try_get("host_count").map_err(get)?,
        totals,
        out_of_rotation,
        cancel_requested: row.try_get::<i64, _>("cancel_requested").map_err(get)? != 0,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        body_sha256: row.try_get("body_sha256").map_err(get)?,
        created_ms: row.try_get("created_ms").map_err(get)?,
        started_ms: row.try_get("started_ms").map_err(get)?,
        finished_ms: row.try_get("finished_ms").map_err(get)?,
        instance: row.try_get("lease_owner").map_err(get)?,
        pause_requested: false,
    })
}

fn host(row: &SqliteRow) -> Result<HostRecord, StoreError> {
    let get = |e| StoreError::new("reading a host", e);
    let name: String = row.try_get("name").map_err(get)?;
    let phase: String = row.try_get("phase").map_err(get)?;
    let outcome: Option<String> = row.try_get("outcome").map_err(get)?;
    let rotation: String = row.try_get("rotation").map_err(get)?;
    let started: Option<i64> = row.try_get("started_ms").map_err(get)?;
    let finished: Option<i64> = row.try_get("finished_ms").map_err(get)?;
    let state = HostProgress {
        name: HostName::new(&name).map_err(|e| StoreError::new("reading a host's name", e))?,
        phase: crate::phase_text::parse(&phase)
            .ok_or_else(|| StoreError::new("reading a host's phase", format!("unknown phase {phase:?}")))?,
        outcome: outcome.as_deref().map(from_text).transpose()?,
        error: row.try_get("error").map_err(get)?,
        rotation: from_text(&rotation)?,
        started: started.map(from_millis),
        finished: finished.map(from_millis),
    };
    Ok(HostRecord {
        position: row.try_get("position").map_err(get)?,
        address: row.try_get("address").map_err(get)?,
        server: row.try_get("server").map_err(get)?,
        state,
    })
}

/// Writes a host's state into its row.
async fn write_host(conn: &mut sqlx::SqliteConnection, id: i64, h: &HostRecord) -> Result<(), StoreError> {
    let state = &h.state;
    sqlx::query(
        "UPDATE deployment_hosts SET outcome = ?, phase = ?, error = ?, rotation = ?, started_ms = ?, \
         finished_ms = ? WHERE deployment_id = ? AND name = ?",
    )
    .bind(state.outcome.as_ref().map(to_text).transpose()?)
    .bind(state.phase.to_string())
    .bind(&state.error)
    .bind(to_text(&state.rotation)?)
    .bind(state.started.map(millis))
    .bind(state.finished.map(millis))
    .bind(id)
    .bind(state.name.as_str())
    .execute(&mut *conn)
    .await
    .map_err(err("updating a host"))?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert(&self, d: &NewDeployment) -> Result<Inserted, StoreError> {
        // A conflict that ends between the refused insert and the read is tried again.
        for _ in 0..3 {
            if let Some(inserted) = self.insert_once(d).await? {
                return Ok(inserted);
            }
        }
        Err(StoreError::new("inserting a deployment", "refused by a unique index, but nothing is in the way"))
    }

    async fn get(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM deployments WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("reading a deployment"))?;
        row.as_ref().map(deployment).transpose()
    }

    async fn by_idempotency_key(
        &self,
        requested_by: &str,
        key: &str,
    ) -> Result<Option<DeploymentRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM deployments WHERE requested_by = ? AND idempotency_key = ?"
        ))
        .bind(requested_by)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("looking up an idempotency key"))?;
        row.as_ref().map(deployment).transpose()
    }

    async fn hosts(&self, id: i64) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, name, address, server, outcome, phase, error, rotation, started_ms, finished_ms \
             FROM deployment_hosts WHERE deployment_id = ? ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading hosts"))?;
        rows.iter().map(host).collect()
    }

    async fn list(&self, f: &ListFilter) -> Result<Vec<DeploymentRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM deployments WHERE 1 = 1");
        if f.application.is_some() {
            sql.push_str(" AND application = ?");
        }
        if f.environment.is_some() {
            sql.push_str(" AND environment = ?");
        }
        if f.team.is_some() {
            sql.push_str(" AND team = ?");
        }
        if f.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if f.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let mut query = sqlx::query(&sql);
        for value in [&f.application, &f.environment, &f.team].into_iter().flatten() {
            query = query.bind(value);
        }
        if let Some(status) = f.status {
            query = query.bind(status.as_str());
        }
        if let Some(before) = f.before {
            query = query.bind(before);
        }
        let rows = query.bind(f.limit).fetch_all(&self.pool).await.map_err(err("listing deployments"))?;
        rows.iter().map(deployment).collect()
    }

    async fn mark_running(&self, id: i64, started_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await.map_err(err("starting to mark a deployment running"))?;
        self.check_lease(&mut tx, id, "marking a deployment running").await?;
        sqlx::query("UPDATE deployments SET status = 'running', started_ms = ? WHERE id = ?")
            .bind(started_ms)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("marking a deployment running"))?;
        tx.commit().await.map_err(err("committing a deployment running"))
    }

    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError> {
        let mut tx = self.write().await.map_err(err("starting to record a plan"))?;
        self.check_lease(&mut tx, id, "recording a plan").await?;
        for h in hosts {
            sqlx::query(
                "INSERT OR REPLACE INTO deployment_hosts (deployment_id, position, name, address, server, outcome, \
                 phase, error, rotation, started_ms, finished_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(h.position)
            .bind(h.state.name.as_str())
            .bind(&h.address)
            .bind(&h.server)
            .bind(h.state.outcome.as_ref().map(to_text).transpose()?)
            .bind(h.state.phase.to_string())
            .bind(&h.state.error)
            .bind(to_text(&h.state.rotation)?)
            .bind(h.state.started.map(millis))
            .bind(h.state.finished.map(millis))
            .execute(&mut *tx)
            .await
            .map_err(err("recording a planned host"))?;
        }
        sqlx::query("UPDATE deployments SET host_count = ? WHERE id = ?")
            .bind(i64::try_from(hosts.len()).unwrap_or(i64::MAX))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("recording the host count"))?;
        tx.commit().await.map_err(err("committing a plan"))
    }

    async fn mark_cancel_requested(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET cancel_requested = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err("recording a cancel"))?;
        Ok(())
    }

    async fn append_events(&self, id: i64, events: &[Event], hosts: &[HostRecord]) -> Result<(), StoreError> {
        let mut tx = self.write().await.map_err(err("starting to append events"))?;
        self.check_lease(&mut tx, id, "appending events").await?;
        for event in events {
            let body = serde_json::to_string(event).map_err(|e| StoreError::new("encoding an event", e))?;
            sqlx::query("INSERT INTO events (deployment_id, seq, body) VALUES (?, ?, ?)")
                .bind(id)
                .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
                .bind(body)
                .execute(&mut *tx)
                .await
                .map_err(err("appending an event"))?;
        }
        for h in hosts {
            write_host(&mut tx, id, h).await?;
        }
        tx.commit().await.map_err(err("committing events"))
    }

    async fn events_after(&self, id: i64, after: u64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM events WHERE deployment_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading events"))?;
        rows.iter()
            .map(|body| serde_json::from_str(body).map_err(|e| StoreError::new("decoding a stored event", e)))
            .collect()
    }

    async fn finish(&self, id: i64, f: &Finish) -> Result<(), StoreError> {
        let totals = f
            .totals
            .map(|t| serde_json::to_string(&t))
            .transpose()
            .map_err(|e| StoreError::new("encoding totals", e))?;
        let out =
            serde_json::to_string(&f.out_of_rotation).map_err(|e| StoreError::new("encoding hosts", e))?;
        let mut tx = self.write().await.map_err(err("starting to finish"))?;
        self.check_lease(&mut tx, id, "finishing a deployment").await?;
        sqlx::query(
            "UPDATE deployments SET status = ?, error = ?, totals = ?, out_of_rotation = ?, finished_ms = ?, \
             lease_expires_ms = NULL WHERE id = ?",
        )
        .bind(f.status.as_str())
        .bind(&f.error)
        .bind(totals)
        .bind(out)
        .bind(f.finished_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(err("finishing a deployment"))?;
        for h in &f.hosts {
            write_host(&mut tx, id, h).await?;
        }
        tx.commit().await.map_err(err("committing a finish"))?;
        self.held().remove(&id);
        Ok(())
    }

    async fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Interrupted>, StoreError> {
        // One server per file: every lease but this instance's live ones is a dead server's.
        let not_mine = "status IN ('queued', 'running') AND NOT (lease_owner IS ? AND COALESCE(lease_expires_ms, 0) > ?)";
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM deployments WHERE {not_mine} ORDER BY id"))
            .bind(self.options.instance.as_str())
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(err("finding unfinished deployments"))?;
        let mut interrupted = Vec::new();
        for row in &rows {
            let d = deployment(row)?;
            let out = match hosts_left_by_journal(&self.journal(d.id).await?) {
                Some(out) => out,
                None => hosts_out_of_rotation(&self.events_after(d.id, 0, i64::MAX).await?),
            };
            let encoded = serde_json::to_string(&out).map_err(|e| StoreError::new("encoding hosts", e))?;
            let done = sqlx::query(&format!(
                "UPDATE deployments SET status = 'interrupted', out_of_rotation = ?, finished_ms = ?, error = ?, \
                 lease_expires_ms = NULL WHERE id = ? AND {not_mine}"
            ))
            .bind(encoded)
            .bind(now_ms)
            .bind(STOPPED)
            .bind(d.id)
            .bind(self.options.instance.as_str())
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(err("marking a deployment interrupted"))?;
            if done.rows_affected() == 0 {
                continue;
            }
            interrupted.push(Interrupted {
                id: d.id,
                application: d.application,
                environment: d.environment,
                team: d.team,
                out_of_rotation: out,
            });
        }
        Ok(interrupted)
    }

    async fn append_journal(&self, id: i64, entry: &JournalEntry) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(entry).map_err(|e| StoreError::new("encoding a journal entry", e))?;
        let mut conn = self.pool.acquire().await.map_err(err("connecting"))?;
        // FULL syncs the WAL at this commit; the connection goes back to the pool at NORMAL, or
        // is closed when that cannot be set.
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
            .map_err(err("making the journal's commit durable"))?;
        let inserted = self.append_journal_on(&mut conn, id, body).await;
        if sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await.is_err() {
            conn.close_on_drop();
        }
        inserted
    }

    async fn journal(&self, id: i64) -> Result<Vec<JournalEntry>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body FROM deployment_journal WHERE deployment_id = ? ORDER BY id")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(err("reading the journal"))?;
        rows.iter()
            .map(|body| {
                serde_json::from_str(body).map_err(|e| StoreError::new("decoding a journal entry", e))
            })
            .collect()
    }

    async fn set_out_of_rotation(&self, id: i64, hosts: &[String]) -> Result<(), StoreError> {
        let encoded = serde_json::to_string(hosts).map_err(|e| StoreError::new("encoding hosts", e))?;
        let mut tx = self.write().await.map_err(err("starting to record hosts out of rotation"))?;
        self.check_lease(&mut tx, id, "recording hosts out of rotation").await?;
        sqlx::query("UPDATE deployments SET out_of_rotation = ? WHERE id = ?")
            .bind(encoded)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("recording hosts out of rotation"))?;
        tx.commit().await.map_err(err("committing hosts out of rotation"))
    }

    async fn set_origin(&self, id: i64, origin: &Origin) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO deployment_origin (deployment_id, retry_of, rollback_of, only_hosts, resume, then_hosts) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(origin.retry_of)
        .bind(origin.rollback_of)
        .bind(encode_hosts(origin.only_hosts.as_deref())?)
        .bind(origin.resume)
        .bind(encode_hosts(origin.then_hosts.as_deref())?)
        .execute(&self.pool)
        .await
        .map_err(err("recording a deployment's origin"))?;
        Ok(())
    }

    async fn origin(&self, id: i64) -> Result<Option<Origin>, StoreError> {
        type Row = (Option<i64>, Option<i64>, Option<String>, Option<i64>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT retry_of, rollback_of, only_hosts, resume, then_hosts FROM deployment_origin WHERE deployment_id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a deployment's origin"))?;
        let Some((retry_of, rollback_of, only, resume, then)) = row else { return Ok(None) };
        Ok(Some(Origin {
            retry_of,
            rollback_of,
            only_hosts: decode_hosts(only.as_deref())?,
            resume,
            then_hosts: decode_hosts(then.as_deref())?,
        }))
    }

    async fn set_error(&self, id: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET error = ? WHERE id = ?")
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err("recording an error"))?;
        Ok(())
    }

    async fn prune_events(&self, ended_before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM events WHERE deployment_id IN (SELECT id FROM deployments \
             WHERE status NOT IN ('queued', 'running') AND finished_ms IS NOT NULL AND finished_ms < ?)",
        )
        .bind(ended_before_ms)
        .execute(&self.pool)
        .await
        .map_err(err("pruning events"))?;
        Ok(done.rows_affected())
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM deployments GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(err("counting deployments"))?;
        Ok(super::counts_from(rows))
    }

    // ---- Web sessions (issue 17: directory sign-in) ----

    async fn create_session(&self, session: &WebSession) -> Result<(), StoreError> {
        let (teams, roles) = super::session_roles_json(session)?;
        sqlx::query(
            "INSERT INTO web_sessions (id_sha256, csrf, name, teams, roles, created_ms, expires_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id_sha256)
        .bind(&session.csrf)
        .bind(&session.name)
        .bind(teams)
        .bind(roles)
        .bind(session.created_ms)
        .bind(session.expires_ms)
        .execute(&self.pool)
        .await
        .map_err(err("creating a session"))?;
        Ok(())
    }

    async fn session(&self, id_sha256: &str, now_ms: i64) -> Result<Option<WebSession>, StoreError> {
        let row = sqlx::query(
            "SELECT id_sha256, csrf, name, teams, roles, created_ms, expires_ms FROM web_sessions \
             WHERE id_sha256 = ? AND revoked_ms IS NULL AND expires_ms > ?",
        )
        .bind(id_sha256)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a session"))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| StoreError::new("reading a session", e);
        let session = super::session_from_columns(
            row.try_get("id_sha256").map_err(get)?,
            row.try_get("csrf").map_err(get)?,
            row.try_get("name").map_err(get)?,
            &row.try_get::<String, _>("teams").map_err(get)?,
            &row.try_get::<String, _>("roles").map_err(get)?,
            row.try_get("created_ms").map_err(get)?,
            row.try_get("expires_ms").map_err(get)?,
        )?;
        Ok(Some(session))
    }

    async fn revoke_session(&self, id_sha256: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE web_sessions SET revoked_ms = ? WHERE id_sha256 = ? AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(id_sha256)
            .execute(&self.pool)
            .await
            .map_err(err("revoking a session"))?;
        Ok(())
    }

    async fn prune_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_ms < ? OR revoked_ms < ?")
            .bind(before_ms)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(err("pruning sessions"))?;
        Ok(done.rows_affected())
    }

    // ---- Failed sign-ins (issue 17: attempt limits shared by every instance) ----

    async fn take_sign_in_attempt(
        &self,
        limits: &[(SignInKey, u32)],
        since_ms: i64,
        at_ms: i64,
    ) -> Result<SignInAttempt, StoreError> {
        let context = "counting a sign-in attempt";
        // The database's write lock at once: no other attempt counts between the counts and
        // the inserts.
        let mut tx = self.write().await.map_err(err(context))?;
        let mut limited = Vec::new();
        for (key, limit) in limits {
            let (count, oldest_ms): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(at_ms) FROM sign_in_failures WHERE subject = ? AND at_ms >= ?",
            )
            .bind(key.as_column())
            .bind(since_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(err(context))?;
            let failures = SignInFailures { count: u64::try_from(count).unwrap_or(0), oldest_ms };
            if failures.count >= u64::from(*limit) {
                limited.push(failures);
            }
        }
        if !limited.is_empty() {
            return Ok(SignInAttempt::Limited(limited));
        }
        let mut rows = Vec::new();
        for (key, _) in limits {
            let row: i64 = sqlx::query_scalar(
                "INSERT INTO sign_in_failures (subject, at_ms) VALUES (?, ?) RETURNING id",
            )
            .bind(key.as_column())
            .bind(at_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(err(context))?;
            rows.push(row);
        }
        tx.commit().await.map_err(err(context))?;
        Ok(SignInAttempt::Taken(rows))
    }

    async fn forgive_sign_in_attempt(&self, rows: &[i64]) -> Result<(), StoreError> {
        for row in rows {
            sqlx::query("DELETE FROM sign_in_failures WHERE id = ?")
                .bind(row)
                .execute(&self.pool)
                .await
                .map_err(err("forgiving a sign-in attempt"))?;
        }
        Ok(())
    }

    async fn sign_in_failures(&self, key: &SignInKey, since_ms: i64) -> Result<SignInFailures, StoreError> {
        let (count, oldest_ms): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(at_ms) FROM sign_in_failures WHERE subject = ? AND at_ms >= ?",
        )
        .bind(key.as_column())
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(err("reading failed sign-ins"))?;
        Ok(SignInFailures { count: u64::try_from(count).unwrap_or(0), oldest_ms })
    }

    async fn clear_sign_in_failures(&self, key: &SignInKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sign_in_failures WHERE subject = ?")
            .bind(key.as_column())
            .execute(&self.pool)
            .await
            .map_err(err("forgetting failed sign-ins"))?;
        Ok(())
    }

    async fn prune_sign_in_failures(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sign_in_failures WHERE at_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(err("pruning failed sign-ins"))?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("ping"))?;
        Ok(())
    }

    fn instance(&self) -> &InstanceId {
        &self.options.instance
    }

    fn lease(&self) -> Duration {
        self.options.lease
    }

    fn release_lease(&self, id: i64) {
        self.held().remove(&id);
    }

    async fn renew_leases(&self) -> Result<Renewal, StoreError> {
        let held: Vec<(i64, i64)> = self.held().iter().map(|(id, epoch)| (*id, *epoch)).collect();
        if held.is_empty() {
            return Ok(Renewal::default());
        }
        let now = crate::clock::now_ms();
        let rows = sqlx::query(
            "UPDATE deployments SET lease_expires_ms = ? WHERE lease_owner = ? AND lease_expires_ms > ? \
             AND status IN ('queued', 'running') RETURNING id, lease_epoch, cancel_requested",
        )
        .bind(now.saturating_add(self.lease_ms()))
        .bind(self.options.instance.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(err("renewing leases"))?;
        let renewed = rows
            .iter()
            .map(|row| {
                let get = |e| StoreError::new("reading a renewed lease", e);
                let cancel: i64 = row.try_get("cancel_requested").map_err(get)?;
                Ok((row.try_get("id").map_err(get)?, row.try_get("lease_epoch").map_err(get)?, cancel != 0))
            })
            .collect::<Result<Vec<(i64, i64, bool)>, StoreError>>()?;
        let lost = lost_leases(&held, &renewed);
        let mut map = self.held();
        for id in &lost {
            map.remove(id);
        }
        let held = renewed
            .iter()
            .filter(|(id, epoch, _)| map.get(id) == Some(epoch))
            .map(|(id, _, cancel)| (*id, *cancel))
            .collect();
        Ok(Renewal { held, lost })
    }

    // ---- Issue 18: CI hooks and promotion ----

    async fn record_hook_delivery(&self, delivery: &NewHookDelivery) -> Result<HookRecorded, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO hook_deliveries (hook, delivery_id, body_sha256, version, state, received_ms) \
             VALUES (?, ?, ?, ?, 'waiting', ?) ON CONFLICT DO NOTHING",
        )
        .bind(&delivery.hook)
        .bind(&delivery.delivery_id)
        .bind(&delivery.body_sha256)
        .bind(&delivery.version)
        .bind(delivery.received_ms)
        .execute(&self.pool)
        .await
        .map_err(err("recording a hook delivery"))?;
        if inserted.rows_affected() == 1 {
            return Ok(HookRecorded::New);
        }
        let rows = sqlx::query(&format!(
            "SELECT {HOOK_COLUMNS} FROM hook_deliveries WHERE hook = ? AND (delivery_id = ? OR body_sha256 = ?) \
             ORDER BY CASE WHEN delivery_id = ? THEN 0 ELSE 1 END, seq LIMIT 1"
        ))
        .bind(&delivery.hook)
        .bind(&delivery.delivery_id)
        .bind(&delivery.body_sha256)
        .bind(&delivery.delivery_id)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading a hook delivery"))?;
        match rows.first() {
            Some(row) => Ok(HookRecorded::Existing(Box::new(hook_delivery(row)?))),
            None => Err(StoreError::new(
                "recording a hook delivery",
                "it conflicted with a delivery that cannot be read back",
            )),
        }
    }

    async fn set_hook_delivery(
        &self,
        hook: &str,
        delivery_id: &str,
        state: HookState,
        deployment_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hook_deliveries SET state = ?, deployment_id = ?, error = ? \
             WHERE hook = ? AND delivery_id = ?",
        )
        .bind(state.as_str())
        .bind(deployment_id)
        .bind(error)
        .bind(hook)
        .bind(delivery_id)
        .execute(&self.pool)
        .await
        .map_err(err("updating a hook delivery"))?;
        Ok(())
    }

    async fn waiting_hook_deliveries(&self, hook: &str) -> Result<Vec<HookDelivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {HOOK_COLUMNS} FROM hook_deliveries WHERE hook = ? AND state = 'waiting' ORDER BY seq"
        ))
        .bind(hook)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading waiting hook deliveries"))?;
        rows.iter().map(hook_delivery).collect()
    }

    async fn set_promoted_from(&self, id: i64, from: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO deployment_promotion (deployment_id, promoted_from) VALUES (?, ?)")
            .bind(id)
            .bind(from)
            .execute(&self.pool)
            .await
            .map_err(err("recording a promotion"))?;
        Ok(())
    }

    async fn promoted_from(&self, id: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT promoted_from FROM deployment_promotion WHERE deployment_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("reading a promotion"))
    }

    async fn promoted_to(&self, id: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT deployment_id FROM deployment_promotion WHERE promoted_from = ? ORDER BY deployment_id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a promotion"))
    }

    async fn record_notification(&self, attempt: &NotificationAttempt) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_deliveries (deployment_id, target, event, attempt, delivered, http_status, error, at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(attempt.deployment_id)
        .bind(&attempt.target)
        .bind(&attempt.event)
        .bind(attempt.attempt)
        .bind(attempt.delivered)
        .bind(attempt.http_status)
        .bind(&attempt.error)
        .bind(attempt.at_ms)
        .execute(&self.pool)
        .await
        .map_err(err("recording a notification attempt"))?;
        Ok(())
    }

    async fn notifications(&self, id: i64) -> Result<Vec<NotificationAttempt>, StoreError> {
        type Row = (i64, String, String, i64, bool, Option<i64>, Option<String>, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT deployment_id, target, event, attempt, delivered, http_status, error, at_ms \
             FROM notification_deliveries WHERE deployment_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading notification attempts"))?;
        Ok(rows
            .into_iter()
            .map(|(deployment_id, target, event, attempt, delivered, http_status, error, at_ms)| {
                NotificationAttempt {
                    deployment_id,
                    target,
                    event,
                    attempt,
                    delivered,
                    http_status,
                    error,
                    at_ms,
                }
            })
            .collect())
    }

    // ---- Issue 18: package repository sources ----

    async fn source_state(&self, unit: &str) -> Result<Option<SourceState>, StoreError> {
        let row = sqlx::query(
            "SELECT unit, index_url, package, seen_version, etag, last_modified, checked_ms, error \
             FROM source_state WHERE unit = ?",
        )
        .bind(unit)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a source's state"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| StoreError::new("reading a source's state", e);
        Ok(Some(SourceState {
            unit: row.try_get("unit").map_err(read)?,
            index_url: row.try_get("index_url").map_err(read)?,
            package: row.try_get("package").map_err(read)?,
            seen_version: row.try_get("seen_version").map_err(read)?,
            etag: row.try_get("etag").map_err(read)?,
            last_modified: row.try_get("last_modified").map_err(read)?,
            checked_ms: row.try_get("checked_ms").map_err(read)?,
            error: row.try_get("error").map_err(read)?,
        }))
    }

    async fn set_source_state(&self, state: &SourceState) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_state (unit, index_url, package, seen_version, etag, last_modified, checked_ms, error) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (unit) DO UPDATE SET index_url = excluded.index_url, \
             package = excluded.package, seen_version = excluded.seen_version, etag = excluded.etag, \
             last_modified = excluded.last_modified, checked_ms = excluded.checked_ms, error = excluded.error",
        )
        .bind(&state.unit)
        .bind(&state.index_url)
        .bind(&state.package)
        .bind(&state.seen_version)
        .bind(&state.etag)
        .bind(&state.last_modified)
        .bind(state.checked_ms)
        .bind(&state.error)
        .execute(&self.pool)
        .await
        .map_err(err("recording a source's state"))?;
        Ok(())
    }

    // ---- Issue 18: promotion by confirmation ----

    async fn record_promotion_wait(&self, wait: &PromotionWait) -> Result<bool, StoreError> {
        let mut tx = self.write().await.map_err(err("recording a promotion"))?;
        let inserted = sqlx::query(
            "INSERT INTO promotion_waits (deployment_id, to_application, to_environment, status, created_ms, expires_ms) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(wait.deployment_id)
        .bind(&wait.to_application)
        .bind(&wait.to_environment)
        .bind(wait.status.as_str())
        .bind(wait.created_ms)
        .bind(wait.expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(err("recording a promotion"))?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE promotion_waits SET status = 'superseded', decided_ms = ? \
             WHERE status = 'waiting_confirmation' AND deployment_id < ? AND deployment_id IN ( \
               SELECT d.id FROM deployments d JOIN deployments s ON s.id = ? \
               WHERE d.application = s.application AND d.environment = s.environment)",
        )
        .bind(wait.created_ms)
        .bind(wait.deployment_id)
        .bind(wait.deployment_id)
        .execute(&mut *tx)
        .await
        .map_err(err("superseding older promotions"))?;
        tx.commit().await.map_err(err("recording a promotion"))?;
        Ok(true)
    }

    async fn promotion_wait(&self, id: i64) -> Result<Option<PromotionWait>, StoreError> {
        type Row = (i64, String, String, String, i64, i64, Option<String>, Option<i64>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT deployment_id, to_application, to_environment, status, created_ms, expires_ms, decided_by, decided_ms \
             FROM promotion_waits WHERE deployment_id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a promotion"))?;
        row.map(|(id, application, environment, status, created, expires, by, decided)| {
            super::promotion_wait_from_columns(
                id,
                application,
                environment,
                &status,
                created,
                expires,
                by,
                decided,
            )
        })
        .transpose()
    }

    async fn set_promotion_status(
        &self,
        id: i64,
        from: PromotionStatus,
        to: PromotionStatus,
        by: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE promotion_waits SET status = ?, decided_by = COALESCE(?, decided_by), decided_ms = ? \
             WHERE deployment_id = ? AND status = ?",
        )
        .bind(to.as_str())
        .bind(by)
        .bind(at_ms)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await
        .map_err(err("deciding a promotion"))?;
        Ok(moved.rows_affected() == 1)
    }

    // ---- VMs (issue 19: provisioning) ----

    async fn insert_vm(&self, vm: &NewVm, max_per_owner: Option<u32>) -> Result<VmInserted, StoreError> {
        let context = "recording a VM";
        // The write lock at once: no other insert (one server per file, but many requests)
        // counts or inserts between this one's checks and its insert.
        let mut tx = self.write().await.map_err(err(context))?;
        let holding: Option<VmColumns> =
            sqlx::query_as(&format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ? AND status IN {HOLDING}"))
                .bind(vm.name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err(context))?;
        if let Some(existing) = holding {
            return Ok(VmInserted::NameInUse(vm_row(existing)?));
        }
        if let Some(limit) = max_per_owner {
            let held: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM vms WHERE owner = ? AND status IN {HOLDING}"
            ))
            .bind(&vm.owner)
            .fetch_one(&mut *tx)
            .await
            .map_err(err(context))?;
            let held = u32::try_from(held).unwrap_or(u32::MAX);
            if held >= limit {
                return Ok(VmInserted::OwnerAtLimit { held });
            }
        }
        let row: VmColumns = sqlx::query_as(&format!(
            "INSERT INTO vms (name, owner, team, flavor, requested_by, status, created_ms, instance) \
             VALUES (?, ?, ?, ?, ?, 'creating', ?, ?) RETURNING {VM_COLUMNS}"
        ))
        .bind(vm.name.as_str())
        .bind(&vm.owner)
        .bind(&vm.team)
        .bind(vm.flavor.as_str())
        .bind(&vm.requested_by)
        .bind(vm.created_ms)
        .bind(self.options.instance.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(err(context))?;
        tx.commit().await.map_err(err(context))?;
        Ok(VmInserted::Inserted(vm_row(row)?))
    }

    async fn vm(&self, name: &VmName) -> Result<Option<VmRow>, StoreError> {
        let row: Option<VmColumns> = sqlx::query_as(&format!(
            "SELECT {VM_COLUMNS} FROM vms WHERE name = ? \
             ORDER BY CASE WHEN status IN {HOLDING} THEN 0 ELSE 1 END, id DESC LIMIT 1"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a VM"))?;
        row.map(vm_row).transpose()
    }

    async fn list_vms(&self, filter: &VmFilter) -> Result<Vec<VmRow>, StoreError> {
        let mut sql = format!("SELECT {VM_COLUMNS} FROM vms WHERE 1 = 1");
        for (set, condition) in [
            (filter.owner.is_some(), " AND owner = ?"),
            (filter.team.is_some(), " AND team = ?"),
            (filter.status.is_some(), " AND status = ?"),
        ] {
            if set {
                sql.push_str(condition);
            }
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let mut query = sqlx::query_as::<_, VmColumns>(&sql);
        for value in [&filter.owner, &filter.team].into_iter().flatten() {
            query = query.bind(value);
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        let rows =
            query.bind(list_limit(filter.limit)).fetch_all(&self.pool).await.map_err(err("listing VMs"))?;
        rows.into_iter().map(vm_row).collect()
    }

    async fn update_vm(&self, id: i64, update: &VmUpdate) -> Result<(), StoreError> {
        if self.update_vm_where(id, None, update).await? {
            Ok(())
        } else {
            Err(StoreError::new("updating a VM", format!("no VM {id}")))
        }
    }

    async fn update_vm_from(&self, id: i64, from: VmStatus, update: &VmUpdate) -> Result<bool, StoreError> {
        self.update_vm_where(id, Some(from), update).await
    }

    async fn append_vm_events(&self, id: i64, events: &[ProvisionEvent]) -> Result<(), StoreError> {
        let context = "recording a VM's events";
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(err(context))?;
        for event in events {
            sqlx::query("INSERT INTO vm_events (vm_id, seq, body) VALUES (?, ?, ?)")
                .bind(id)
                .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
                .bind(to_json(event, context)?)
                .execute(&mut *tx)
                .await
                .map_err(err(context))?;
        }
        tx.commit().await.map_err(err(context))
    }

    async fn vm_events_after(
        &self,
        id: i64,
        after: u64,
        limit: i64,
    ) -> Result<Vec<ProvisionEvent>, StoreError> {
        let context = "reading a VM's events";
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM vm_events WHERE vm_id = ? AND seq > ? ORDER BY seq LIMIT ?")
                .bind(id)
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(limit.max(0))
                .fetch_all(&self.pool)
                .await
                .map_err(err(context))?;
        bodies.iter().map(|body| from_json(body, context)).collect()
    }

    async fn interrupt_unfinished_vms(&self, now_ms: i64) -> Result<Vec<VmRow>, StoreError> {
        // One server per file: a create or destroy still marked running by another process
        // was this server's earlier life's, which ended without writing its end. This
        // process's own runs are left alone, so the call may be repeated while it serves.
        let rows: Vec<VmColumns> = sqlx::query_as(&format!(
            "UPDATE vms SET status = 'interrupted', finished_ms = ? WHERE status IN {RUNNING} AND instance <> ? \
             RETURNING {VM_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(self.options.instance.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(err("marking VMs interrupted"))?;
        let mut marked = rows.into_iter().map(vm_row).collect::<Result<Vec<_>, _>>()?;
        marked.sort_by_key(|vm| vm.id);
        Ok(marked)
    }

    async fn reserve_vm(&self, request: &ReservationRequest) -> Result<Reservation, ReserveError> {
        let context = "reserving an address";
        let store = |e| reserve_error(StoreError::new(context, e));
        // The write lock before the read: reservers take turns, so each chooses from every
        // reservation committed before it.
        let mut tx = self.write().await.map_err(store)?;
        let rows: Vec<ReservationColumns> =
            sqlx::query_as(&format!("SELECT {RESERVATION_COLUMNS} FROM vm_reservations ORDER BY vm"))
                .fetch_all(&mut *tx)
                .await
                .map_err(store)?;
        let held = rows.into_iter().map(reservation).collect::<Result<Vec<_>, _>>().map_err(reserve_error)?;
        let chosen = vesemir_core::provision::choose(request, &held)?;
        sqlx::query(
            "INSERT INTO vm_reservations (vm, hypervisor, address, size, created_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(chosen.vm.as_str())
        .bind(chosen.placement.hypervisor.as_str())
        .bind(chosen.placement.address.to_string())
        .bind(to_json(&chosen.size, context).map_err(reserve_error)?)
        .bind(crate::clock::now_ms())
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)?;
        Ok(chosen)
    }

    async fn release_vm(&self, vm: &VmName) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_reservations WHERE vm = ?")
            .bind(vm.as_str())
            .execute(&self.pool)
            .await
            .map_err(err("releasing an address"))?;
        Ok(())
    }

    async fn vm_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let rows: Vec<ReservationColumns> =
            sqlx::query_as(&format!("SELECT {RESERVATION_COLUMNS} FROM vm_reservations ORDER BY vm"))
                .fetch_all(&self.pool)
                .await
                .map_err(err("reading the reservations"))?;
        rows.into_iter().map(reservation).collect()
    }
}

impl SqliteStore {
    /// Appends a journal entry on `conn` in a transaction that checks the lease first.
    async fn append_journal_on(
        &self,
        conn: &mut sqlx::SqliteConnection,
        id: i64,
        body: String,
    ) -> Result<(), StoreError> {
        use sqlx::Connection;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(err("starting a journal entry"))?;
        self.check_lease(&mut tx, id, "appending to the journal").await?;
        sqlx::query("INSERT INTO deployment_journal (deployment_id, body) VALUES (?, ?)")
            .bind(id)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(err("appending to the journal"))?;
        tx.commit().await.map_err(err("committing a journal entry"))
    }
}

/// The columns [`hook_delivery`] reads.
const HOOK_COLUMNS: &str =
    "hook, delivery_id, body_sha256, version, state, deployment_id, error, received_ms";

fn hook_delivery(row: &SqliteRow) -> Result<HookDelivery, StoreError> {
    let read = |e| StoreError::new("reading a hook delivery", e);
    let state: String = row.try_get("state").map_err(read)?;
    Ok(HookDelivery {
        hook: row.try_get("hook").map_err(read)?,
        delivery_id: row.try_get("delivery_id").map_err(read)?,
        body_sha256: row.try_get("body_sha256").map_err(read)?,
        version: row.try_get("version").map_err(read)?,
        state: HookState::parse(&state)
            .ok_or_else(|| StoreError::new("reading a hook delivery", format!("unknown state {state:?}")))?,
        deployment_id: row.try_get("deployment_id").map_err(read)?,
        error: row.try_get("error").map_err(read)?,
        received_ms: row.try_get("received_ms").map_err(read)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_once_and_the_journal_is_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.db");
        let first = SqliteStore::open(&path).await.expect("opens");
        drop(first);
        let store = SqliteStore::open(&path).await.expect("reopens");
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&store.pool)
            .await
            .expect("reads");
        assert_eq!(versions, MIGRATIONS.iter().map(|(v, _)| *v).collect::<Vec<_>>());
        let mode: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.pool).await.expect("reads");
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_database_with_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.db");
        let store = SqliteStore::open(&path).await.expect("opens");
        sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES (999, 0)")
            .execute(&store.pool)
            .await
            .expect("writes");
        drop(store);
        let refused = SqliteStore::open(&path).await.expect_err("refused");
        assert!(refused.to_string().contains("schema version 999"), "{refused}");
    }
}
