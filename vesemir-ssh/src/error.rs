//! The adapter's own errors, and how each becomes the [`PortError`] the rollout acts on.

use std::time::Duration;

use vesemir_core::PortError;

/// What went wrong talking to one host. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// TCP connect or SSH handshake failed, after every retry the connect timeout allowed.
    #[error("cannot connect after {attempts} attempt(s) within {}: {reason}; check that the host is up and sshd listens on port {port}", humantime::format_duration(*.within))]
    Connect { attempts: u32, port: u16, within: Duration, reason: String },
    /// The host's key is not in known_hosts and the mode is strict.
    #[error("host key of {host_port} is not in {known_hosts} (host_key_mode = strict; its {key_type} key has fingerprint {fingerprint}): verify that fingerprint out of band and add the key (ssh-keyscan), or use host_key_mode = accept-new")]
    UnknownHostKey { host_port: String, known_hosts: String, key_type: String, fingerprint: String },
    /// The host's key differs from the one in known_hosts.
    #[error("HOST KEY CHANGED for {host_port}: {known_hosts} lists another {key_type} key; the host now offers fingerprint {fingerprint}. This is a possible man-in-the-middle attack or a reinstalled host: verify the new key out of band, then remove the old entry with `ssh-keygen -R '{host_port}' -f {known_hosts}`")]
    ChangedHostKey { host_port: String, known_hosts: String, key_type: String, fingerprint: String },
    /// The known_hosts file could not be read or written.
    #[error("known_hosts {known_hosts}: {reason}")]
    KnownHosts { known_hosts: String, reason: String },
    /// The server refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// The request cannot be run as given (a bad environment variable name, an unreadable file).
    #[error("{0}")]
    Invalid(String),
    /// An operation did not finish in time.
    #[error("{operation}")]
    Timeout { operation: String, after: Duration },
    /// The SSH session failed in the middle of an operation.
    #[error("{operation}: {source}")]
    Session { operation: String, source: ssh2::Error },
    /// Local IO failed.
    #[error("{operation}: {source}")]
    Io { operation: String, source: std::io::Error },
    /// The remote side refused an operation (an upload that could not be written).
    #[error("{0}")]
    Remote(String),
    /// The channel closed before the command ran to its end and sent its exit status.
    #[error("the SSH channel closed without an exit status: the {what} may not have finished (does sshd close idle channels, ChannelTimeout?)")]
    NoExitStatus { what: &'static str },
}

impl SshError {
    /// Converts into the port's error, with `target` naming the host (`web-01 (10.0.0.1)`).
    pub(crate) fn into_port(self, target: &str) -> PortError {
        match self {
            SshError::Connect { .. } => PortError::unreachable(target, self),
            SshError::UnknownHostKey { .. } | SshError::ChangedHostKey { .. } | SshError::Auth(_) => {
                PortError::Unauthorized { target: target.to_owned(), reason: self.to_string() }
            }
            SshError::Invalid(reason) | SshError::Remote(reason) => PortError::rejected(target, reason),
            SshError::Timeout { operation, after } => {
                PortError::timeout(format!("{operation} on {target}"), after)
            }
            SshError::KnownHosts { .. }
            | SshError::Session { .. }
            | SshError::Io { .. }
            | SshError::NoExitStatus { .. } => {
                PortError::Adapter { adapter: "ssh", source: format!("{target}: {self}").into() }
            }
        }
    }
}
