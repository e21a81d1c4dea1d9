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
    /// The text.
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
        }
    )*};
}

forward_executor!(&T, Box<T>, Arc<T>);
