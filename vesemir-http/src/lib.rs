//! Vesemir's self-service deployment server: a JSON API under `/v1` to start, list, follow
//! (server-sent events) and cancel deployments, persisted in SQLite (one server) or PostgreSQL
//! (several servers on one database), with bearer tokens bound to teams, limits, Prometheus
//! metrics and an OpenAPI description.
//!
//! The server never chooses adapters: a [`PortsFactory`] gives each deployment its ports.
//! [`Server::open`] opens the database (marking deployments that no live instance holds
//! `interrupted`), starts the instance's lease keeper ([`lease`]) and builds the
//! [`axum::Router`]; [`serve`] binds and serves it.
//!
//! ```text
//! POST /v1/deployments               202 { id, status, links }   (Idempotency-Key supported)
//! GET  /v1/deployments?application=&environment=&team=&status=&limit=&before=
//! GET  /v1/deployments/{id}          status, hosts, timings, requested_by
//! GET  /v1/deployments/{id}/events   text/event-stream, Last-Event-ID replay then live
//! POST /v1/deployments/{id}/cancel
//! POST /v1/deployments/{id}/confirm  (a canary waiting for confirmation)
//! POST /v1/deployments/{id}/recover  (put back what its journal left out of rotation)
//! POST /v1/deployments/{id}/restore  (the same, for some hosts: { "hosts": [...] })
//! POST /v1/deployments/{id}/retry    (a new deployment of the hosts it did not finish)
//! POST /v1/hooks/{name}             (a CI hook's signed delivery: deploys its unit)
//!                                    (and a unit's `source`: its APT repository is watched, [`source`])
//! GET  /v1/applications/{app}/environments/{env}/history
//! POST /v1/applications/{app}/environments/{env}/rollback  ({ "to": VERSION } optional)
//! GET  /healthz /readyz /metrics /openapi.json /docs
//! ```
//!
//! How it behaves:
//! - **Requests** name a unit of the operator's catalog ([`catalog`]): team, application,
//!   environment, a version, the unit's declared variables and a strategy within its limits
//!   ([`UnitRequest`]). Fields naming hosts, load balancers, sockets, Chef environments, raw
//!   queries or changesets get 422 naming each and saying that the operator sets them; a unit
//!   not in the catalog is denied (403). Malformed JSON and unknown fields get 400, invalid
//!   values 422, each problem as `{ field, message }`; bodies over `limits.max_body_bytes` get
//!   413, a body not sent as JSON 415.
//! - **Errors** are RFC 9457 problem details (`application/problem+json`: `type`, `title`,
//!   `status`, `detail`, `instance`), the per-field problems in the `problems` member.
//! - **Contract**: `/openapi.json` says what the server accepts and answers (schemas derived
//!   from the types it reads and writes); `/docs` renders it; schemathesis checks the two agree
//!   (`tests/schemathesis.rs`).
//! - **Who asked**: `requested_by` is the authenticated identity's name. A body that sets it to
//!   anything else is refused (422).
//! - **Auth**: `Authorization: Bearer <token>`; tokens are configured as SHA-256 hashes, each
//!   belonging to teams with roles (`deploy`, `read`) or admin ([`auth::Principal`]). Another
//!   team's deployment is 404, as if it did not exist; a reader's order is 403.
//! - **One at a time**: a second deployment of an application and environment while one is
//!   queued or running gets 409 saying it is busy (naming the running one only to a caller
//!   who may read it). `Idempotency-Key` (per token) returns the same
//!   deployment (200) for the same body, and 422 for another body.
//! - **Queue**: at most `limits.max_concurrent_deployments` run; the rest wait as `queued` (FIFO)
//!   up to `limits.max_queued_deployments` (then 429). Cancel works on queued ones too.
//! - **Persistence**: deployments, per-host results and every event are stored before live
//!   followers see them. Every load balancer change is preceded by a journal entry with the
//!   server's original state, committed first ([`journal`]); a store that fails stops the
//!   deployment (no new host starts; it ends `stopped`, naming the hosts that may be out). At
//!   startup, deployments left queued or running are marked `interrupted`, with
//!   `out_of_rotation` listing the hosts their journal left out (taken out and never finished,
//!   or finished out of rotation); `POST .../recover` puts them back, health gate first, to
//!   their original state and weight.
//! - **HTTPS**: with `[tls]`, `listen` serves TLS (rustls), the certificate reloaded on SIGHUP
//!   and when its files change ([`tls`], [`reload`]); plain HTTP only on a loopback `listen`
//!   unless `allow_plain_http` is set. Texts given to callers carry no server file path
//!   ([`server_paths`]).
//! - **Timeouts**: `limits.request_timeout` bounds every call but event streams (408);
//!   `limits.deployment_timeout` aborts a deployment; `limits.call_timeout` bounds each port call.
//! - **Stop** (SIGTERM, Ctrl-C): admissions close (503 with `Retry-After`), deployments in
//!   flight are cancelled and awaited up to `limits.shutdown_grace`, the rest aborted and
//!   recorded `interrupted` with the servers that may be out; then the listener closes
//!   ([`shutdown`]).
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod catalog;
mod clock;
pub mod config;
mod docs;
pub mod followup;
pub mod hooks;
pub mod journal;
pub mod lease;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod openapi;
mod phase_text;
pub mod ports;
pub mod promotion;
pub mod reload;
pub mod retention;
mod routes;
pub mod runner;
pub mod server_paths;
pub mod shutdown;
pub mod source;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod vm_wire;
pub mod vms;
pub mod web;
pub mod wire;

use std::sync::Arc;

use axum::Router;

pub use auth::{Principal, PrincipalSource, Role, Tokens};
pub use catalog::{Catalog, UnitConfig, UnitRequest};
pub use config::{
    ClusterConfig, Database, DriverOptions, Limits, LogConfig, ServerConfig, TokenConfig, VmAllow, VmRules,
};
pub use ports::{FixedPorts, LockSettings, PortsError, PortsFactory, Provisioning};
pub use reload::{Reload, Reloads};
pub use store::{
    InstanceId, PostgresStore, PostgresUrl, SqliteStore, Status, Store, StoreError, StoreOptions, WebSession,
};
pub use tls::TlsConfig;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid: every problem, each with its field path.
    #[error("the server configuration is invalid: {0}")]
    Config(#[from] vesemir_core::request::ValidationErrors),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Listening or serving failed.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address that could not be bound or served.
        address: std::net::SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// SIGHUP could not be caught (it would end the server instead of reloading it).
    #[error("cannot catch SIGHUP to reload on it: {0}")]
    Signal(#[source] std::io::Error),
}

/// An opened server: its state and routes, not yet listening.
#[derive(Debug, Clone)]
pub struct Server {
    app: api::AppState,
    /// The web page's state, when `[ldap]` is configured.
    web: Option<Arc<web::Web>>,
}

impl Server {
    /// Validates `config`, opens its database (SQLite, or PostgreSQL shared with other
    /// instances) and marks deployments that no live instance holds `interrupted`.
    pub async fn open(config: &ServerConfig, factory: Arc<dyn PortsFactory>) -> Result<Self, ServeError> {
        config.validate()?;
        let options = config.cluster.store_options();
        let store: Arc<dyn Store> = match &config.database {
            Database::Sqlite(path) => Arc::new(SqliteStore::open_with(path, options).await?),
            Database::Postgres(url) => Arc::new(PostgresStore::open(url, options).await?),
        };
        Self::with_store(config, factory, store).await
    }

    /// Like [`Server::open`], over any [`Store`].
    pub async fn with_store(
        config: &ServerConfig,
        factory: Arc<dyn PortsFactory>,
        store: Arc<dyn Store>,
    ) -> Result<Self, ServeError> {
        let config::Validated { playbooks, catalog } = config.validate()?;
        let web = match &config.ldap {
            Some(ldap) => Some(Arc::new(
                web::Web::new(ldap, config.listen, &config.units)?.with_vms(config.vms.is_some()),
            )),
            None => None,
        };
        let hooks = Arc::new(hooks::Hooks::load(&config.units).map_err(|problems| {
            vesemir_core::request::ValidationErrors::from_errors(problems).unwrap_or_else(|| {
                vesemir_core::request::ValidationErrors::one(vesemir_core::request::FieldError::new(
                    "units",
                    "is invalid",
                ))
            })
        })?);
        let notifier = notify::Notifier::start(&config.units, store.clone()).map_err(|problems| {
            vesemir_core::request::ValidationErrors::from_errors(problems).unwrap_or_else(|| {
                vesemir_core::request::ValidationErrors::one(vesemir_core::request::FieldError::new(
                    "units",
                    "is invalid",
                ))
            })
        })?;
        let provisioning = factory.provisioning().map_err(|e| {
            vesemir_core::request::ValidationErrors::one(vesemir_core::request::FieldError::new(
                "provision",
                e.to_string(),
            ))
        })?;
        let vms = Arc::new(vms::Vms::open(
            config.vms.as_ref(),
            provisioning,
            web.as_ref().map(|web| web.directory()),
        )?);
        let metrics = Arc::new(metrics::Metrics::new());
        let runner = Arc::new(
            runner::Runner::new(store.clone(), metrics.clone(), config.limits.clone())
                .with_locks(factory.locks())
                .with_health_probe(factory.health_probe())
                .with_checks_while_out(config.driver.checks_while_out),
        );
        let watcher = notifier.clone();
        runner.set_on_admitted(Arc::new(move |id, events| watcher.watch(id, events)));
        let lease = store.lease();
        metrics.instance(store.instance().as_str());
        tokio::spawn(retention::keep(Arc::downgrade(&store), config.limits.event_retention, metrics.clone()));
        if let Some(web) = &web {
            tokio::spawn(web::prune_sessions(Arc::downgrade(&store), web.clone()));
        }
        let app = Arc::new(api::App {
            store,
            runner,
            tokens: config.tokens(),
            playbooks,
            catalog,
            factory,
            limits: config.limits.clone(),
            metrics: metrics.clone(),
            openapi: Arc::new(openapi::to_json(&routes::document())),
            recoveries: Arc::default(),
            streams: Arc::new(limits::EventStreams::new(metrics.clone())),
            hooks,
            promotions: Arc::new(promotion::Promotions::from_units(&config.units)),
            notifier,
            vms,
        });
        // on_failure = "rollback": once a deployment has ended, its follow-up (if any) is
        // submitted like any other deployment.
        let weak = Arc::downgrade(&app);
        app.runner.set_after_end(Arc::new(move |id| {
            if let Some(app) = weak.upgrade() {
                app.hooks.wake();
                tokio::spawn(promotion::after_end(app.clone(), id));
                tokio::spawn(followup::after_end(app, id));
            }
        }));
        // Deployments no live instance holds: taken over (PostgreSQL), else interrupted.
        let (taken, interrupted) = runner::takeover::sweep(&app).await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "deployments were interrupted by the previous server's stop");
        }
        if taken > 0 {
            tracing::warn!(
                taken,
                "deployments of instances that stopped renewing their leases were taken over"
            );
        }
        // VMs whose create or destroy no live instance runs.
        vms::Vms::interrupt_unfinished(&app.store).await?;
        tokio::spawn(lease::keep(Arc::downgrade(&app), lease));
        // CI hooks' deliveries that wait for their unit start once it is free.
        tokio::spawn(hooks::dispatch(Arc::downgrade(&app)));
        // Units' package sources: each newer version is deployed through the same path.
        source::watch_all(&app, &config.units);
        Ok(Self { app, web })
    }

    /// The routes. The request timeout applies to every route but the event stream.
    pub fn router(&self) -> Router {
        let api = routes::router(self.app.clone(), &self.app.limits);
        match &self.web {
            Some(web) => web::router(self.app.clone(), web.clone()).merge(api),
            None => api,
        }
    }

    /// The router of the separate metrics address (`metrics_listen`): `GET /metrics` only,
    /// without a token.
    pub fn metrics_router(&self) -> Router {
        let app = self.app.clone();
        Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let app = app.clone();
                async move { api::metrics_text(&app).await }
            }),
        )
    }

    /// Re-reads the adapters' key files (and inventory file) through the factory's
    /// [`PortsFactory::reload`]: deployments that start after it use what was read; on an error
    /// (logged for the operators and returned) the previous ones stay in use.
    pub fn reload_adapters(&self) -> Result<(), PortsError> {
        match self.app.factory.reload() {
            Ok(()) => {
                tracing::info!("the adapters' key files were read again");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading the adapters' key files failed: the previous ones stay in use");
                Err(e)
            }
        }
    }

    /// Deployments queued or running now.
    pub fn active_deployments(&self) -> usize {
        self.app.runner.active_count()
    }

    /// The stop's first steps ([`shutdown`]): closes admissions (503 from now on), cancels
    /// every deployment in flight and waits up to `limits.shutdown_grace` for them to end,
    /// aborts the rest (each ends `interrupted`, naming the servers that may be out of
    /// rotation) and waits for their records.
    pub async fn shutdown(&self) -> shutdown::ShutdownOutcome {
        // VM creates running here are undone (cancelled) while the deployments drain; what
        // still runs after the grace ends `interrupted`.
        let grace_end = tokio::time::Instant::now().checked_add(self.app.limits.shutdown_grace);
        let vm_runs = self.app.vms.cancel_creates();
        let outcome = shutdown::drain(&self.app).await;
        if vm_runs > 0 {
            if let Some(end) = grace_end {
                self.app.vms.wait_idle(end).await;
            }
        }
        let aborted = self.app.vms.abort_all(&self.app.store).await;
        if aborted > 0 {
            tracing::warn!(aborted, "VM creates and destroys were running at shutdown: they are interrupted");
        }
        outcome
    }
}

impl Server {
    /// Serves on `listener` until `stop` resolves. Then it stops as [`shutdown`] says: admissions
    /// refused with 503 while the listener still answers, deployments in flight cancelled and
    /// awaited up to `limits.shutdown_grace`, the rest aborted and recorded
    /// ([`Server::shutdown`]); only then does it stop accepting connections; event streams end
    /// with their deployments, and any still open a few seconds later are dropped.
    pub async fn serve_on<L>(
        &self,
        listener: L,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error>
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    {
        let (stopping, mut graceful) = tokio::sync::watch::channel(false);
        let routes = self.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
        // `tap_io` makes the peer's address `ConnectInfo` for any listener, plain or TLS.
        let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
        let http = axum::serve(listener, routes).with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        });
        let http = tokio::spawn(async move { http.await });
        stop.await;
        self.shutdown().await;
        let _ = stopping.send(true);
        match tokio::time::timeout(shutdown::HTTP_CLOSE_WAIT, http).await {
            Ok(Ok(result)) => result,
            _ => Ok(()),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Opens the server and serves it on `config.listen` until Ctrl-C or SIGTERM. Then it stops as
/// [`shutdown`] says: admissions refused (503), deployments in flight cancelled and awaited up
/// to `limits.shutdown_grace`, the rest aborted and recorded, and only then the listener closed.
/// SIGHUP reloads the TLS certificate and the adapters' key files ([`serve_with`] adds other
/// reloads).
pub async fn serve(config: ServerConfig, factory: Arc<dyn PortsFactory>) -> Result<(), ServeError> {
    serve_with(config, factory, Reloads::default()).await
}

/// [`serve`], with `reloads` run on SIGHUP besides the TLS certificate's (HTTPS with `[tls]`:
/// [`tls`]; the certificate is also reloaded when its files change).
pub async fn serve_with(
    config: ServerConfig,
    factory: Arc<dyn PortsFactory>,
    reloads: Reloads,
) -> Result<(), ServeError> {
    // First: from here on SIGHUP reloads instead of ending the process.
    let hangups = reload::Hangups::register().map_err(ServeError::Signal)?;
    telemetry::init(&config.log);
    let adapters = Arc::clone(&factory);
    let reloads = reloads.with_fn("the adapters' key files and inventory file", move || {
        adapters.reload().map_err(|e| Box::new(e) as reload::ReloadError)
    });
    let server = Server::open(&config, factory).await?;
    let certificates = config.tls.as_ref().map(tls::Certificates::load).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen { address: config.listen, source })?;
    let scheme = if certificates.is_some() { "https" } else { "http" };
    tracing::info!(address = %config.listen, scheme, "listening");
    if let Some(address) = config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ServeError::Listen { address, source })?;
        tracing::info!(address = %address, "serving /metrics without a token");
        let router = server.metrics_router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    let listen_error = |source| ServeError::Listen { address: config.listen, source };
    match certificates {
        Some(certificates) => {
            hangups.spawn(reloads.with(certificates.clone()));
            let listener = tls::listen(listener, &certificates).map_err(listen_error)?;
            server.serve_on(listener, stop_signal()).await.map_err(listen_error)
        }
        None => {
            hangups.spawn(reloads);
            server.serve_on(listener, stop_signal()).await.map_err(listen_error)
        }
    }
}
