//! How the SSH executor connects: user, port, credentials, host key policy, timeouts, retries.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The configuration of an [`SshExecutor`](crate::SshExecutor). Its `Debug` output never shows
/// the passphrase.
#[derive(Debug, Clone)]
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
    /// The pause before the first retry; it doubles for each further retry.
    pub retry_backoff: Duration,
}

impl SshConfig {
    /// A configuration with the defaults: port 22, `~/.ssh/known_hosts` (or
    /// `/etc/ssh/ssh_known_hosts` without `HOME`), strict host key checking, a 10 s connect
    /// timeout, 2 retries starting at 500 ms.
    pub fn new(user: impl Into<String>, auth: SshAuth) -> Self {
        let known_hosts = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
            .unwrap_or_else(|| PathBuf::from("/etc/ssh/ssh_known_hosts"));
        Self {
            user: user.into(),
            port: 22,
            auth,
            known_hosts,
            host_key_mode: HostKeyMode::Strict,
            connect_timeout: Duration::from_secs(10),
            connect_retries: 2,
            retry_backoff: Duration::from_millis(500),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
}
