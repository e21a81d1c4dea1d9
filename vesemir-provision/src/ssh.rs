//! The `GuestSsh` port through OpenSSH's `ssh` client (and `ssh-keyscan` for the key a guest
//! presents). Every login trusts exactly one host key, the one `wait_ssh` recorded: it is written
//! to a known_hosts file of its own, with `StrictHostKeyChecking=yes` and only that key's
//! algorithm offered, so a guest presenting any other key is refused before anything is sent.
//!
//! The bootstrap is one session: `sh -s` reads a script on its stdin that writes the node's
//! client key (mode 0600), `client.rb` and `first-boot.json` to the configured directory
//! (here-documents: the key never appears on a command line), then runs the operator's
//! bootstrap command (`chef-client -j .../first-boot.json` on a real image); each line it prints
//! is sent on as it comes, and its exit status is the step's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;
use vesemir_core::ports::{OutputSink, OutputStream};
use vesemir_core::provision::{BootstrapSpec, GuestSsh, SshHostKey};
use vesemir_core::PortError;

use crate::ssh_probe::scan_host_key;

/// How to reach new guests over SSH and what their first bootstrap is. Its own serde form
/// (unknown keys refused, durations as `"10s"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSshConfig {
    /// The user to log in as (the bootstrap writes to `chef_dir`: usually root).
    #[serde(default = "defaults::user")]
    pub user: String,
    /// The port SSH answers on.
    #[serde(default = "defaults::port")]
    pub port: u16,
    /// The private key the guests' image accepts for `user`.
    pub identity_file: PathBuf,
    /// The Chef server URL written to `client.rb` (`chef_server_url`).
    pub chef_server_url: String,
    /// Where the client key, `client.rb` and `first-boot.json` go on the guest.
    #[serde(default = "defaults::chef_dir")]
    pub chef_dir: String,
    /// The command that runs the first bootstrap on the guest, from the operator's config (a
    /// shell command line; nothing of a request is put in it).
    #[serde(default = "defaults::bootstrap_command")]
    pub bootstrap_command: String,
    /// How long a TCP connect and the key exchange may take.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    pub fn user() -> String {
        "root".to_owned()
    }

    pub fn port() -> u16 {
        22
    }

    pub fn chef_dir() -> String {
        "/etc/chef".to_owned()
    }

    pub fn bootstrap_command() -> String {
        "chef-client -j /etc/chef/first-boot.json".to_owned()
    }

    pub fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl GuestSshConfig {
    /// A config with root on port 22, `/etc/chef`, `chef-client -j /etc/chef/first-boot.json`
    /// and a 10 s connect timeout.
    pub fn new(identity_file: PathBuf, chef_server_url: String) -> Self {
        Self {
            user: defaults::user(),
            port: defaults::port(),
            identity_file,
            chef_server_url,
            chef_dir: defaults::chef_dir(),
            bootstrap_command: defaults::bootstrap_command(),
            connect_timeout: defaults::connect_timeout(),
        }
    }
}

/// The `GuestSsh` port. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct OpensshGuest {
    config: GuestSshConfig,
}

/// A Ruby double-quoted string of `text` (for `client.rb`).
fn ruby_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A shell word of `text`, single-quoted.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl OpensshGuest {
    /// An adapter for `config`.
    pub fn new(config: GuestSshConfig) -> Self {
        Self { config }
    }

    /// The config (`client.rb`) the bootstrap writes.
    pub fn client_rb(&self, spec: &BootstrapSpec) -> String {
        let dir = self.config.chef_dir.trim_end_matches('/');
        format!(
            "chef_server_url {}\nnode_name {}\nclient_key {}\nenvironment {}\n",
            ruby_string(&self.config.chef_server_url),
            ruby_string(&spec.node.fqdn.to_string()),
            ruby_string(&format!("{dir}/client.pem")),
            ruby_string(spec.node.environment.as_str()),
        )
    }

    /// The script `sh -s` runs on the guest: the files, then the bootstrap command.
    fn script(&self, spec: &BootstrapSpec) -> String {
        let dir = self.config.chef_dir.trim_end_matches('/');
        let run_list: Vec<String> = spec.node.run_list.iter().map(|entry| format!("{entry:?}")).collect();
        let first_boot = format!("{{\"run_list\": [{}]}}\n", run_list.join(", "));
        let key = spec.client_key.expose().trim_end();
        format!(
            "set -e\numask 077\nmkdir -p {dir_word}\n\
             cat > {dir_word}/client.pem <<'VESEMIR_END_OF_KEY'\n{key}\nVESEMIR_END_OF_KEY\n\
             cat > {dir_word}/client.rb <<'VESEMIR_END_OF_CONFIG'\n{client_rb}VESEMIR_END_OF_CONFIG\n\
             cat > {dir_word}/first-boot.json <<'VESEMIR_END_OF_JSON'\n{first_boot}VESEMIR_END_OF_JSON\n\
             set +e\n{command}\n",
            dir_word = shell_word(dir),
            client_rb = self.client_rb(spec),
            command = self.config.bootstrap_command,
        )
    }

    /// `ssh` with every option that makes it trust exactly `host_key` at `address`, and the
    /// known_hosts file holding it (kept until the command ends).
    fn command(
        &self,
        address: Ipv4Addr,
        host_key: &SshHostKey,
    ) -> Result<(Command, tempfile::NamedTempFile), PortError> {
        let known_hosts =
            tempfile::Builder::new().prefix("vesemir-known-hosts-").tempfile().map_err(|e| {
                PortError::Adapter {
                    adapter: "ssh",
                    source: format!("cannot write a known_hosts file: {e}").into(),
                }
            })?;
        let host = if self.config.port == 22 {
            address.to_string()
        } else {
            format!("[{address}]:{}", self.config.port)
        };
        std::fs::write(known_hosts.path(), format!("{host} {host_key}\n")).map_err(|e| {
            PortError::Adapter {
                adapter: "ssh",
                source: format!("cannot write a known_hosts file: {e}").into(),
            }
        })?;
        let mut command = Command::new("ssh");
        let seconds = self.config.connect_timeout.as_secs().max(1);
        command
            .arg("-F")
            .arg("none")
            .arg("-i")
            .arg(&self.config.identity_file)
            .arg("-p")
            .arg(self.config.port.to_string())
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.path().display()))
            .arg("-o")
            .arg(format!("HostKeyAlgorithms={}", host_key.algorithm()))
            .arg("-o")
            .arg(format!("ConnectTimeout={seconds}"))
            .arg("-l")
            .arg(&self.config.user)
            .arg(address.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok((command, known_hosts))
    }
}

/// Sends every line of `pipe` to `sink` as it comes; answers the last few (for an error).
async fn pump<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: OutputStream,
    sink: OutputSink,
) -> Vec<String> {
    let mut last = Vec::new();
    if let Some(pipe) = pipe {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.send(stream, line.clone());
            last.push(line);
            if last.len() > 5 {
                last.remove(0);
            }
        }
    }
    last
}

fn spawn_error(e: std::io::Error) -> PortError {
    PortError::Adapter { adapter: "ssh", source: format!("cannot run ssh: {e}").into() }
}

#[async_trait]
impl GuestSsh for OpensshGuest {
    async fn presented_host_key(&self, address: Ipv4Addr) -> Result<Option<SshHostKey>, PortError> {
        scan_host_key(SocketAddr::from((address, self.config.port)), self.config.connect_timeout).await
    }

    async fn bootstrap(&self, spec: &BootstrapSpec, output: OutputSink) -> Result<(), PortError> {
        let address = spec.node.address;
        let (mut command, _known_hosts) = self.command(address, &spec.host_key)?;
        let mut child = command.arg("sh -s").spawn().map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            let script = self.script(spec);
            // A refused login closes the pipe early; the exit status below says why.
            let _ = stdin.write_all(script.as_bytes()).await;
            drop(stdin);
        }
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (_, errors) = tokio::join!(
            pump(stdout, OutputStream::Stdout, output.clone()),
            pump(stderr, OutputStream::Stderr, output)
        );
        let status = child.wait().await.map_err(spawn_error)?;
        let target = format!("SSH {}@{address}", self.config.user);
        match status.code() {
            Some(0) => Ok(()),
            // ssh's own failure (connect, host key, login): nothing ran.
            Some(255) => Err(PortError::unreachable(target, errors.join("; "))),
            _ => Err(PortError::rejected(
                target,
                format!("the bootstrap ended with {status}: {}", errors.join("; ")),
            )),
        }
    }

    async fn login(&self, address: Ipv4Addr, host_key: &SshHostKey) -> Result<(), PortError> {
        let (mut command, _known_hosts) = self.command(address, host_key)?;
        command.arg("true").stdin(Stdio::null());
        let output = command.output().await.map_err(spawn_error)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(PortError::unreachable(
                format!("SSH {}@{address}", self.config.user),
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_strings_and_shell_words_are_quoted() {
        assert_eq!(ruby_string(r#"a"b\c#{x}"#), r#""a\"b\\c\#{x}""#);
        assert_eq!(shell_word("/etc/ch'ef"), r"'/etc/ch'\''ef'");
    }
}
