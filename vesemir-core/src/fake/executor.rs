//! A fake [`Executor`]: records every command and upload per host, and can make a host
//! unreachable, a command fail or hang, or every command slow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::lock;
use crate::error::PortError;
use crate::host::Host;
use crate::name::{EnvVarName, HostName};
use crate::ports::{Executor, ExitStatus, FileUpload, OutputSink, OutputStream, RemoteCommand};

/// A command the fake ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command line, as rendered.
    pub script: String,
    /// The environment variables it was given.
    pub env: Vec<(EnvVarName, String)>,
}

#[derive(Debug, Clone)]
enum Fault {
    Exit { contains: String, code: i32 },
    Hang { contains: String },
}

#[derive(Debug, Default)]
struct State {
    unreachable: BTreeSet<HostName>,
    unauthorized: BTreeSet<HostName>,
    faults: BTreeMap<HostName, Vec<Fault>>,
    latency: Duration,
    connected: BTreeSet<HostName>,
    connects: usize,
    commands: BTreeMap<HostName, Vec<CommandRecord>>,
    uploads: BTreeMap<HostName, Vec<FileUpload>>,
}

/// A fake executor. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor {
    state: Arc<Mutex<State>>,
}

impl FakeExecutor {
    /// An executor where every host is reachable and every command exits 0 at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `host` refuse connections.
    pub fn set_unreachable(&self, host: &HostName) {
        lock(&self.state).unreachable.insert(host.clone());
    }

    /// Makes `host` refuse the credentials.
    pub fn set_unauthorized(&self, host: &HostName) {
        lock(&self.state).unauthorized.insert(host.clone());
    }

    /// Makes commands on `host` whose text contains `contains` exit with `code`, printing a
    /// line on stderr.
    pub fn fail_command(&self, host: &HostName, contains: &str, code: i32) {
        lock(&self.state)
            .faults
            .entry(host.clone())
            .or_default()
            .push(Fault::Exit { contains: contains.to_owned(), code });
    }

    /// Makes commands on `host` whose text contains `contains` run until their timeout.
    pub fn hang_command(&self, host: &HostName, contains: &str) {
        lock(&self.state)
            .faults
            .entry(host.clone())
            .or_default()
            .push(Fault::Hang { contains: contains.to_owned() });
    }

    /// Makes every command take `latency`.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// The commands run on `host`, in order.
    pub fn commands(&self, host: &HostName) -> Vec<CommandRecord> {
        lock(&self.state).commands.get(host).cloned().unwrap_or_default()
    }

    /// The uploads made to `host`, in order.
    pub fn uploads(&self, host: &HostName) -> Vec<FileUpload> {
        lock(&self.state).uploads.get(host).cloned().unwrap_or_default()
    }

    /// Hosts with an open session now.
    pub fn connected(&self) -> BTreeSet<HostName> {
        lock(&self.state).connected.clone()
    }

    /// How many sessions were opened in all.
    pub fn connects(&self) -> usize {
        lock(&self.state).connects
    }

    fn ensure_connected(&self, host: &Host) -> Result<(), PortError> {
        let mut state = lock(&self.state);
        if state.unreachable.contains(&host.name) {
            return Err(PortError::unreachable(format!("{host}"), "injected fault: connection refused"));
        }
        if state.unauthorized.contains(&host.name) {
            return Err(PortError::Unauthorized {
                target: host.to_string(),
                reason: "injected fault: key refused".into(),
            });
        }
        if state.connected.insert(host.name.clone()) {
            state.connects += 1;
        }
        Ok(())
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn connect(&self, host: &Host) -> Result<(), PortError> {
        self.ensure_connected(host)
    }

    async fn run(
        &self,
        host: &Host,
        command: &RemoteCommand,
        output: OutputSink,
    ) -> Result<ExitStatus, PortError> {
        self.ensure_connected(host)?;
        let (fault, latency) = {
            let mut state = lock(&self.state);
            state
                .commands
                .entry(host.name.clone())
                .or_default()
                .push(CommandRecord { script: command.script.clone(), env: command.env.clone() });
            let fault = state.faults.get(&host.name).and_then(|faults| {
                faults
                    .iter()
                    .find(|f| match f {
                        Fault::Exit { contains, .. } | Fault::Hang { contains } => {
                            command.script.contains(contains.as_str())
                        }
                    })
                    .cloned()
            });
            (fault, state.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency.min(command.timeout)).await;
        }
        match fault {
            None => Ok(ExitStatus::code(0)),
            Some(Fault::Exit { code, .. }) => {
                output.send(OutputStream::Stderr, format!("injected failure: exit {code}"));
                Ok(ExitStatus::code(code))
            }
            Some(Fault::Hang { .. }) => {
                tokio::time::sleep(command.timeout).await;
                Err(PortError::timeout(format!("command on {}", host.name), command.timeout))
            }
        }
    }

    async fn upload(&self, host: &Host, upload: &FileUpload) -> Result<(), PortError> {
        self.ensure_connected(host)?;
        lock(&self.state).uploads.entry(host.name.clone()).or_default().push(upload.clone());
        Ok(())
    }

    async fn close(&self, host: &Host) {
        lock(&self.state).connected.remove(&host.name);
    }
}
