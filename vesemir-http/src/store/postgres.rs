//! The PostgreSQL store: several `vesemir serve` instances share one database. The schema is the
//! SQLite store's (JSON kept as text, times as Unix milliseconds), with its own migrations, run
//! once under an advisory lock when several instances start together; a database whose schema is
//! newer than this build is refused. Admission is the database's (unique indexes, see the
//! module [`super`]); lease times are the database's clock, so instances' clocks may differ.
//! Commits are durable (`synchronous_commit` as the server has it, `on` by default). Stored
//! events are announced with `NOTIFY` (the deployment's id) and each store `LISTEN`s, so a
//! follower on any instance sees another instance's events live.
//!
//! VMs (issue 19): a running create or destroy is leased to its instance like a deployment
//! (`vms.lease_expires_ms`, renewed by [`Store::renew_leases`]), so another instance interrupts
//! it only once the lease ran out, or at once when its holder is an earlier life of this
//! instance ([`Store::interrupt_unfinished_vms`]). VM inserts take turns under an advisory lock
//! and reservations under a table lock, each until its commit.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::{broadcast, oneshot};
use vesemir_core::journal::JournalEntry;
use vesemir_core::name::HostName;
use vesemir_core::{Event, HostProgress};

use super::codec::{
    decode_hosts, encode_hosts, from_millis, from_text, hosts_left_by_journal, hosts_out_of_rotation,
    lease_expired, lost_leases, millis, to_text, STOPPED,
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
    id BIGSERIAL PRIMARY KEY,
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
    host_count BIGINT,
    totals TEXT,
    out_of_rotation TEXT NOT NULL DEFAULT '[]',
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    body_sha256 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    lease_owner TEXT,
    lease_epoch BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms BIGINT
);
CREATE UNIQUE INDEX deployments_idempotency ON deployments (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX deployments_one_active ON deployments (application, environment)
    WHERE status IN ('queued', 'running');
CREATE INDEX deployments_app_env ON deployments (application, environment, id);
CREATE INDEX deployments_team ON deployments (team, id);
CREATE INDEX deployments_status ON deployments (status, id);
CREATE INDEX deployments_lease ON deployments (lease_owner) WHERE status IN ('queued', 'running');
CREATE TABLE deployment_hosts (
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    server TEXT NOT NULL,
    outcome TEXT,
    phase TEXT NOT NULL,
    error TEXT,
    rotation TEXT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    PRIMARY KEY (deployment_id, name)
);
CREATE TABLE events (
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    seq BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);
CREATE TABLE deployment_journal (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    body TEXT NOT NULL
);
CREATE INDEX deployment_journal_deployment ON deployment_journal (deployment_id, id);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE deployment_origin (
    deployment_id BIGINT PRIMARY KEY REFERENCES deployments (id),
    retry_of BIGINT,
    rollback_of BIGINT,
    only_hosts TEXT,
    resume BIGINT,
    then_hosts TEXT
);
"#,
    ),
    (
        3,
        r#"
ALTER TABLE deployments ADD COLUMN pause_requested BOOLEAN;
ALTER TABLE deployments ADD COLUMN confirm_requested BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    ),
    (
        4,
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
        5,
        r#"
CREATE TABLE hook_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    hook TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    deployment_id BIGINT REFERENCES deployments (id),
    error TEXT,
    received_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX hook_deliveries_id ON hook_deliveries (hook, delivery_id);
CREATE UNIQUE INDEX hook_deliveries_body ON hook_deliveries (hook, body_sha256);
CREATE INDEX hook_deliveries_waiting ON hook_deliveries (hook, state, seq);
CREATE TABLE deployment_promotion (
    deployment_id BIGINT PRIMARY KEY REFERENCES deployments (id),
    promoted_from BIGINT NOT NULL REFERENCES deployments (id)
);
CREATE INDEX deployment_promotion_from ON deployment_promotion (promoted_from);
CREATE TABLE notification_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    target TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    delivered BOOLEAN NOT NULL,
    http_status BIGINT,
    error TEXT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX notification_deliveries_deployment ON notification_deliveries (deployment_id, seq);
"#,
    ),
    (
        6,
        r#"
-- Failed sign-ins (issue 17: attempt limits shared by every instance on one database).
CREATE TABLE sign_in_failures (
    id BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX sign_in_failures_key ON sign_in_failures (subject, at_ms);
CREATE INDEX sign_in_failures_at ON sign_in_failures (at_ms);
"#,
    ),
    (
        7,
        r#"
-- Issue 18: what each unit's package source watcher last found (vesemir-http/src/source.rs).
CREATE TABLE source_state (
    unit TEXT PRIMARY KEY,
    index_url TEXT NOT NULL,
    package TEXT NOT NULL,
    seen_version TEXT,
    etag TEXT,
    last_modified TEXT,
    checked_ms BIGINT NOT NULL,
    error TEXT
);
"#,
    ),
    (
        8,
        r#"
-- Issue 18: promotions that wait for a person's confirmation (promote_confirm).
CREATE TABLE promotion_waits (
    deployment_id BIGINT PRIMARY KEY REFERENCES deployments (id),
    to_application TEXT NOT NULL,
    to_environment TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    decided_by TEXT,
    decided_ms BIGINT
);
CREATE INDEX promotion_waits_status ON promotion_waits (status, deployment_id);
"#,
    ),
    (
        9,
        r#"
-- Issue 19: the VMs the server provisions (store/vms.rs), their events, and the addresses and
-- hypervisor slots reserved for them. A running create or destroy is leased to its instance
-- (lease_expires_ms, renewed with the deployments' leases).
CREATE TABLE vms (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    team TEXT NOT NULL,
    flavor TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    placement TEXT,
    record TEXT,
    outcome TEXT,
    instance TEXT NOT NULL,
    lease_expires_ms BIGINT
);
CREATE UNIQUE INDEX vms_one_holding_name ON vms (name)
    WHERE status IN ('creating', 'ready', 'destroying', 'interrupted');
CREATE INDEX vms_name ON vms (name, id);
CREATE INDEX vms_owner ON vms (owner, id);
CREATE INDEX vms_team ON vms (team, id);
CREATE INDEX vms_status ON vms (status, id);
CREATE INDEX vms_running ON vms (instance) WHERE status IN ('creating', 'destroying');
CREATE TABLE vm_events (
    vm_id BIGINT NOT NULL REFERENCES vms (id),
    seq BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vm_id, seq)
);
CREATE TABLE vm_reservations (
    vm TEXT PRIMARY KEY,
    hypervisor TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    size TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
"#,
    ),
];

/// The first key of the advisory locks that serialize sign-in attempts per key (`sign` in
/// ASCII); the second is the key's hash. Two-key advisory locks never meet one-key ones.
const SIGN_IN_LOCK_SPACE: i32 = 0x7369_676e;

/// The advisory lock key the migrations run under (`vesemir` in ASCII).
const MIGRATION_LOCK: i64 = 0x0076_6573_656d_6972;

/// The advisory lock key VM inserts take turns under, until their commit (`vms_ins` in ASCII).
const VM_INSERT_LOCK: i64 = 0x0076_6d73_5f69_6e73;

/// The database's clock, Unix milliseconds: lease times are read and written by it only.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const COLUMNS: &str = "id, application, environment, team, version, requested_by, playbook, query, request, \
     status, error, host_count, totals, out_of_rotation, cancel_requested, idempotency_key, body_sha256, \
     created_ms, started_ms, finished_ms, lease_owner, pause_requested";

/// A `postgres://` (or `postgresql://`) connection URL. Its password never shows in `Debug` or
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// Checks that `url` is a PostgreSQL URL the driver can read.
    pub fn parse(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        PgConnectOptions::from_str(url).map_err(|e| format!("is not a PostgreSQL URL: {e}"))?;
        Ok(Self(url.to_owned()))
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else { return self.0.clone() };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Deployments in PostgreSQL, as one server instance.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: StoreOptions,
    /// Deployments this instance holds, by id, with their lease epoch.
    held: Arc<Mutex<HashMap<i64, i64>>>,
    announcer: Arc<Announcer>,
}

/// The channel new events are announced on; the payload is the deployment's id.
const EVENTS_CHANNEL: &str = "vesemir_events";

/// Capacity of the announcement channel; a follower further behind re-reads the database.
const ANNOUNCED: usize = 1024;

/// Deployment ids announced on [`EVENTS_CHANNEL`], from a task that `LISTEN`s; the task ends
/// when the last clone of the store is dropped (with `stop`).
#[derive(Debug)]
struct Announcer {
    sender: broadcast::Sender<i64>,
    _stop: oneshot::Sender<()>,
}

impl Announcer {
    fn start(pool: PgPool) -> Self {
        let (sender, _) = broadcast::channel(ANNOUNCED);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(listen(pool, sender.clone(), stopped));
        Self { sender, _stop: stop }
    }
}

/// Forwards announcements until `stop` resolves; a lost connection is made again after a
/// second (followers poll meanwhile).
async fn listen(pool: PgPool, sender: broadcast::Sender<i64>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            e = listen_until_error(&pool, &sender) => {
                tracing::warn!(error = %e, "listening for other instances' events failed: retrying");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen_until_error(pool: &PgPool, sender: &broadcast::Sender<i64>) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
        return e;
    }
    loop {
        match listener.recv().await {
            // No follower is not an error.
            Ok(notification) => {
                if let Ok(id) = notification.payload().parse::<i64>() {
                    let _ = sender.send(id);
                }
            }
            Err(e) => return e,
        }
    }
}

/// A statement's failure while doing `context`; a lost or unreachable connection is the
/// database being unavailable ([`StoreError::is_unavailable`]).
fn err(context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            StoreError::unavailable(context, e)
        }
        e => StoreError::new(context, e),
    }
}

/// How long a read may take, a connection's acquisition included, before it fails as the
/// database not answering: reads answer the API, and an instance split from the database
/// (packets dropped, nothing refused) must answer them with an error, not stall.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `read`, failing as the database being unavailable past [`READ_TIMEOUT`].
async fn bounded<T>(
    context: &str,
    read: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => {
            Err(StoreError::unavailable(context, format!("no answer within {}s", READ_TIMEOUT.as_secs())))
        }
    }
}

impl PostgresStore {
    /// Changes VM `id` as `update` says, only while its status is `from` when given: whether
    /// a row changed. A create or destroy that runs is leased to this instance, renewed with
    /// its deployments' leases ([`Store::renew_leases`]); an ended one holds no lease.
    async fn update_vm_where(
        &self,
        id: i64,
        from: Option<VmStatus>,
        update: &VmUpdate,
    ) -> Result<bool, StoreError> {
        let context = "updating a VM";
        let done = sqlx::query(&format!(
            "UPDATE vms SET status = $1, placement = COALESCE($2, placement), record = COALESCE($3, record), \
             outcome = COALESCE($4, outcome), finished_ms = COALESCE($5, finished_ms), instance = $6, \
             lease_expires_ms = CASE WHEN $1 IN {RUNNING} THEN {NOW_MS} + $7 END \
             WHERE id = $8 AND ($9::TEXT IS NULL OR status = $9)"
        ))
        .bind(update.status.as_str())
        .bind(to_json_opt(update.placement.as_ref(), context)?)
        .bind(to_json_opt(update.record.as_ref(), context)?)
        .bind(to_json_opt(update.outcome.as_ref(), context)?)
        .bind(update.finished_ms)
        .bind(self.options.instance.as_str())
        .bind(self.lease_ms())
        .bind(id)
        .bind(from.map(VmStatus::as_str))
        .execute(&self.pool)
        .await
        .map_err(err(context))?;
        Ok(done.rows_affected() > 0)
    }
}

impl PostgresStore {
    /// Connects to `url` and applies pending migrations (once, under an advisory lock), as
    /// `options.instance` with leases of `options.lease`. Refuses a database whose schema is
    /// newer than this build's.
    pub async fn open(url: &PostgresUrl, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&url.0)
            .map_err(err("parsing the database URL"))?
            .application_name("vesemir");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::new(format!("connecting to {url}"), e))?;
        let announcer = Arc::new(Announcer::start(pool.clone()));
        let store = Self { pool, options, held: Arc::default(), announcer };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(err("connecting"))?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(err("taking the migration lock"))?;
        let migrated = Self::migrate_on(&mut conn).await;
        // The session's end releases the lock too: a connection that cannot unlock is closed.
        if sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .is_err()
        {
            conn.close_on_drop();
        }
        migrated
    }

    async fn migrate_on(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await
        .map_err(err("creating schema_migrations"))?;
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(err("reading schema_migrations"))?;
        super::refuse_newer_schema(newest, MIGRATIONS)?;
        for (version, sql) in MIGRATIONS {
            if newest.is_some_and(|n| n >= *version) {
                continue;
            }
            let mut tx = conn.begin().await.map_err(err("starting a migration"))?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::new(format!("applying migration {version}"), e))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(crate::clock::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(err("recording a migration"))?;
            tx.commit().await.map_err(err("committing a migration"))?;
        }
        Ok(())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        // Only plain map updates happen under this lock; a poisoned lock still holds a usable map.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_ms(&self) -> i64 {
        millis(self.options.lease)
    }

    /// Fails unless this instance may write about deployment `id` now: it holds its lease (same
    /// epoch, not expired by the database's clock), or, holding none, no live lease exists. Run
    /// first in the write's transaction: the row stays locked (`lock`: `SHARE`, or `NO KEY
    /// UPDATE` when the transaction updates it) until the commit, so no other instance takes or
    /// ends the lease in between.
    async fn check_lease(
        &self,
        conn: &mut sqlx::PgConnection,
        id: i64,
        lock: &str,
        context: &str,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(&format!(
            "SELECT lease_owner, lease_epoch, COALESCE(lease_expires_ms > {NOW_MS}, FALSE) AS live \
             FROM deployments WHERE id = $1 FOR {lock}"
        ))
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
        let id: Option<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO deployments (application, environment, team, version, requested_by, playbook, query, \
             request, status, idempotency_key, body_sha256, created_ms, lease_owner, lease_epoch, lease_expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, $12, 1, {NOW_MS} + $13) \
             ON CONFLICT DO NOTHING RETURNING id"
        ))
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
        .bind(self.lease_ms())
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
            "SELECT {COLUMNS} FROM deployments WHERE application = $1 AND environment = $2 \
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

fn deployment(row: &PgRow) -> Result<DeploymentRecord, StoreError> {
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
        cancel_requested: row.try_get("cancel_requested").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        body_sha256: row.try_get("body_sha256").map_err(get)?,
        created_ms: row.try_get("created_ms").map_err(get)?,
        started_ms: row.try_get("started_ms").map_err(get)?,
        finished_ms: row.try_get("finished_ms").map_err(get)?,
        instance: row.try_get("lease_owner").map_err(get)?,
        pause_requested: row.try_get::<Option<bool>, _>("pause_requested").map_err(get)? == Some(true),
    })
}

fn host(row: &PgRow) -> Result<HostRecord, StoreError> {
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
async fn write_host(conn: &mut sqlx::PgConnection, id: i64, h: &HostRecord) -> Result<(), StoreError> {
    let state = &h.state;
    sqlx::query(
        "UPDATE deployment_hosts SET outcome = $1, phase = $2, error = $3, rotation = $4, started_ms = $5, \
         finished_ms = $6 WHERE deployment_id = $7 AND name = $8",
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
impl Store for PostgresStore {
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
        bounded("reading a deployment", async {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM deployments WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(err("reading a deployment"))?;
            row.as_ref().map(deployment).transpose()
        })
        .await
    }

    async fn by_idempotency_key(
        &self,
        requested_by: &str,
        key: &str,
    ) -> Result<Option<DeploymentRecord>, StoreError> {
        bounded("looking up an idempotency key", async {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM deployments WHERE requested_by = $1 AND idempotency_key = $2"
            ))
            .bind(requested_by)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("looking up an idempotency key"))?;
            row.as_ref().map(deployment).transpose()
        })
        .await
    }

    async fn hosts(&self, id: i64) -> Result<Vec<HostRecord>, StoreError> {
        bounded("reading hosts", async {
            let rows = sqlx::query(
                "SELECT position, name, address, server, outcome, phase, error, rotation, started_ms, finished_ms \
                 FROM deployment_hosts WHERE deployment_id = $1 ORDER BY position",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(err("reading hosts"))?;
            rows.iter().map(host).collect()
        })
        .await
    }

    async fn list(&self, f: &ListFilter) -> Result<Vec<DeploymentRecord>, StoreError> {
        bounded("listing deployments", async {
            let mut sql = format!("SELECT {COLUMNS} FROM deployments WHERE 1 = 1");
            let mut n = 0;
            let mut next = || {
                n += 1;
                n
            };
            for (set, column) in [
                (f.application.is_some(), "application ="),
                (f.environment.is_some(), "environment ="),
                (f.team.is_some(), "team ="),
                (f.status.is_some(), "status ="),
                (f.before.is_some(), "id <"),
            ] {
                if set {
                    sql.push_str(&format!(" AND {column} ${}", next()));
                }
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", next()));
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
        })
        .await
    }

    async fn mark_running(&self, id: i64, started_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("starting to mark a deployment running"))?;
        self.check_lease(&mut tx, id, "NO KEY UPDATE", "marking a deployment running").await?;
        sqlx::query("UPDATE deployments SET status = 'running', started_ms = $1 WHERE id = $2")
            .bind(started_ms)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("marking a deployment running"))?;
        tx.commit().await.map_err(err("committing a deployment running"))
    }

    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("starting to record a plan"))?;
        self.check_lease(&mut tx, id, "NO KEY UPDATE", "recording a plan").await?;
        for h in hosts {
            sqlx::query(
                "INSERT INTO deployment_hosts (deployment_id, position, name, address, server, outcome, \
                 phase, error, rotation, started_ms, finished_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (deployment_id, name) DO UPDATE SET position = EXCLUDED.position, \
                 address = EXCLUDED.address, server = EXCLUDED.server, outcome = EXCLUDED.outcome, \
                 phase = EXCLUDED.phase, error = EXCLUDED.error, rotation = EXCLUDED.rotation, \
                 started_ms = EXCLUDED.started_ms, finished_ms = EXCLUDED.finished_ms",
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
        sqlx::query("UPDATE deployments SET host_count = $1 WHERE id = $2")
            .bind(i64::try_from(hosts.len()).unwrap_or(i64::MAX))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("recording the host count"))?;
        tx.commit().await.map_err(err("committing a plan"))
    }

    async fn mark_cancel_requested(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET cancel_requested = TRUE WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err("recording a cancel"))?;
        Ok(())
    }

    async fn append_events(&self, id: i64, events: &[Event], hosts: &[HostRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("starting to append events"))?;
        self.check_lease(&mut tx, id, "SHARE", "appending events").await?;
        if !events.is_empty() {
            let mut seqs = Vec::with_capacity(events.len());
            let mut bodies = Vec::with_capacity(events.len());
            for event in events {
                seqs.push(i64::try_from(event.seq).unwrap_or(i64::MAX));
                bodies
                    .push(serde_json::to_string(event).map_err(|e| StoreError::new("encoding an event", e))?);
            }
            // One statement for the batch: the events arrive in hundreds while hosts run.
            sqlx::query(
                "INSERT INTO events (deployment_id, seq, body) SELECT $1, seq, body \
                 FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS batch (seq, body)",
            )
            .bind(id)
            .bind(&seqs)
            .bind(&bodies)
            .execute(&mut *tx)
            .await
            .map_err(err("appending events"))?;
        }
        for h in hosts {
            write_host(&mut tx, id, h).await?;
        }
        // Delivered at the commit, to every instance listening (followers of this deployment).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(err("announcing events"))?;
        tx.commit().await.map_err(err("committing events"))
    }

    async fn events_after(&self, id: i64, after: u64, limit: i64) -> Result<Vec<Event>, StoreError> {
        bounded("reading events", async {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT body FROM events WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(err("reading events"))?;
            rows.iter()
                .map(|body| {
                    serde_json::from_str(body).map_err(|e| StoreError::new("decoding a stored event", e))
                })
                .collect()
        })
        .await
    }

    async fn finish(&self, id: i64, f: &Finish) -> Result<(), StoreError> {
        let totals = f
            .totals
            .map(|t| serde_json::to_string(&t))
            .transpose()
            .map_err(|e| StoreError::new("encoding totals", e))?;
        let out =
            serde_json::to_string(&f.out_of_rotation).map_err(|e| StoreError::new("encoding hosts", e))?;
        let mut tx = self.pool.begin().await.map_err(err("starting to finish"))?;
        self.check_lease(&mut tx, id, "NO KEY UPDATE", "finishing a deployment").await?;
        sqlx::query(
            "UPDATE deployments SET status = $1, error = $2, totals = $3, out_of_rotation = $4, finished_ms = $5, \
             lease_expires_ms = NULL WHERE id = $6",
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
        // Held by no live instance: no lease, or one its holder stopped renewing.
        let unheld = format!("status IN ('queued', 'running') AND COALESCE(lease_expires_ms, 0) <= {NOW_MS}");
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM deployments WHERE {unheld} ORDER BY id"))
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
            let error = d.instance.as_deref().map_or_else(|| STOPPED.to_owned(), lease_expired);
            // Only if still unheld: another instance may have interrupted it meanwhile.
            let done = sqlx::query(&format!(
                "UPDATE deployments SET status = 'interrupted', out_of_rotation = $1, finished_ms = $2, \
                 error = $3, lease_expires_ms = NULL WHERE id = $4 AND {unheld}"
            ))
            .bind(encoded)
            .bind(now_ms)
            .bind(error)
            .bind(d.id)
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
        let mut tx = self.pool.begin().await.map_err(err("starting a journal entry"))?;
        self.check_lease(&mut tx, id, "SHARE", "appending to the journal").await?;
        sqlx::query("INSERT INTO deployment_journal (deployment_id, body) VALUES ($1, $2)")
            .bind(id)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(err("appending to the journal"))?;
        tx.commit().await.map_err(err("committing a journal entry"))
    }

    async fn journal(&self, id: i64) -> Result<Vec<JournalEntry>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body FROM deployment_journal WHERE deployment_id = $1 ORDER BY id")
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
        let mut tx = self.pool.begin().await.map_err(err("starting to record hosts out of rotation"))?;
        self.check_lease(&mut tx, id, "NO KEY UPDATE", "recording hosts out of rotation").await?;
        sqlx::query("UPDATE deployments SET out_of_rotation = $1 WHERE id = $2")
            .bind(encoded)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("recording hosts out of rotation"))?;
        tx.commit().await.map_err(err("committing hosts out of rotation"))
    }

    async fn set_origin(&self, id: i64, origin: &Origin) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deployment_origin (deployment_id, retry_of, rollback_of, only_hosts, resume, then_hosts) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (deployment_id) DO UPDATE SET retry_of = $2, \
             rollback_of = $3, only_hosts = $4, resume = $5, then_hosts = $6",
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
            "SELECT retry_of, rollback_of, only_hosts, resume, then_hosts FROM deployment_origin WHERE deployment_id = $1",
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
        sqlx::query("UPDATE deployments SET error = $1 WHERE id = $2")
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
             WHERE status NOT IN ('queued', 'running') AND finished_ms IS NOT NULL AND finished_ms < $1)",
        )
        .bind(ended_before_ms)
        .execute(&self.pool)
        .await
        .map_err(err("pruning events"))?;
        Ok(done.rows_affected())
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        bounded("counting deployments", async {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM deployments GROUP BY status")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err("counting deployments"))?;
            Ok(super::counts_from(rows))
        })
        .await
    }

    // ---- Web sessions (issue 17: directory sign-in) ----

    async fn create_session(&self, session: &WebSession) -> Result<(), StoreError> {
        let (teams, roles) = super::session_roles_json(session)?;
        sqlx::query(
            "INSERT INTO web_sessions (id_sha256, csrf, name, teams, roles, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
             WHERE id_sha256 = $1 AND revoked_ms IS NULL AND expires_ms > $2",
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
        sqlx::query("UPDATE web_sessions SET revoked_ms = $1 WHERE id_sha256 = $2 AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(id_sha256)
            .execute(&self.pool)
            .await
            .map_err(err("revoking a session"))?;
        Ok(())
    }

    async fn prune_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_ms < $1 OR revoked_ms < $2")
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
        let mut tx = self.pool.begin().await.map_err(err(context))?;
        // Each key's lock until the transaction ends, taken in one order (no deadlock): no
        // other attempt on any instance counts between the counts and the inserts.
        let mut keys: Vec<String> = limits.iter().map(|(key, _)| key.as_column()).collect();
        keys.sort();
        keys.dedup();
        for key in &keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(SIGN_IN_LOCK_SPACE)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(err(context))?;
        }
        let mut limited = Vec::new();
        for (key, limit) in limits {
            let (count, oldest_ms): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(at_ms) FROM sign_in_failures WHERE subject = $1 AND at_ms >= $2",
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
                "INSERT INTO sign_in_failures (subject, at_ms) VALUES ($1, $2) RETURNING id",
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
        sqlx::query("DELETE FROM sign_in_failures WHERE id = ANY($1)")
            .bind(rows)
            .execute(&self.pool)
            .await
            .map_err(err("forgiving a sign-in attempt"))?;
        Ok(())
    }

    async fn sign_in_failures(&self, key: &SignInKey, since_ms: i64) -> Result<SignInFailures, StoreError> {
        let (count, oldest_ms): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(at_ms) FROM sign_in_failures WHERE subject = $1 AND at_ms >= $2",
        )
        .bind(key.as_column())
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(err("reading failed sign-ins"))?;
        Ok(SignInFailures { count: u64::try_from(count).unwrap_or(0), oldest_ms })
    }

    async fn clear_sign_in_failures(&self, key: &SignInKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sign_in_failures WHERE subject = $1")
            .bind(key.as_column())
            .execute(&self.pool)
            .await
            .map_err(err("forgetting failed sign-ins"))?;
        Ok(())
    }

    async fn prune_sign_in_failures(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sign_in_failures WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(err("pruning failed sign-ins"))?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded("ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("ping"))?;
            Ok(())
        })
        .await
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

    fn event_announcements(&self) -> Option<broadcast::Receiver<i64>> {
        Some(self.announcer.sender.subscribe())
    }

    async fn order(&self, id: i64, order: super::Order) -> Result<super::OrderTaken, StoreError> {
        use super::{Order, OrderTaken};
        let active = "status IN ('queued', 'running')";
        let set = match order {
            Order::Pause => format!("UPDATE deployments SET pause_requested = TRUE WHERE id = $1 AND {active}"),
            Order::Resume => format!(
                "UPDATE deployments SET pause_requested = FALSE WHERE id = $1 AND {active} AND pause_requested IS TRUE"
            ),
            Order::Confirm => format!("UPDATE deployments SET confirm_requested = TRUE WHERE id = $1 AND {active}"),
        };
        let done = sqlx::query(&set).bind(id).execute(&self.pool).await.map_err(err("recording an order"))?;
        if done.rows_affected() > 0 {
            return Ok(OrderTaken::Recorded);
        }
        let live: Option<bool> =
            sqlx::query_scalar(&format!("SELECT {active} FROM deployments WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(err("recording an order"))?;
        Ok(match (order, live) {
            (Order::Resume, Some(true)) => OrderTaken::NotPaused,
            _ => OrderTaken::NotActive,
        })
    }

    async fn take_orders(&self) -> Result<Vec<super::Orders>, StoreError> {
        if self.held().is_empty() {
            return Ok(Vec::new());
        }
        // The confirmations are taken in the same statement that reads them: each is applied once.
        let rows = sqlx::query(
            "UPDATE deployments d SET confirm_requested = FALSE FROM (SELECT id, confirm_requested \
             FROM deployments WHERE lease_owner = $1 AND status IN ('queued', 'running') \
             AND (pause_requested IS NOT NULL OR confirm_requested) FOR UPDATE) o \
             WHERE d.id = o.id RETURNING d.id, d.pause_requested, o.confirm_requested",
        )
        .bind(self.options.instance.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading orders"))?;
        let held = self.held();
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            let get = |e| StoreError::new("reading an order", e);
            let id: i64 = row.try_get("id").map_err(get)?;
            if !held.contains_key(&id) {
                continue;
            }
            orders.push(super::Orders {
                id,
                paused: row.try_get("pause_requested").map_err(get)?,
                confirm: row.try_get("confirm_requested").map_err(get)?,
            });
        }
        Ok(orders)
    }

    async fn take_over_unheld(&self) -> Result<Vec<super::TakenOver>, StoreError> {
        // One statement: the rows are locked by the first instance to get there (the others
        // skip them), and the previous holder is read in the same snapshot.
        let rows = sqlx::query(&format!(
            "WITH unheld AS (SELECT id, lease_owner FROM deployments WHERE status IN ('queued', 'running') \
             AND COALESCE(lease_expires_ms, 0) <= {NOW_MS} ORDER BY id FOR UPDATE SKIP LOCKED) \
             UPDATE deployments d SET lease_owner = $1, lease_epoch = d.lease_epoch + 1, \
             lease_expires_ms = {NOW_MS} + $2 FROM unheld WHERE d.id = unheld.id \
             RETURNING d.id, unheld.lease_owner AS previous, d.lease_epoch, d.status"
        ))
        .bind(self.options.instance.as_str())
        .bind(self.lease_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(err("taking over deployments"))?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let get = |e| StoreError::new("reading a deployment taken over", e);
            let status: String = row.try_get("status").map_err(get)?;
            let status = Status::parse(&status).ok_or_else(|| {
                StoreError::new("reading a deployment taken over", format!("status {status:?}"))
            })?;
            taken.push(super::TakenOver {
                id: row.try_get("id").map_err(get)?,
                from: row.try_get("previous").map_err(get)?,
                epoch: row.try_get("lease_epoch").map_err(get)?,
                status,
            });
        }
        let mut held = self.held();
        for t in &taken {
            held.insert(t.id, t.epoch);
        }
        Ok(taken)
    }

    async fn renew_leases(&self) -> Result<Renewal, StoreError> {
        // The VMs this instance creates or destroys (issue 19): their leases tell other
        // instances it is alive ([`Store::interrupt_unfinished_vms`]).
        sqlx::query(&format!(
            "UPDATE vms SET lease_expires_ms = {NOW_MS} + $1 WHERE instance = $2 AND status IN {RUNNING}"
        ))
        .bind(self.lease_ms())
        .bind(self.options.instance.as_str())
        .execute(&self.pool)
        .await
        .map_err(err("renewing VM leases"))?;
        let held: Vec<(i64, i64)> = self.held().iter().map(|(id, epoch)| (*id, *epoch)).collect();
        if held.is_empty() {
            return Ok(Renewal::default());
        }
        let rows = sqlx::query(&format!(
            "UPDATE deployments SET lease_expires_ms = {NOW_MS} + $1 WHERE lease_owner = $2 \
             AND lease_expires_ms > {NOW_MS} AND status IN ('queued', 'running') \
             RETURNING id, lease_epoch, cancel_requested"
        ))
        .bind(self.lease_ms())
        .bind(self.options.instance.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(err("renewing leases"))?;
        let renewed = rows
            .iter()
            .map(|row| {
                let get = |e| StoreError::new("reading a renewed lease", e);
                Ok((
                    row.try_get("id").map_err(get)?,
                    row.try_get("lease_epoch").map_err(get)?,
                    row.try_get("cancel_requested").map_err(get)?,
                ))
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
             VALUES ($1, $2, $3, $4, 'waiting', $5) ON CONFLICT DO NOTHING",
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
            "SELECT {HOOK_COLUMNS} FROM hook_deliveries WHERE hook = $1 AND (delivery_id = $2 OR body_sha256 = $3) \
             ORDER BY CASE WHEN delivery_id = $4 THEN 0 ELSE 1 END, seq LIMIT 1"
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
            "UPDATE hook_deliveries SET state = $1, deployment_id = $2, error = $3 \
             WHERE hook = $4 AND delivery_id = $5",
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
            "SELECT {HOOK_COLUMNS} FROM hook_deliveries WHERE hook = $1 AND state = 'waiting' ORDER BY seq"
        ))
        .bind(hook)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading waiting hook deliveries"))?;
        rows.iter().map(hook_delivery).collect()
    }

    async fn set_promoted_from(&self, id: i64, from: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO deployment_promotion (deployment_id, promoted_from) VALUES ($1, $2)")
            .bind(id)
            .bind(from)
            .execute(&self.pool)
            .await
            .map_err(err("recording a promotion"))?;
        Ok(())
    }

    async fn promoted_from(&self, id: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT promoted_from FROM deployment_promotion WHERE deployment_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("reading a promotion"))
    }

    async fn promoted_to(&self, id: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT deployment_id FROM deployment_promotion WHERE promoted_from = $1 ORDER BY deployment_id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reading a promotion"))
    }

    async fn record_notification(&self, attempt: &NotificationAttempt) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_deliveries (deployment_id, target, event, attempt, delivered, http_status, error, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
             FROM notification_deliveries WHERE deployment_id = $1 ORDER BY seq",
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
             FROM source_state WHERE unit = $1",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (unit) DO UPDATE SET index_url = excluded.index_url, \
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
        let mut tx = self.pool.begin().await.map_err(err("recording a promotion"))?;
        let inserted = sqlx::query(
            "INSERT INTO promotion_waits (deployment_id, to_application, to_environment, status, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
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
            "UPDATE promotion_waits SET status = 'superseded', decided_ms = $1 \
             WHERE status = 'waiting_confirmation' AND deployment_id < $2 AND deployment_id IN ( \
               SELECT d.id FROM deployments d JOIN deployments s ON s.id = $3 \
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
             FROM promotion_waits WHERE deployment_id = $1",
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
            "UPDATE promotion_waits SET status = $1, decided_by = COALESCE($2, decided_by), decided_ms = $3 \
             WHERE deployment_id = $4 AND status = $5",
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
        let mut tx = self.pool.begin().await.map_err(err(context))?;
        // Inserters on every instance take turns until the commit: each one's name check and
        // count see every VM recorded before it.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(VM_INSERT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err(context))?;
        let holding: Option<VmColumns> =
            sqlx::query_as(&format!("SELECT {VM_COLUMNS} FROM vms WHERE name = $1 AND status IN {HOLDING}"))
                .bind(vm.name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err(context))?;
        if let Some(existing) = holding {
            return Ok(VmInserted::NameInUse(vm_row(existing)?));
        }
        if let Some(limit) = max_per_owner {
            let held: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM vms WHERE owner = $1 AND status IN {HOLDING}"
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
            "INSERT INTO vms (name, owner, team, flavor, requested_by, status, created_ms, instance, lease_expires_ms) \
             VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7, {NOW_MS} + $8) RETURNING {VM_COLUMNS}"
        ))
        .bind(vm.name.as_str())
        .bind(&vm.owner)
        .bind(&vm.team)
        .bind(vm.flavor.as_str())
        .bind(&vm.requested_by)
        .bind(vm.created_ms)
        .bind(self.options.instance.as_str())
        .bind(self.lease_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(err(context))?;
        tx.commit().await.map_err(err(context))?;
        Ok(VmInserted::Inserted(vm_row(row)?))
    }

    async fn vm(&self, name: &VmName) -> Result<Option<VmRow>, StoreError> {
        bounded("reading a VM", async {
            let row: Option<VmColumns> = sqlx::query_as(&format!(
                "SELECT {VM_COLUMNS} FROM vms WHERE name = $1 \
                 ORDER BY CASE WHEN status IN {HOLDING} THEN 0 ELSE 1 END, id DESC LIMIT 1"
            ))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(err("reading a VM"))?;
            row.map(vm_row).transpose()
        })
        .await
    }

    async fn list_vms(&self, filter: &VmFilter) -> Result<Vec<VmRow>, StoreError> {
        bounded("listing VMs", async {
            let mut sql = format!("SELECT {VM_COLUMNS} FROM vms WHERE 1 = 1");
            let mut n = 0;
            for (set, column) in [
                (filter.owner.is_some(), "owner"),
                (filter.team.is_some(), "team"),
                (filter.status.is_some(), "status"),
            ] {
                if set {
                    n += 1;
                    sql.push_str(&format!(" AND {column} = ${n}"));
                }
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
            let mut query = sqlx::query_as::<_, VmColumns>(&sql);
            for value in [&filter.owner, &filter.team].into_iter().flatten() {
                query = query.bind(value);
            }
            if let Some(status) = filter.status {
                query = query.bind(status.as_str());
            }
            let rows = query
                .bind(list_limit(filter.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(err("listing VMs"))?;
            rows.into_iter().map(vm_row).collect()
        })
        .await
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
        let mut seqs = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            seqs.push(i64::try_from(event.seq).unwrap_or(i64::MAX));
            bodies.push(to_json(event, context)?);
        }
        // One statement: all of the batch or none of it.
        sqlx::query(
            "INSERT INTO vm_events (vm_id, seq, body) SELECT $1, seq, body \
             FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS batch (seq, body)",
        )
        .bind(id)
        .bind(&seqs)
        .bind(&bodies)
        .execute(&self.pool)
        .await
        .map_err(err(context))?;
        Ok(())
    }

    async fn vm_events_after(
        &self,
        id: i64,
        after: u64,
        limit: i64,
    ) -> Result<Vec<ProvisionEvent>, StoreError> {
        let context = "reading a VM's events";
        bounded(context, async {
            let bodies: Vec<String> = sqlx::query_scalar(
                "SELECT body FROM vm_events WHERE vm_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await
            .map_err(err(context))?;
            bodies.iter().map(|body| from_json(body, context)).collect()
        })
        .await
    }

    async fn interrupt_unfinished_vms(&self, now_ms: i64) -> Result<Vec<VmRow>, StoreError> {
        // Held by no live instance: a lease its holder stopped renewing (as for deployments),
        // or the holder is an earlier life of this instance (same name, another process: see
        // `earlier_lives`), which ended without writing the end.
        let (earlier, this_process) = earlier_lives(&self.options.instance);
        let rows: Vec<VmColumns> = sqlx::query_as(&format!(
            "UPDATE vms SET status = 'interrupted', finished_ms = $1, lease_expires_ms = NULL \
             WHERE status IN {RUNNING} AND (COALESCE(lease_expires_ms, 0) <= {NOW_MS} \
             OR ($2::TEXT IS NOT NULL AND starts_with(instance, $2) AND NOT starts_with(instance, $3))) \
             RETURNING {VM_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(earlier)
        .bind(this_process)
        .fetch_all(&self.pool)
        .await
        .map_err(err("marking VMs interrupted"))?;
        let mut marked = rows.into_iter().map(vm_row).collect::<Result<Vec<_>, _>>()?;
        marked.sort_by_key(|vm| vm.id);
        Ok(marked)
    }

    async fn reserve_vm(&self, request: &ReservationRequest) -> Result<Reservation, ReserveError> {
        let context = "reserving an address";
        let store = |e| reserve_error(err(context)(e));
        let mut tx = self.pool.begin().await.map_err(store)?;
        // Reservers on every instance take turns until the commit (the mode conflicts with
        // itself and with writes, not with plain reads): each chooses from every reservation
        // committed before it.
        sqlx::query("LOCK TABLE vm_reservations IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(store)?;
        let rows: Vec<ReservationColumns> =
            sqlx::query_as(&format!("SELECT {RESERVATION_COLUMNS} FROM vm_reservations ORDER BY vm"))
                .fetch_all(&mut *tx)
                .await
                .map_err(store)?;
        let held = rows.into_iter().map(reservation).collect::<Result<Vec<_>, _>>().map_err(reserve_error)?;
        let chosen = vesemir_core::provision::choose(request, &held)?;
        sqlx::query(&format!(
            "INSERT INTO vm_reservations (vm, hypervisor, address, size, created_ms) \
             VALUES ($1, $2, $3, $4, {NOW_MS})"
        ))
        .bind(chosen.vm.as_str())
        .bind(chosen.placement.hypervisor.as_str())
        .bind(chosen.placement.address.to_string())
        .bind(to_json(&chosen.size, context).map_err(reserve_error)?)
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)?;
        Ok(chosen)
    }

    async fn release_vm(&self, vm: &VmName) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_reservations WHERE vm = $1")
            .bind(vm.as_str())
            .execute(&self.pool)
            .await
            .map_err(err("releasing an address"))?;
        Ok(())
    }

    async fn vm_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        bounded("reading the reservations", async {
            let rows: Vec<ReservationColumns> =
                sqlx::query_as(&format!("SELECT {RESERVATION_COLUMNS} FROM vm_reservations ORDER BY vm"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err("reading the reservations"))?;
            rows.into_iter().map(reservation).collect()
        })
        .await
    }
}

/// The prefixes that tell `instance`'s earlier lives (`(earlier, this_process)`): an id that
/// starts with `earlier` (`<name>/`) but not with `this_process` (`<name>/<pid>-`) is this
/// instance's name in another process, taken for a previous start of this server whose running
/// VMs ended with it. Instance names must therefore differ among the servers sharing a
/// database (`[cluster] instance`; the default, the host name, differs per machine). Two stores
/// of one process (tests) are not each other's earlier lives. `(None, None)` for an id not of
/// the form `<name>/<pid>-<start>`.
fn earlier_lives(instance: &InstanceId) -> (Option<String>, Option<String>) {
    let Some((name, rest)) = instance.as_str().split_once('/') else { return (None, None) };
    let Some((pid, _start)) = rest.split_once('-') else { return (None, None) };
    (Some(format!("{name}/")), Some(format!("{name}/{pid}-")))
}

/// The columns [`hook_delivery`] reads.
const HOOK_COLUMNS: &str =
    "hook, delivery_id, body_sha256, version, state, deployment_id, error, received_ms";

fn hook_delivery(row: &PgRow) -> Result<HookDelivery, StoreError> {
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

    #[test]
    fn a_url_shows_without_its_password() {
        let url = PostgresUrl::parse("postgres://vesemir:s3cret@db.example:5432/vesemir").expect("valid");
        assert_eq!(url.to_string(), "postgres://vesemir:***@db.example:5432/vesemir");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(PostgresUrl::parse("mysql://x@y/z").is_err());
        let plain = PostgresUrl::parse("postgresql://vesemir@127.0.0.1/v").expect("valid");
        assert_eq!(plain.to_string(), "postgresql://vesemir@127.0.0.1/v");
    }
}
