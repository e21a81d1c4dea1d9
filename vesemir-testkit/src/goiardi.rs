//! A real Chef server for tests: Debian's `goiardi` with authentication on, in memory, on a
//! free loopback port, in its own temp dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{free_port, require_binary, wait_for_path, wait_for_tcp, ServerProcess};

/// A running goiardi. It serves one organization at the root URL. Dropping it stops it.
#[derive(Debug)]
pub struct Goiardi {
    /// The server process (and its temp dir).
    pub server: ServerProcess,
    /// `http://127.0.0.1:<port>` (`https://` with [`Goiardi::start_tls`]).
    pub url: String,
    /// The port goiardi listens on at 127.0.0.1 (the one in `url`).
    pub port: u16,
    /// The PEM key of the `admin` client goiardi made on start (`<conf-root>/admin.pem`).
    pub admin_key_path: PathBuf,
}

impl Goiardi {
    /// Starts goiardi with `--use-auth`, or panics with its log.
    ///
    /// goiardi refuses to start unless `--local-filestore-dir` exists; it writes `admin.pem`,
    /// `chef-validator.pem` and `chef-webui.pem` into `--conf-root`.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts goiardi serving HTTPS (`--use-ssl`) with this PEM certificate and key; `url` is
    /// then `https://127.0.0.1:<port>`.
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> Self {
        Self::start_inner(Some((cert_pem, key_pem)))
    }

    fn start_inner(tls: Option<(&[u8], &[u8])>) -> Self {
        let binary = require_binary("goiardi", "goiardi");
        let dir = ServerProcess::temp_dir("goiardi");
        let conf = dir.path().join("conf");
        let files = dir.path().join("files");
        for folder in [&conf, &files] {
            std::fs::create_dir_all(folder)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", folder.display()));
        }
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg("--use-auth")
            .arg("--ipaddress=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--hostname=127.0.0.1")
            .arg(format!("--conf-root={}", conf.display()))
            .arg(format!("--local-filestore-dir={}", files.display()))
            .arg("--log-level=warning");
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) = (conf.join("server.crt"), conf.join("server.key"));
            for (path, pem) in [(&cert_path, cert), (&key_path, key)] {
                std::fs::write(path, pem).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            }
            command
                .arg("--use-ssl")
                .arg(format!("--ssl-cert={}", cert_path.display()))
                .arg(format!("--ssl-key={}", key_path.display()));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut server = ServerProcess::start("goiardi", command, dir);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_tcp(address, Duration::from_secs(20), &mut server);
        let admin_key_path = conf.join("admin.pem");
        wait_for_path(&admin_key_path, Duration::from_secs(10), &mut server);
        Self { server, url: format!("{scheme}://127.0.0.1:{port}"), port, admin_key_path }
    }
}
