//! HTTPS on `listen`, with rustls (on ring): the certificate chain and key of `[tls]`, read at
//! start, and again on SIGHUP ([`crate::reload`]) or when either file changes (mtime, size and
//! inode, polled every `watch_interval`). A new certificate serves the next handshakes;
//! connections already open keep theirs. A new certificate that does not load (unreadable, not
//! PEM, a key that does not match it, a key file others may read) keeps the old one, and the
//! reason is logged.
//!
//! Plain HTTP only on a loopback `listen`, unless the configuration says otherwise with
//! `allow_plain_http = true` (a TLS-terminating proxy in front): `vesemir config check` and the
//! server's start refuse anything else, naming `listen` and the fix (`check_config`).
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! [tls]
//! cert = "/etc/vesemir/tls/cert.pem"   # the server's certificate first, then intermediates
//! key = "/etc/vesemir/tls/key.pem"     # mode 0600 (or 0640 owned by root, group vesemir)
//! watch_interval = "5s"                # how often the files are checked for a change
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use vesemir_core::key_file::{check_key_permissions, KeyFilePermissions};
use vesemir_core::request::{check_duration, FieldError, ValidationErrors, MAX_CALL_DURATION};

/// How often the certificate and key files are checked for a change, unless
/// `tls.watch_interval` says otherwise.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest `tls.watch_interval`.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is done, waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// `[tls]`: serve HTTPS on `listen` with this certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The PEM certificate chain: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// The PEM private key of that certificate (PKCS#8, PKCS#1 RSA or SEC1 EC). Refused when
    /// its group or others may read it (see [`vesemir_core::key_file`]).
    pub key: PathBuf,
    /// How often both files are checked for a change (then reloaded); SIGHUP reloads at once.
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
}

fn default_watch_interval() -> Duration {
    DEFAULT_WATCH_INTERVAL
}

/// The checks of `listen`, `allow_plain_http` and `[tls]` (`vesemir config check` and the
/// server's start): plain HTTP on a non-loopback address without `allow_plain_http`, and every
/// problem of the certificate and key (read, parsed, matched, the key file's mode).
pub(crate) fn check_config(
    listen: SocketAddr,
    tls: Option<&TlsConfig>,
    allow_plain_http: bool,
    problems: &mut Vec<FieldError>,
) {
    let Some(tls) = tls else {
        if !listen.ip().is_loopback() && !allow_plain_http {
            problems.push(FieldError::new(
                "listen",
                format!(
                    "is {listen}, not a loopback address, and [tls] is not set: plain HTTP would carry bearer tokens in clear on the network. Set [tls] cert = \"CERT.pem\" and key = \"KEY.pem\" to serve HTTPS, or listen on 127.0.0.1, or set allow_plain_http = true if a TLS-terminating proxy is the only way in"
                ),
            ));
        }
        return;
    };
    problems.extend(check_duration("tls.watch_interval", tls.watch_interval, MAX_CALL_DURATION).err());
    if tls.watch_interval < MIN_WATCH_INTERVAL {
        problems.push(FieldError::new("tls.watch_interval", "must be at least 100ms"));
    }
    if let Err(errors) = load(tls, &provider()) {
        problems.extend(errors.errors().iter().cloned());
    }
}

/// The crypto of every TLS connection: rustls' ring provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and key of `config` and checks they belong together: every
/// problem at once, as `tls.cert` or `tls.key`.
fn load(config: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, ValidationErrors> {
    let mut problems = Vec::new();
    let chain =
        read_chain(&config.cert).map_err(|message| problems.push(FieldError::new("tls.cert", message)));
    let key =
        read_key(&config.key, provider).map_err(|message| problems.push(FieldError::new("tls.key", message)));
    let (Ok(chain), Ok(key)) = (chain, key) else {
        return Err(ValidationErrors::from_errors(problems)
            .unwrap_or_else(|| ValidationErrors::one(FieldError::new("tls", "cannot be read"))));
    };
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(ValidationErrors::one(FieldError::new(
                "tls.key",
                format!(
                    "{} is not the key of the certificate in {}: give the key the certificate was issued for",
                    config.key.display(),
                    config.cert.display()
                ),
            )))
        }
        Err(e) => Err(ValidationErrors::one(FieldError::new(
            "tls.cert",
            format!("{}: the server's certificate cannot be read: {e}", config.cert.display()),
        ))),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate: expected PEM (-----BEGIN CERTIFICATE-----), the server's first",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path, provider: &CryptoProvider) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    check_key_file(path)?;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The parser's errors may quote a line of the file: they are left out.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "{} holds no PEM private key: expected -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY), unencrypted",
            path.display()
        )
    })?;
    provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: the private key cannot be used: {e}", path.display()))
}

/// Refuses a key file its group or others may read (the core's rule, with ssh's words).
fn check_key_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let permissions = KeyFilePermissions { mode: metadata.mode(), owner_uid: metadata.uid() };
    check_key_permissions(path, permissions).map_err(|e| e.to_string())
}

/// What identifies a version of a file without reading it: modified and changed times (a
/// `chmod` changes only the latter), size, inode (a file replaced by a rename has a new one even
/// when its times and size match) and mode; `None` when it cannot be read.
type FileStamp = Option<(SystemTime, i64, i64, u64, u64, u32)>;

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((
        metadata.modified().ok()?,
        metadata.ctime(),
        metadata.ctime_nsec(),
        metadata.len(),
        metadata.ino(),
        metadata.mode(),
    ))
}

/// The server's certificate and key as served now, reloadable: the rustls certificate resolver
/// of every handshake.
#[derive(Debug)]
pub struct Certificates {
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps at the last load tried, so a change is tried once, not every poll.
    tried: Mutex<(FileStamp, FileStamp)>,
}

impl Certificates {
    /// Loads the certificate and key of `config` (every problem at once).
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, ValidationErrors> {
        let provider = provider();
        let stamps = (stamp(&config.cert), stamp(&config.key));
        let certified = load(config, &provider)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            provider,
            current: RwLock::new(Arc::new(certified)),
            tried: Mutex::new(stamps),
        }))
    }

    /// The rustls configuration of the listener: TLS 1.2 and 1.3, HTTP/1.1, no client
    /// certificates, this resolver's certificate at each handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads both files again: a certificate that loads serves the next handshakes; one that
    /// does not leaves the current one in place and says why.
    pub fn reload(&self) -> Result<(), ValidationErrors> {
        *self.tried.lock().unwrap_or_else(PoisonError::into_inner) =
            (stamp(&self.config.cert), stamp(&self.config.key));
        let certified = load(&self.config, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(())
    }

    /// [`reload`](Self::reload) if either file changed since the last load tried; `None` when
    /// neither did.
    pub fn reload_if_changed(&self) -> Option<Result<(), ValidationErrors>> {
        let now = (stamp(&self.config.cert), stamp(&self.config.key));
        if *self.tried.lock().unwrap_or_else(PoisonError::into_inner) == now {
            return None;
        }
        Some(self.reload())
    }

    /// Checks the files every `watch_interval` and reloads them when they changed, logging
    /// each outcome. Runs until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.watch_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            if let Ok(Some(result)) = outcome {
                log_reload("the certificate or key file changed", &result);
            }
        }
    }

    /// The certificate chain served now, the server's first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).cert.clone()
    }
}

fn log_reload(why: &str, result: &Result<(), ValidationErrors>) {
    match result {
        Ok(()) => tracing::info!(why, "TLS certificate reloaded: new connections get it"),
        Err(e) => {
            tracing::error!(why, error = %e, "TLS certificate not reloaded: the previous one is still served")
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

impl crate::reload::Reload for Certificates {
    fn what(&self) -> &str {
        "the TLS certificate and key"
    }

    fn reload(&self) -> Result<(), crate::reload::ReloadError> {
        Certificates::reload(self).map_err(Into::into)
    }
}

/// A listener that hands axum TLS connections: TCP connections are accepted here and their
/// handshakes run in tasks of their own (bounded by a timeout), so a slow client holds up no
/// other. Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    incoming: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, incoming) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accepting = tokio::spawn(accept(listener, acceptor, sender));
        Ok(Self { incoming, local, accepting })
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    sender: mpsc::Sender<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
) {
    while !sender.is_closed() {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended (only when this listener is dropped): nothing comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Starts watching `certificates`' files (see [`Certificates::watch`]) and answers the
/// listener serving them on `listener`.
pub fn listen(listener: TcpListener, certificates: &Arc<Certificates>) -> std::io::Result<TlsListener> {
    let config = certificates.server_config().map_err(std::io::Error::other)?;
    tokio::spawn(certificates.clone().watch());
    TlsListener::new(listener, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn self_signed(dir: &Path, name: &str) -> TlsConfig {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        write(&cert, &certified.cert.pem(), 0o644);
        write(&key, &certified.signing_key.serialize_pem(), 0o600);
        TlsConfig { cert, key, watch_interval: DEFAULT_WATCH_INTERVAL }
    }

    fn problems(listen: &str, tls: Option<&TlsConfig>, allow_plain_http: bool) -> Vec<String> {
        let mut problems = Vec::new();
        check_config(listen.parse().expect("address"), tls, allow_plain_http, &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn plain_http_off_loopback_is_refused_unless_allowed_naming_listen_and_the_fix() {
        assert_eq!(problems("127.0.0.1:8080", None, false), Vec::<String>::new());
        assert_eq!(problems("[::1]:8080", None, false), Vec::<String>::new());
        for listen in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
            let refused = problems(listen, None, false);
            assert_eq!(refused.len(), 1, "{listen}: {refused:?}");
            assert!(
                refused[0].starts_with(&format!("listen: is {listen}, not a loopback address")),
                "{refused:?}"
            );
            assert!(refused[0].contains("[tls] cert") && refused[0].contains("allow_plain_http = true"));
            assert_eq!(problems(listen, None, true), Vec::<String>::new());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = self_signed(dir.path(), "server");
        assert_eq!(problems("0.0.0.0:8443", Some(&tls), false), Vec::<String>::new());
    }

    #[test]
    fn every_certificate_problem_at_once_by_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = self_signed(dir.path(), "server");
        let other = self_signed(dir.path(), "other");
        let missing = TlsConfig {
            cert: dir.path().join("nothing.pem"),
            key: dir.path().join("nothing.key"),
            watch_interval: Duration::from_millis(1),
        };
        let found = problems("0.0.0.0:8443", Some(&missing), false);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("tls.watch_interval: must be at least 100ms"), "{found:?}");
        assert!(found[1].starts_with("tls.cert: cannot read"), "{found:?}");
        assert!(found[2].starts_with("tls.key: cannot read"), "{found:?}");

        let mismatched = TlsConfig { key: other.key.clone(), ..good.clone() };
        let found = problems("0.0.0.0:8443", Some(&mismatched), false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("tls.key: ") && found[0].contains("is not the key of the certificate"),
            "{found:?}"
        );

        write(&dir.path().join("garbage.pem"), "not a certificate", 0o644);
        write(&dir.path().join("open.key"), &std::fs::read_to_string(&good.key).expect("key"), 0o644);
        let broken = TlsConfig {
            cert: dir.path().join("garbage.pem"),
            key: dir.path().join("open.key"),
            watch_interval: DEFAULT_WATCH_INTERVAL,
        };
        let found = problems("0.0.0.0:8443", Some(&broken), false);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("tls.cert: ") && found[0].contains("holds no certificate"), "{found:?}");
        let open = dir.path().join("open.key").display().to_string();
        assert_eq!(
            found[1],
            format!("tls.key: UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {open} are too open (any user of the machine may use it); a private key must not be accessible by others: run `chmod 600 {open}`")
        );
    }

    #[test]
    fn a_broken_new_certificate_keeps_the_old_one_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = self_signed(dir.path(), "server");
        let certificates = Certificates::load(&tls).expect("loads");
        let first = certificates.chain();
        assert!(certificates.reload_if_changed().is_none(), "nothing changed");

        write(&tls.cert, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n", 0o644);
        let refused = certificates.reload_if_changed().expect("a change").expect_err("broken");
        assert!(refused.to_string().contains("tls.cert"), "{refused}");
        assert_eq!(certificates.chain(), first, "the old certificate is still served");
        assert!(certificates.reload_if_changed().is_none(), "a broken version is tried once");

        let next = self_signed(dir.path(), "next");
        std::fs::rename(&next.cert, &tls.cert).expect("rename");
        std::fs::rename(&next.key, &tls.key).expect("rename");
        certificates.reload_if_changed().expect("a change").expect("loads");
        assert_ne!(certificates.chain(), first, "the new certificate is served");
    }
}
