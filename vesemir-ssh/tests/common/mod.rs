//! Shared setup of the SSH adapter's tests: a real sshd and an executor configured for it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use vesemir_core::name::HostName;
use vesemir_core::ports::{OutputLine, OutputSink, OutputStream, RemoteCommand};
use vesemir_core::Host;
use vesemir_ssh::{HostKeyMode, SshAuth, SshConfig, SshExecutor};
use vesemir_testkit::sshd::Sshd;

/// A started sshd plus a known_hosts file (in its own temp dir) trusting it.
pub struct Lab {
    pub sshd: Sshd,
    pub known_hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lab {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A lab whose sshd has `extra` lines in its config.
    pub fn start_with(extra: &str) -> Self {
        let sshd = Sshd::start_with(extra);
        let dir = tempfile::tempdir().expect("temp dir");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, sshd.known_hosts_line()).expect("write known_hosts");
        Self { sshd, known_hosts, _dir: dir }
    }

    /// A config logging in with the authorized ed25519 key, strict host keys, fast retries.
    pub fn config(&self) -> SshConfig {
        let mut config = SshConfig::new(
            self.sshd.user(),
            SshAuth::KeyFile { path: self.sshd.ed25519_key(), passphrase: None },
        );
        config.port = self.sshd.port();
        config.known_hosts = self.known_hosts.clone();
        config.host_key_mode = HostKeyMode::Strict;
        config.connect_timeout = Duration::from_secs(5);
        config.connect_retries = 1;
        config.retry_backoff = Duration::from_millis(50);
        config
    }

    pub fn executor(&self) -> SshExecutor {
        SshExecutor::new(self.config())
    }

    pub fn host(&self) -> Host {
        host("web-01", self.sshd.address())
    }
}

pub fn host(name: &str, address: &str) -> Host {
    Host::new(HostName::new(name).expect("host name"), address).expect("address")
}

pub fn command(script: &str) -> RemoteCommand {
    RemoteCommand {
        script: script.to_owned(),
        env: Vec::new(),
        timeout: Duration::from_secs(30),
        output_limit: 1024 * 1024,
    }
}

/// Runs `command` and returns its status and output lines, panicking on a port error.
pub async fn run(executor: &SshExecutor, host: &Host, command: &RemoteCommand) -> (i32, Vec<OutputLine>) {
    use vesemir_core::ports::Executor;
    let (sink, mut receiver) = OutputSink::channel();
    let status = executor.run(host, command, sink).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    (status.code.unwrap_or(-1), receiver.drain())
}

pub fn text(lines: &[OutputLine], stream: OutputStream) -> Vec<String> {
    lines.iter().filter(|l| l.stream == stream).map(|l| l.text.clone()).collect()
}
