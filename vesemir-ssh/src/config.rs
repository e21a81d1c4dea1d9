//! How the SSH executor connects: user, port, credentials, host key policy, timeouts, retries.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The configuration of an [`SshExecutor`](crate::SshExecutor). Its `Debug` output never shows
/// the passphrase.
///
/// Front ends read it from their config file with serde; only `user` and one of `key` or
/// `agent = true` are required, every other key takes the default [`SshConfig::new`] gives.
/// Durations are human-readable. The passphrase of an encrypted key is never read from a file:
/// the front end sets it (from an environment variable, say) after reading.
///
/// ```toml
/// user = "deploy"
/// key = "/etc/vesemir/id_ed25519"   # or: agent = true (ssh-agent at SSH_AUTH_SOCK)
/// port = 22
/// known_hosts = "/etc/vesemir/known_hosts"
/// host_key_mode = "strict"          # accept-new, off
/// connect_timeout = "10s"
/// connect_retries = 2
/// retry_backoff = "500ms"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "SshConfigFile", into = "SshConfigFile")]
pub struct SshConfig {
    /// The remote user every host is logged in as.
    pub user: String,
    /// The SSH port (22 unless told otherwise).
    pub port: u16,
    /// How to authenticate.
    pub auth: SshAuth,
    /// The known_hosts file host keys are checked against (plain and hashed entries).
    pub known_hosts: PathBuf,
    /// What to do with a host key that is not in `known_hosts`.
    pub host_key_mode: HostKeyMode,
    /// How long connecting to a host may take in all: every attempt (TCP connect, SSH
    /// handshake, authentication) and the pauses between them. A host that has not answered
    /// by then is reported unreachable.
    pub connect_timeout: Duration,
    /// How many times a failed connect is tried again, while the connect timeout lasts.
    pub connect_retries: u32,
    /// The pause before the first retry; it doubles for each further retry. Each pause is
    /// shortened by up to a fifth at random (the core's [`Backoff`](vesemir_core::backoff::Backoff)
    /// jitter), so that hosts failing together are not retried in step.
    pub retry_backoff: Duration,
}

impl SshConfig {
    /// A configuration with the defaults: port 22, `~/.ssh/known_hosts` (or
    /// `/etc/ssh/ssh_known_hosts` without `HOME`), strict host key checking, a 10 s connect
    /// timeout, 2 retries starting at 500 ms.
    pub fn new(user: impl Into<String>, auth: SshAuth) -> Self {
        Self {
            user: user.into(),
            port: defaults::port(),
            auth,
            known_hosts: defaults::known_hosts(),
            host_key_mode: HostKeyMode::default(),
            connect_timeout: defaults::connect_timeout(),
            connect_retries: defaults::connect_retries(),
            retry_backoff: defaults::retry_backoff(),
        }
    }
}

/// The defaults of [`SshConfig`], written once for [`SshConfig::new`] and for serde.
mod defaults {
    use std::path::PathBuf;
    use std::time::Duration;

    pub(super) fn port() -> u16 {
        22
    }
    pub(super) fn known_hosts() -> PathBuf {
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
            .unwrap_or_else(|| PathBuf::from("/etc/ssh/ssh_known_hosts"))
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn connect_retries() -> u32 {
        2
    }
    pub(super) fn retry_backoff() -> Duration {
        Duration::from_millis(500)
    }
}

/// [`SshConfig`] as a file writes it: the authentication as `key` or `agent`, no passphrase.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshConfigFile {
    user: String,
    #[serde(default = "defaults::port")]
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
    #[serde(default)]
    agent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_socket: Option<PathBuf>,
    #[serde(default = "defaults::known_hosts")]
    known_hosts: PathBuf,
    #[serde(default)]
    host_key_mode: HostKeyMode,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "defaults::connect_retries")]
    connect_retries: u32,
    #[serde(default = "defaults::retry_backoff", with = "humantime_serde")]
    retry_backoff: Duration,
}

impl TryFrom<SshConfigFile> for SshConfig {
    type Error = String;

    fn try_from(file: SshConfigFile) -> Result<Self, Self::Error> {
        let auth = match (file.key, file.agent || file.agent_socket.is_some()) {
            (Some(path), false) => SshAuth::KeyFile { path, passphrase: None },
            (None, true) => SshAuth::Agent { socket: file.agent_socket },
            (Some(_), true) => return Err("give either key or agent, not both".into()),
            (None, false) => {
                return Err("give key = \"<private key file>\" or agent = true (ssh-agent)".into())
            }
        };
        Ok(Self {
            user: file.user,
            port: file.port,
            auth,
            known_hosts: file.known_hosts,
            host_key_mode: file.host_key_mode,
            connect_timeout: file.connect_timeout,
            connect_retries: file.connect_retries,
            retry_backoff: file.retry_backoff,
        })
    }
}

impl From<SshConfig> for SshConfigFile {
    fn from(config: SshConfig) -> Self {
        let (key, agent, agent_socket) = match config.auth {
            SshAuth::KeyFile { path, .. } => (Some(path), false, None),
            SshAuth::Agent { socket } => (None, true, socket),
        };
        Self {
            user: config.user,
            port: config.port,
            key,
            agent,
            agent_socket,
            known_hosts: config.known_hosts,
            host_key_mode: config.host_key_mode,
            connect_timeout: config.connect_timeout,
            connect_retries: config.connect_retries,
            retry_backoff: config.retry_backoff,
        }
    }
}

/// How the executor proves who it is.
#[derive(Debug, Clone)]
pub enum SshAuth {
    /// A private key file in OpenSSH or PEM format (ed25519, RSA, ECDSA), optionally encrypted.
    KeyFile {
        /// The private key file.
        path: PathBuf,
        /// Its passphrase, when it is encrypted.
        passphrase: Option<Passphrase>,
    },
    /// The keys of a running ssh-agent.
    Agent {
        /// The agent's socket; `None` uses `SSH_AUTH_SOCK`.
        socket: Option<PathBuf>,
    },
}

/// A private key's passphrase. Shown as `Passphrase(<redacted>)` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(String);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(passphrase: impl Into<String>) -> Self {
        Self(passphrase.into())
    }

    /// The secret itself, for libssh2 only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// What to do with a host's key that the known_hosts file does not list. A key that differs
/// from the listed one fails the host in every mode but [`Off`](HostKeyMode::Off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyMode {
    /// Refuse hosts whose key is not listed (the default).
    #[default]
    Strict,
    /// Trust a host seen for the first time and append its key to the file (trust on first use).
    AcceptNew,
    /// Check nothing. Only when asked for explicitly; every connection logs a warning.
    Off,
}

impl std::str::FromStr for HostKeyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "accept-new" => Ok(Self::AcceptNew),
            "off" => Ok(Self::Off),
            other => Err(format!("unknown host key mode {other:?}: use strict, accept-new or off")),
        }
    }
}

impl fmt::Display for HostKeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::AcceptNew => "accept-new",
            Self::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_passphrase() {
        let config = SshConfig::new(
            "deploy",
            SshAuth::KeyFile { path: "/k".into(), passphrase: Some(Passphrase::new("hunter2")) },
        );
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn modes_parse_and_default_to_strict() {
        assert_eq!(HostKeyMode::default(), HostKeyMode::Strict);
        for mode in [HostKeyMode::Strict, HostKeyMode::AcceptNew, HostKeyMode::Off] {
            assert_eq!(mode.to_string().parse::<HostKeyMode>(), Ok(mode));
        }
        assert!("yes".parse::<HostKeyMode>().is_err());
    }

    #[test]
    fn reads_from_toml_with_the_defaults_of_new_and_refuses_typos() {
        let config: SshConfig = toml::from_str(
            "user = \"deploy\"\nkey = \"/k\"\nconnect_timeout = \"3s\"\nhost_key_mode = \"accept-new\"\n",
        )
        .expect("valid");
        let built = SshConfig::new("deploy", SshAuth::KeyFile { path: "/k".into(), passphrase: None });
        assert_eq!(config.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.host_key_mode, HostKeyMode::AcceptNew);
        assert!(
            matches!(&config.auth, SshAuth::KeyFile { path, passphrase: None } if path.as_os_str() == "/k")
        );
        assert_eq!(
            (config.port, &config.known_hosts, config.connect_retries, config.retry_backoff),
            (built.port, &built.known_hosts, built.connect_retries, built.retry_backoff)
        );
        let agent: SshConfig = toml::from_str("user = \"deploy\"\nagent = true\n").expect("valid");
        assert!(matches!(agent.auth, SshAuth::Agent { socket: None }));
        for (text, says) in [
            ("user = \"u\"\nkey = \"/k\"\nconect_timeout = \"1s\"\n", "conect_timeout"),
            ("user = \"u\"\n", "agent = true"),
            ("user = \"u\"\nkey = \"/k\"\nagent = true\n", "not both"),
            ("user = \"u\"\nkey = \"/k\"\nhost_key_mode = \"yes\"\n", "accept-new"),
            ("user = \"u\"\nkey = \"/k\"\npassphrase = \"x\"\n", "passphrase"),
        ] {
            let error = toml::from_str::<SshConfig>(text).expect_err(text).to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn writes_no_passphrase() {
        let config = SshConfig::new(
            "deploy",
            SshAuth::KeyFile { path: "/k".into(), passphrase: Some(Passphrase::new("hunter2")) },
        );
        let text = toml::to_string(&config).expect("serializes");
        assert!(!text.contains("hunter2") && text.contains("key = \"/k\""), "{text}");
        let again: SshConfig = toml::from_str(&text).expect("reads back");
        assert_eq!(again.connect_timeout, config.connect_timeout);
    }
}
