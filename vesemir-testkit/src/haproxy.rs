//! A real `haproxy` for tests: a generated config in its own temp dir, a runtime API socket at
//! level admin on a unix path and on a loopback TCP port, a frontend on a free port, `retries 0`
//! (so a failed request shows instead of being retried), stopped when the guard drops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use vesemir_core::ports::LbEndpoint;

use crate::process::{free_port, require_binary, wait_for_path, wait_for_tcp, ServerProcess};

/// What to put in a test HAProxy's config besides the fixed parts.
#[derive(Debug, Clone, Default)]
pub struct HaproxyOptions {
    /// The backend the frontend sends traffic to.
    pub default_backend: String,
    /// `backend` sections, as config text.
    pub backends: String,
    /// More runtime API sockets: file name in the temp dir and level (`user`, `operator`).
    pub extra_sockets: Vec<(String, String)>,
}

/// A running `haproxy` started by a test.
#[derive(Debug)]
pub struct HaproxyInstance {
    process: ServerProcess,
    socket: PathBuf,
    api_port: u16,
    frontend_port: u16,
}

impl HaproxyInstance {
    /// Starts haproxy whose frontend sends traffic to `default_backend`, with these `backend`
    /// sections.
    pub fn start(default_backend: &str, backends: &str) -> Self {
        Self::start_with(HaproxyOptions {
            default_backend: default_backend.to_owned(),
            backends: backends.to_owned(),
            extra_sockets: Vec::new(),
        })
    }

    /// Starts haproxy with `options`, and waits until its sockets and frontend listen.
    pub fn start_with(options: HaproxyOptions) -> Self {
        let binary = require_binary("haproxy", "haproxy");
        let dir = ServerProcess::temp_dir("haproxy");
        let socket = dir.path().join("admin.sock");
        let api_port = free_port();
        let frontend_port = free_port();
        let extra: String = options
            .extra_sockets
            .iter()
            .map(|(file, level)| {
                format!("    stats socket {} level {level}\n", dir.path().join(file).display())
            })
            .collect();
        let config = format!(
            "global\n    nbthread 1\n    stats socket {socket} level admin\n    stats socket ipv4@127.0.0.1:{api_port} level admin\n{extra}    stats timeout 30s\n\n\
             defaults\n    mode http\n    retries 0\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    timeout check 1s\n\n\
             frontend fe\n    bind 127.0.0.1:{frontend_port}\n    default_backend {default}\n\n{backends}\n",
            socket = socket.display(),
            default = options.default_backend,
            backends = options.backends,
        );
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let mut command = Command::new(binary);
        command.arg("-db").arg("-f").arg(&config_path);
        let mut process = ServerProcess::start("haproxy", command, dir);
        let timeout = Duration::from_secs(10);
        wait_for_path(&socket, timeout, &mut process);
        wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], api_port)), timeout, &mut process);
        wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], frontend_port)), timeout, &mut process);
        Self { process, socket, api_port, frontend_port }
    }

    /// The runtime API on the unix socket.
    pub fn unix_endpoint(&self) -> LbEndpoint {
        LbEndpoint::Unix { socket: self.socket.clone() }
    }

    /// The runtime API on TCP.
    pub fn tcp_endpoint(&self) -> LbEndpoint {
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: self.api_port }
    }

    /// One of the [`HaproxyOptions::extra_sockets`].
    pub fn extra_endpoint(&self, file: &str) -> LbEndpoint {
        LbEndpoint::Unix { socket: self.process.dir().join(file) }
    }

    /// Where the frontend listens.
    pub fn frontend(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.frontend_port))
    }

    /// What haproxy wrote so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops haproxy now (an instance that is down).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
