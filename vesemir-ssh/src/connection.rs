//! Opening one host's SSH session (blocking, on a blocking thread): TCP connect with a timeout
//! and retries with backoff, handshake, host key check, authentication.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use ssh2::{MethodType, Session};
use vesemir_core::backoff::Backoff;
use vesemir_core::key_file::{check_key_permissions, KeyFilePermissions};

use crate::config::{SshAuth, SshConfig};
use crate::error::SshError;
use crate::key::LoadedKey;
use crate::known_hosts;
use crate::wait::SocketWaiter;

/// Host key algorithms in OpenSSH's order of preference, so the key libssh2 receives is the
/// one `ssh` would have put in known_hosts (ed25519 first).
const HOST_KEY_PREFERENCE: &str = "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,\
rsa-sha2-512,rsa-sha2-256,ssh-rsa";

/// An authenticated session to one host, in non-blocking mode, with the waiter of its socket.
pub(crate) struct Connection {
    pub(crate) session: Session,
    pub(crate) waiter: SocketWaiter,
}

impl Connection {
    /// Connects to `address` as `config` says, retrying connect and handshake failures while
    /// the connect timeout lasts: the timeout bounds the whole connect, every attempt and the
    /// pauses between them, so a host that accepts TCP but never speaks SSH costs one timeout,
    /// not one per attempt. Host key and authentication failures are final at once. With `key`
    /// (the key file read before), no file is read: the key authenticates from memory.
    pub(crate) fn open(address: &str, config: &SshConfig, key: Option<&LoadedKey>) -> Result<Self, SshError> {
        let deadline = Instant::now() + config.connect_timeout;
        let policy = Backoff::new(
            config.connect_retries.saturating_add(1),
            config.retry_backoff,
            config.connect_timeout.max(config.retry_backoff),
        )
        .with_jitter(Backoff::default().jitter);
        let mut retries = policy.retries(seed());
        loop {
            let reason = match Self::open_once(address, config, key, deadline) {
                Ok(connection) => return Ok(connection),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Transient(reason)) => reason,
            };
            match retries.after_failure() {
                Some(delay) if Instant::now() + delay < deadline => {
                    let attempt = retries.failures();
                    tracing::debug!(%address, attempt, %reason, "SSH connect failed, retrying in {delay:?}");
                    std::thread::sleep(delay);
                }
                _ => {
                    return Err(SshError::Connect {
                        attempts: retries.failures(),
                        port: config.port,
                        within: config.connect_timeout,
                        reason,
                    });
                }
            }
        }
    }

    /// Says goodbye to the server, waiting at most a second.
    pub(crate) fn disconnect(self) {
        self.session.set_blocking(true);
        self.session.set_timeout(1000);
        let _ = self.session.disconnect(None, "vesemir: deployment done", None);
    }

    /// One attempt, given up at `deadline`.
    fn open_once(
        address: &str,
        config: &SshConfig,
        key: Option<&LoadedKey>,
        deadline: Instant,
    ) -> Result<Self, Failure> {
        let tcp = connect_tcp(address, config.port, deadline)?;
        let fd = tcp.as_raw_fd();
        let mut session = Session::new().map_err(|e| Failure::Transient(format!("libssh2: {e}")))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(millis(deadline));
        // Ignored if this libssh2 lacks one of them: the rest of the list still applies.
        let _ = session.method_pref(MethodType::HostKey, HOST_KEY_PREFERENCE);
        session.handshake().map_err(|e| Failure::Transient(format!("SSH handshake: {e}")))?;
        known_hosts::verify(&session, address, config.port, &config.known_hosts, config.host_key_mode)
            .map_err(Failure::Final)?;
        session.set_timeout(millis(deadline));
        match (key, &config.auth) {
            (Some(key), SshAuth::KeyFile { passphrase, .. }) => {
                authenticate_loaded(&session, &config.user, key, passphrase.as_ref())?;
            }
            _ => authenticate(&session, &config.user, &config.auth)?,
        }
        let waiter = SocketWaiter::new(fd, session.clone())
            .map_err(|e| Failure::Transient(format!("cannot watch the socket: {e}")))?;
        session.set_timeout(0);
        session.set_blocking(false);
        Ok(Self { session, waiter })
    }
}

/// Why one attempt failed: worth another try or not.
enum Failure {
    Transient(String),
    Final(SshError),
}

fn connect_tcp(address: &str, port: u16, deadline: Instant) -> Result<TcpStream, Failure> {
    let addresses: Vec<SocketAddr> = (address, port)
        .to_socket_addrs()
        .map_err(|e| Failure::Transient(format!("cannot resolve {address}: {e}")))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for socket_address in addresses {
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            last = format!("TCP connect to {socket_address}: the connect timeout passed");
            break;
        }
        match TcpStream::connect_timeout(&socket_address, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("TCP connect to {socket_address}: {e}"),
        }
    }
    Err(Failure::Transient(last))
}

fn authenticate(session: &Session, user: &str, auth: &SshAuth) -> Result<(), Failure> {
    let refused = |what: String| Failure::Final(SshError::Auth(what));
    match auth {
        SshAuth::KeyFile { path, passphrase } => {
            check_key_file(path).map_err(refused)?;
            let secret = passphrase.as_ref().map(|p| p.expose());
            if let Err(e) = session.userauth_pubkey_file(user, None, path, secret) {
                // libssh2's message names neither the key's contents nor the passphrase.
                let hint = if passphrase.is_some() {
                    "is the key in the user's authorized_keys, and is the passphrase right?"
                } else {
                    "is the key in the user's authorized_keys (and is it unencrypted)?"
                };
                return Err(refused(format!(
                    "user {user:?} with key file {}: {} ({hint})",
                    path.display(),
                    e.message()
                )));
            }
        }
        SshAuth::Agent { socket } => {
            let agent_error = |e: ssh2::Error| refused(format!("ssh-agent: {}", e.message()));
            let mut agent = session.agent().map_err(agent_error)?;
            if let Some(socket) = socket {
                agent.set_identity_path(socket).map_err(agent_error)?;
            }
            agent.connect().map_err(|e| {
                refused(format!(
                    "cannot reach ssh-agent ({}): is it running and SSH_AUTH_SOCK set?",
                    e.message()
                ))
            })?;
            agent.list_identities().map_err(agent_error)?;
            let identities = agent.identities().map_err(agent_error)?;
            let accepted = identities.iter().any(|identity| agent.userauth(user, identity).is_ok());
            let _ = agent.disconnect();
            if !accepted {
                return Err(refused(format!(
                    "user {user:?}: none of the {} key(s) in ssh-agent was accepted",
                    identities.len()
                )));
            }
        }
    }
    if session.authenticated() {
        Ok(())
    } else {
        Err(refused(format!("user {user:?}: the server did not accept the credentials")))
    }
}

/// Authenticates with a key read into memory before: libssh2 derives the public key from it.
fn authenticate_loaded(
    session: &Session,
    user: &str,
    key: &LoadedKey,
    passphrase: Option<&crate::config::Passphrase>,
) -> Result<(), Failure> {
    let refused = |what: String| Failure::Final(SshError::Auth(what));
    if let Err(e) = session.userauth_pubkey_memory(user, None, &key.text, passphrase.map(|p| p.expose())) {
        let hint = if passphrase.is_some() {
            "is the key in the user's authorized_keys, and is the passphrase right?"
        } else {
            "is the key in the user's authorized_keys (and is it unencrypted)?"
        };
        return Err(refused(format!(
            "user {user:?} with key file {} (as loaded): {} ({hint})",
            key.path.display(),
            e.message()
        )));
    }
    if session.authenticated() {
        Ok(())
    } else {
        Err(refused(format!("user {user:?}: the server did not accept the credentials")))
    }
}

/// The key file exists and nobody but its owner may read it (see [`vesemir_core::key_file`]).
pub(crate) fn check_key_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    let permissions = KeyFilePermissions { mode: metadata.mode(), owner_uid: metadata.uid() };
    check_key_permissions(path, permissions).map_err(|e| e.to_string())
}

/// Milliseconds left until `deadline`, at least 1 (0 would mean "no timeout" to libssh2).
fn millis(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now()).as_millis();
    u32::try_from(left).unwrap_or(u32::MAX).max(1)
}

/// A seed for the retry jitter that differs between calls and processes (std's random hash
/// keys), so that hosts failing together are not retried in step.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
