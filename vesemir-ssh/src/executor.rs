//! [`SshExecutor`]: the [`Executor`] port over libssh2, one session per host, every libssh2 call
//! on tokio's blocking pool so the async workers never wait on the network.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use vesemir_core::lock::{HeldLock, LockClaim, LockHolder, LockOutcome, RefreshOutcome, ReleaseOutcome};
use vesemir_core::name::HostName;
use vesemir_core::ports::{Executor, ExitStatus, FileUpload, OutputSink, RemoteCommand};
use vesemir_core::{Host, PortError};

use crate::config::{HostKeyMode, SshAuth, SshConfig};
use crate::connection::Connection;
use crate::error::SshError;
use crate::key::LoadedKey;
use crate::lock::{self as host_lock, LockOp, Reply};
use crate::remote::{self, StepError};

/// Runs changeset steps over SSH. Cheap to clone; clones share the sessions.
///
/// Each host gets one SSH session, opened by [`connect`](Executor::connect) (or by the first
/// step) and reused for all its steps until [`close`](Executor::close). Steps on one host run
/// one at a time; steps on different hosts run in parallel, each on a thread of tokio's
/// blocking pool (size it above the deployment's concurrency; tokio's default is 512).
///
/// Commands run under `/bin/sh` on the host, in their own process group, with the environment
/// passed as shell-quoted `env NAME=value` arguments (so sshd's `AcceptEnv` does not matter);
/// a command that outlives its timeout has its whole process group killed.
///
/// Host locks live on each host, in `$HOME/.vesemir/lock` of the SSH user unless
/// [`with_lock_dir`](SshExecutor::with_lock_dir) says otherwise (see the crate's `lock` module
/// documentation for how they are kept).
#[derive(Clone)]
pub struct SshExecutor {
    inner: Arc<Inner>,
    lock_dir: Option<Arc<str>>,
}

struct Inner {
    config: SshConfig,
    slots: Mutex<HashMap<HostName, Arc<Mutex<Slot>>>>,
    /// The key file's contents once [`SshExecutor::load_key`] read them: sessions then
    /// authenticate from memory and read no file.
    key: Mutex<Option<Arc<LoadedKey>>>,
}

/// One host's session, if open, and the address it was opened to.
#[derive(Default)]
struct Slot {
    connection: Option<(String, Connection)>,
}

impl SshExecutor {
    /// An executor with `config`. Logs a warning when host key checking is off.
    pub fn new(config: SshConfig) -> Self {
        if config.host_key_mode == HostKeyMode::Off {
            tracing::warn!(
                "SSH host key checking is OFF (host_key_mode = off): connections can be intercepted; \
                 use strict or accept-new in production"
            );
        }
        Self {
            inner: Arc::new(Inner { config, slots: Mutex::new(HashMap::new()), key: Mutex::new(None) }),
            lock_dir: None,
        }
    }

    /// Reads the key file of [`SshAuth::KeyFile`] into memory: every session opened after it
    /// (by this executor and its clones) authenticates with what was read, and no file is read
    /// when a host is connected. Call it again to re-read the file (a rotated key); on an error
    /// the key read before stays in use. Nothing to read with `ssh-agent`.
    pub fn load_key(&self) -> Result<(), PortError> {
        let SshAuth::KeyFile { path, .. } = &self.inner.config.auth else { return Ok(()) };
        let key = LoadedKey::read(path).map_err(|e| e.into_port("ssh key"))?;
        *lock(&self.inner.key) = Some(Arc::new(key));
        Ok(())
    }

    /// Keeps host locks in `dir` on every host instead of `$HOME/.vesemir/lock`. A relative
    /// path is relative to the SSH user's home; `$VARIABLES` are not expanded. Every deployer
    /// of a fleet must use the same directory (a shared one, such as `/var/lib/vesemir/lock`,
    /// when they log in as different users). Clones made after this call use it too.
    pub fn with_lock_dir(mut self, dir: impl Into<String>) -> Self {
        self.lock_dir = Some(Arc::from(dir.into()));
        self
    }

    /// The directory that holds host locks, when set by [`with_lock_dir`](Self::with_lock_dir).
    pub fn lock_dir(&self) -> Option<&str> {
        self.lock_dir.as_deref()
    }

    /// Runs the lock command for `op` on `host` and gives its reply.
    async fn lock_command(&self, host: &Host, op: LockOp<'_>) -> Result<Reply, PortError> {
        let command =
            host_lock::command(&op, self.lock_dir.as_deref()).map_err(|e| e.into_port(&host.to_string()))?;
        self.with_connection(host, move |connection, cancel| {
            let (sink, mut receiver) = OutputSink::channel();
            let status = remote::run(connection, &command, sink, cancel)?;
            Ok(Reply { status, lines: receiver.drain() })
        })
        .await
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SshConfig {
        &self.inner.config
    }

    /// How many hosts have a session slot now.
    pub fn sessions(&self) -> usize {
        lock(&self.inner.slots).len()
    }

    fn slot(&self, host: &HostName) -> Arc<Mutex<Slot>> {
        lock(&self.inner.slots).entry(host.clone()).or_default().clone()
    }

    /// Runs `work` with `host`'s open connection on a blocking thread, opening it first if
    /// needed. A stale reused connection is replaced once; a broken one is dropped after.
    async fn with_connection<T: Send + 'static>(
        &self,
        host: &Host,
        work: impl Fn(&mut Connection, &AtomicBool) -> Result<T, StepError> + Send + 'static,
    ) -> Result<T, PortError> {
        let target = host.to_string();
        let slot = self.slot(&host.name);
        let inner = self.inner.clone();
        let address = host.address.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let task = tokio::task::spawn_blocking(move || {
            let mut slot = lock(&slot);
            let mut fresh = false;
            for _ in 0..2 {
                let connection = match &mut slot.connection {
                    Some((open_to, connection)) if *open_to == address => connection,
                    _ => {
                        slot.connection = None;
                        let key = lock(&inner.key).clone();
                        let connection = Connection::open(&address, &inner.config, key.as_deref())?;
                        fresh = true;
                        &mut slot.connection.insert((address.clone(), connection)).1
                    }
                };
                match work(connection, &cancel) {
                    Ok(value) => return Ok(value),
                    Err(StepError::Step(e)) => return Err(e),
                    Err(StepError::Stale(e)) if !fresh => {
                        tracing::debug!(%address, error = %e, "SSH session went stale, reconnecting");
                        slot.connection = None;
                    }
                    Err(StepError::Broken(e) | StepError::Stale(e)) => {
                        slot.connection = None;
                        return Err(e);
                    }
                }
            }
            Err(SshError::Remote("the SSH session broke twice in a row".into()))
        });
        match task.await {
            Ok(result) => result.map_err(|e| e.into_port(&target)),
            Err(join) => Err(PortError::Adapter {
                adapter: "ssh",
                source: format!("{target}: the SSH worker thread failed: {join}").into(),
            }),
        }
    }
}

#[async_trait]
impl Executor for SshExecutor {
    async fn connect(&self, host: &Host) -> Result<(), PortError> {
        self.with_connection(host, |_, _| Ok(())).await
    }

    async fn run(
        &self,
        host: &Host,
        command: &RemoteCommand,
        output: OutputSink,
    ) -> Result<ExitStatus, PortError> {
        let command = command.clone();
        self.with_connection(host, move |connection, cancel| {
            remote::run(connection, &command, output.clone(), cancel)
        })
        .await
    }

    async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError> {
        let upload = upload.clone();
        self.with_connection(host, move |connection, cancel| remote::upload(connection, &upload, cancel))
            .await
    }

    async fn close(&self, host: &Host) {
        let slot = lock(&self.inner.slots).remove(&host.name);
        let Some(slot) = slot else { return };
        // Waits for a step still running on the host; its own deadline bounds that.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some((_, connection)) = lock(&slot).connection.take() {
                connection.disconnect();
            }
        })
        .await;
    }

    async fn acquire_lock(&self, host: &Host, claim: &LockClaim) -> Result<LockOutcome, PortError> {
        let reply = self.lock_command(host, LockOp::Acquire(claim)).await?;
        host_lock::acquired(&reply).map_err(|e| e.into_port(&host.to_string()))
    }

    async fn release_lock(&self, host: &Host, holder: &LockHolder) -> Result<ReleaseOutcome, PortError> {
        let reply = self.lock_command(host, LockOp::Release(holder)).await?;
        host_lock::released(&reply).map_err(|e| e.into_port(&host.to_string()))
    }

    async fn refresh_lock(&self, host: &Host, holder: &LockHolder) -> Result<RefreshOutcome, PortError> {
        let reply = self.lock_command(host, LockOp::Refresh(holder)).await?;
        host_lock::refreshed(&reply).map_err(|e| e.into_port(&host.to_string()))
    }

    async fn read_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
        let reply = self.lock_command(host, LockOp::Read).await?;
        host_lock::found(&reply).map_err(|e| e.into_port(&host.to_string()))
    }

    async fn break_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
        let reply = self.lock_command(host, LockOp::Break).await?;
        host_lock::found(&reply).map_err(|e| e.into_port(&host.to_string()))
    }
}

impl fmt::Debug for SshExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshExecutor")
            .field("config", &self.inner.config)
            .field("sessions", &self.sessions())
            .field("lock_dir", &self.lock_dir)
            .finish()
    }
}

/// Tells the blocking thread to stop when the step's future is dropped (cancelled).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Locks a mutex. It is only poisoned if a thread panicked while holding it; the map or slot
/// is still consistent then (every update is a single insert or take).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
