//! The SQLite store: one file, WAL journal, migrations applied in order at open. Commits are
//! `synchronous = NORMAL` (durable against a crash of the process, not of the machine), except
//! deployment journal entries, committed with `synchronous = FULL` (the WAL is synced before the
//! commit returns), because a load balancer change follows each one.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use vesemir_core::journal::{replay, JournalEntry};
use vesemir_core::name::HostName;
use vesemir_core::{Event, HostProgress, Progress};

use super::{
    DeploymentRecord, Finish, HostRecord, Inserted, Interrupted, ListFilter, NewDeployment, Origin, Status,
    Store, StoreError,
};

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
];

const COLUMNS: &str = "id, application, environment, team, version, requested_by, playbook, query, request, \
     status, error, host_count, totals, out_of_rotation, cancel_requested, idempotency_key, body_sha256, \
     created_ms, started_ms, finished_ms";

/// Deployments in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// A list of host names as stored (JSON), or NULL.
fn encode_hosts(hosts: Option<&[String]>) -> Result<Option<String>, StoreError> {
    hosts.map(|h| serde_json::to_string(h).map_err(|e| StoreError::new("encoding hosts", e))).transpose()
}

/// A stored list of host names.
fn decode_hosts(text: Option<&str>) -> Result<Option<Vec<String>>, StoreError> {
    text.map(|t| serde_json::from_str(t).map_err(|e| StoreError::new("decoding hosts", e))).transpose()
}

fn err(context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::new(context, e)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
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
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new(format!("opening {}", path.display()), e))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(err("creating schema_migrations"))?;
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
    let millis = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let state = HostProgress {
        name: HostName::new(&name).map_err(|e| StoreError::new("reading a host's name", e))?,
        phase: crate::phase_text::parse(&phase)
            .ok_or_else(|| StoreError::new("reading a host's phase", format!("unknown phase {phase:?}")))?,
        outcome: outcome.as_deref().map(from_text).transpose()?,
        error: row.try_get("error").map_err(get)?,
        rotation: from_text(&rotation)?,
        started: started.map(millis),
        finished: finished.map(millis),
    };
    Ok(HostRecord {
        position: row.try_get("position").map_err(get)?,
        address: row.try_get("address").map_err(get)?,
        server: row.try_get("server").map_err(get)?,
        state,
    })
}

/// A unit enum's serde name (`in_rotation`, `succeeded`), the text its column holds.
fn to_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        Ok(other) => Err(StoreError::new("encoding a column", format!("{other} is not a name"))),
        Err(e) => Err(StoreError::new("encoding a column", e)),
    }
}

/// The unit enum named `text` by serde, as [`to_text`] wrote it.
fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    use serde::de::IntoDeserializer;
    T::deserialize(text.into_deserializer())
        .map_err(|e: serde::de::value::Error| StoreError::new("reading a column", e))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Hosts that may be out of rotation after the deployment's `events`, by name: the core's fold
/// says which ([`Progress::out_of_rotation`]).
fn hosts_out_of_rotation(events: &[Event]) -> Vec<String> {
    let mut names: Vec<String> =
        Progress::from_events(events).out_of_rotation().map(|h| h.name.to_string()).collect();
    names.sort();
    names
}

/// Hosts a journal leaves unfinished (interrupted mid-change, or ended out of rotation), by name,
/// sorted; `None` when the journal has no header (no journal).
fn hosts_left_by_journal(entries: &[JournalEntry]) -> Option<Vec<String>> {
    let unfinished = replay(entries.iter().cloned());
    unfinished.header.as_ref()?;
    let mut names: Vec<String> = unfinished.servers.iter().map(|s| s.host.to_string()).collect();
    names.sort();
    Some(names)
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

async fn insert_row(conn: &mut sqlx::SqliteConnection, d: &NewDeployment) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO deployments (application, environment, team, version, requested_by, playbook, query, \
         request, status, idempotency_key, body_sha256, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id",
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
    .fetch_one(&mut *conn)
    .await
    .map_err(err("inserting a deployment"))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert(&self, d: &NewDeployment) -> Result<Inserted, StoreError> {
        if d.idempotency_key.is_none() {
            // One statement is atomic on its own: no transaction round trips.
            let mut conn = self.pool.acquire().await.map_err(err("connecting"))?;
            return insert_row(&mut conn, d).await.map(Inserted::New);
        }
        let mut tx = self.pool.begin().await.map_err(err("starting an insert"))?;
        if let Some(key) = &d.idempotency_key {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM deployments WHERE requested_by = ? AND idempotency_key = ?"
            ))
            .bind(&d.requested_by)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("looking up an idempotency key"))?;
            if let Some(row) = row {
                return Ok(Inserted::Existing(Box::new(deployment(&row)?)));
            }
        }
        let id = insert_row(&mut tx, d).await?;
        tx.commit().await.map_err(err("committing a deployment"))?;
        Ok(Inserted::New(id))
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
        sqlx::query("UPDATE deployments SET status = 'running', started_ms = ? WHERE id = ?")
            .bind(started_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err("marking a deployment running"))?;
        Ok(())
    }

    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("starting to record a plan"))?;
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
        let mut tx = self.pool.begin().await.map_err(err("starting to append events"))?;
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
        let mut tx = self.pool.begin().await.map_err(err("starting to finish"))?;
        sqlx::query(
            "UPDATE deployments SET status = ?, error = ?, totals = ?, out_of_rotation = ?, finished_ms = ? \
             WHERE id = ?",
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
        tx.commit().await.map_err(err("committing a finish"))
    }

    async fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Interrupted>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM deployments WHERE status IN ('queued', 'running') ORDER BY id"
        ))
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
            sqlx::query(
                "UPDATE deployments SET status = 'interrupted', out_of_rotation = ?, finished_ms = ?, \
                 error = 'the server stopped while this deployment was running: check the hosts listed in out_of_rotation' \
                 WHERE id = ?",
            )
            .bind(encoded)
            .bind(now_ms)
            .bind(d.id)
            .execute(&self.pool)
            .await
            .map_err(err("marking a deployment interrupted"))?;
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
        let inserted = sqlx::query("INSERT INTO deployment_journal (deployment_id, body) VALUES (?, ?)")
            .bind(id)
            .bind(body)
            .execute(&mut *conn)
            .await
            .map_err(err("appending to the journal"));
        if sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await.is_err() {
            conn.close_on_drop();
        }
        inserted.map(drop)
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
        sqlx::query("UPDATE deployments SET out_of_rotation = ? WHERE id = ?")
            .bind(encoded)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err("recording hosts out of rotation"))?;
        Ok(())
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("ping"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vesemir_core::event::{EventKind, Phase};

    use super::*;

    fn at(seq: u64, kind: EventKind) -> Event {
        Event { seq, elapsed: Duration::from_millis(seq), kind }
    }

    fn phase(seq: u64, host: &str, phase: Phase) -> Event {
        at(seq, EventKind::HostPhase { host: vesemir_core::name::HostName::new(host).expect("valid"), phase })
    }

    fn finished(seq: u64, host: &str, rotation: vesemir_core::event::Rotation) -> Event {
        at(
            seq,
            EventKind::HostFinished {
                host: vesemir_core::name::HostName::new(host).expect("valid"),
                outcome: vesemir_core::event::HostOutcome::Failed,
                phase: Phase::Done,
                error: None,
                rotation,
                out_of_rotation_ms: None,
            },
        )
    }

    #[test]
    fn hosts_out_of_rotation_are_drained_unfinished_ones_and_finished_ones_not_in_rotation() {
        use vesemir_core::event::Rotation;
        let events = vec![
            phase(1, "connected-only", Phase::Connecting),
            phase(2, "drained", Phase::Connecting),
            phase(3, "drained", Phase::Draining),
            phase(4, "in-step", Phase::Step { number: 1, name: "install".into() }),
            phase(5, "back", Phase::Draining),
            finished(6, "back", Rotation::InRotation),
            phase(7, "failed-out", Phase::Draining),
            finished(8, "failed-out", Rotation::OutOfRotation),
            phase(9, "unknown", Phase::Draining),
            finished(10, "unknown", Rotation::Unknown),
        ];
        assert_eq!(hosts_out_of_rotation(&events), vec!["drained", "failed-out", "in-step", "unknown"]);
    }

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
}
