//! The `Executor` port: run a changeset's commands on a host, streaming their output.

use std::fmt::{self, Debug};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::PortError;
use crate::host::Host;
use crate::lock::{HeldLock, LockClaim, LockHolder, LockOutcome, RefreshOutcome, ReleaseOutcome};
use crate::name::EnvVarName;

/// A command to run on a host. Its text was rendered from the operator's template with every
/// variable shell-quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    /// The shell command line.
    pub script: String,
    /// Environment variables to set for it: shell identifiers by their type, values set as
    /// literal text.
    pub env: Vec<(EnvVarName, String)>,
    /// How long it may run; past that the executor ends it and returns [`PortError::Timeout`].
    pub timeout: Duration,
    /// How many bytes of output to stream at most; the rest is dropped with one notice line.
    pub output_limit: usize,
}

/// A file to copy to a host, written atomically (temporary file, then rename).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUpload {
    /// The local file.
    pub source: PathBuf,
    /// The path on the host.
    pub destination: String,
    /// Unix permission bits, e.g. `0o755`.
    pub mode: u32,
    /// How long the copy may take.
    pub timeout: Duration,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when the command exited.
    pub code: Option<i32>,
    /// The signal's name, when a signal ended it.
    pub signal: Option<String>,
}

impl ExitStatus {
    /// An exit with `code`.
    pub fn code(code: i32) -> Self {
        Self { code: Some(code), signal: None }
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (_, Some(signal)) => write!(f, "killed by signal {signal}"),
            (Some(code), None) => write!(f, "exit code {code}"),
            (None, None) => f.write_str("no exit status"),
        }
    }
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a command's output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// Where it came from.
    pub stream: OutputStream,
    /// The line's text, as UTF-8 (invalid bytes replaced), without its line ending.
    pub text: String,
}

/// Where an executor sends output lines as they arrive. Cheap to clone, `'static`, and usable
/// from blocking threads: sending never blocks.
#[derive(Debug, Clone)]
pub struct OutputSink {
    tag: usize,
    sender: mpsc::UnboundedSender<(usize, OutputLine)>,
}

impl OutputSink {
    /// A sink and the receiver that gets its lines.
    pub fn channel() -> (OutputSink, OutputReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (OutputSink { tag: 0, sender }, OutputReceiver { receiver })
    }

    /// Sends one line. Returns false when nobody listens any more.
    pub fn send(&self, stream: OutputStream, text: impl Into<String>) -> bool {
        self.sender.send((self.tag, OutputLine { stream, text: text.into() })).is_ok()
    }

    /// A sink into the same channel whose lines carry `tag`.
    pub(crate) fn tagged(&self, tag: usize) -> OutputSink {
        OutputSink { tag, sender: self.sender.clone() }
    }
}

/// Receives the lines of an [`OutputSink`].
#[derive(Debug)]
pub struct OutputReceiver {
    receiver: mpsc::UnboundedReceiver<(usize, OutputLine)>,
}

impl OutputReceiver {
    /// The next line, or `None` once every sink is dropped.
    pub async fn recv(&mut self) -> Option<OutputLine> {
        self.receiver.recv().await.map(|(_, line)| line)
    }

    /// Every line already sent, without waiting.
    pub fn drain(&mut self) -> Vec<OutputLine> {
        std::iter::from_fn(|| self.receiver.try_recv().ok()).map(|(_, line)| line).collect()
    }

    /// The next line with the tag of the sink that sent it.
    pub(crate) async fn recv_tagged(&mut self) -> Option<(usize, OutputLine)> {
        self.receiver.recv().await
    }
}

/// Runs commands on hosts. An executor keeps one session per host between
/// [`connect`](Executor::connect) and [`close`](Executor::close), reused for all its steps.
#[async_trait]
pub trait Executor: Send + Sync + Debug {
    /// Opens (or checks) the session to `host`. [`PortError::Unreachable`] when it cannot be
    /// reached, [`PortError::Unauthorized`] when it refuses the credentials or its key changed.
    async fn connect(&self, host: &Host) -> Result<(), PortError>;

    /// Runs `command` on `host`, sending its output to `output` line by line as it arrives.
    /// A non-zero exit is `Ok` with that status; running past the timeout is [`PortError::Timeout`].
    async fn run(
        &self,
        host: &Host,
        command: &RemoteCommand,
        output: OutputSink,
    ) -> Result<ExitStatus, PortError>;

    /// Copies a file to `host` atomically.
    async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError>;

    /// Closes the session to `host`, if there is one.
    async fn close(&self, host: &Host);

    /// Claims `host`'s lock: one rollout per server, across processes and machines, kept on
    /// the host itself. Atomic on the host; a stale lock is taken over (see
    /// [`crate::lock`] for the rules). Someone else holding it is `Ok(`[`LockOutcome::Held`]`)`,
    /// not an error.
    ///
    /// The default refuses with [`PortError::Rejected`]: an executor that cannot keep host
    /// locks must say so rather than let two rollouts onto one server.
    async fn acquire_lock(&self, host: &Host, claim: &LockClaim) -> Result<LockOutcome, PortError> {
        let _ = claim;
        Err(no_locks(std::any::type_name::<Self>(), host))
    }

    /// Releases `host`'s lock if `holder` holds it; a lock someone else holds is left alone
    /// and reported ([`ReleaseOutcome::HeldByOther`]), no lock is [`ReleaseOutcome::NotHeld`].
    /// Safe to call on every ending of a deployment.
    async fn release_lock(&self, host: &Host, holder: &LockHolder) -> Result<ReleaseOutcome, PortError> {
        let _ = holder;
        Err(no_locks(std::any::type_name::<Self>(), host))
    }

    /// Restarts the idle time of `host`'s lock if `holder` holds it, so a long deployment's
    /// lock never looks stale; reports [`RefreshOutcome::Lost`] when it is no longer ours.
    async fn refresh_lock(&self, host: &Host, holder: &LockHolder) -> Result<RefreshOutcome, PortError> {
        let _ = holder;
        Err(no_locks(std::any::type_name::<Self>(), host))
    }

    /// Who holds `host`'s lock now, if anyone. Changes nothing.
    async fn read_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
        Err(no_locks(std::any::type_name::<Self>(), host))
    }

    /// Removes `host`'s lock whoever holds it (the explicit `vesemir unlock`), and says who
    /// held it. `Ok(None)` when there was none.
    async fn break_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
        Err(no_locks(std::any::type_name::<Self>(), host))
    }
}

/// The error of an executor that keeps no host locks.
fn no_locks(executor: &str, host: &Host) -> PortError {
    PortError::rejected(
        host.to_string(),
        format!("the executor {executor} keeps no host locks, so it cannot guarantee one rollout per server"),
    )
}

macro_rules! forward_executor {
    ($($wrapper:ty),*) => {$(
        #[async_trait]
        impl<T: Executor + ?Sized> Executor for $wrapper {
            async fn connect(&self, host: &Host) -> Result<(), PortError> {
                (**self).connect(host).await
            }
            async fn run(&self, host: &Host, command: &RemoteCommand, output: OutputSink) -> Result<ExitStatus, PortError> {
                (**self).run(host, command, output).await
            }
            async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError> {
                (**self).upload(host, upload).await
            }
            async fn close(&self, host: &Host) {
                (**self).close(host).await
            }
            async fn acquire_lock(&self, host: &Host, claim: &LockClaim) -> Result<LockOutcome, PortError> {
                (**self).acquire_lock(host, claim).await
            }
            async fn release_lock(&self, host: &Host, holder: &LockHolder) -> Result<ReleaseOutcome, PortError> {
                (**self).release_lock(host, holder).await
            }
            async fn refresh_lock(&self, host: &Host, holder: &LockHolder) -> Result<RefreshOutcome, PortError> {
                (**self).refresh_lock(host, holder).await
            }
            async fn read_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
                (**self).read_lock(host).await
            }
            async fn break_lock(&self, host: &Host) -> Result<Option<HeldLock>, PortError> {
                (**self).break_lock(host).await
            }
        }
    )*};
}

forward_executor!(&T, Box<T>, Arc<T>);
