//! The lab's real servers: one `sshd` per host on the host's own address, and HAProxy boxes on
//! addresses of their own, each with a frontend and a TCP runtime API at level admin.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vesemir_testkit::process::{require_binary, wait_for_tcp, ServerProcess};
use vesemir_testkit::sshd::SSHD_PACKAGE;

use super::error::{Context, LabResult};

/// The backend every HAProxy box of the lab sends traffic to.
pub const BACKEND: &str = "be_lab";

/// The second backend, when the lab has one (`LabOptions::second_backend`): the last hosts, as
/// a second environment behind the same HAProxy boxes, with a frontend of its own.
pub const SECOND_BACKEND: &str = "be_lab_2";

/// Starts sshd on `address:port` with the lab's shared host key and authorized keys in `keys`.
pub fn start_sshd(name: &str, address: Ipv4Addr, port: u16, keys: &Path) -> LabResult<ServerProcess> {
    let sshd = require_binary("sshd", SSHD_PACKAGE);
    let dir = ServerProcess::temp_dir(&format!("lab-sshd-{name}"));
    let path = dir.path().to_path_buf();
    let home = path.join("home");
    std::fs::create_dir_all(&home).context(|| format!("cannot create {}", home.display()))?;
    let config = format!(
        "Port {port}\nListenAddress {address}\nHostKey {keys}/ssh_host_ed25519_key\nPidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {keys}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
         MaxStartups 1000\nMaxSessions 100\nLogLevel INFO\nSetEnv HOME={dir}/home\n",
        keys = keys.display(),
        dir = path.display(),
    );
    let config_path = path.join("sshd_config");
    std::fs::write(&config_path, config).context(|| format!("cannot write {}", config_path.display()))?;
    // sshd's privilege separation directory; Debian creates it only when the service starts.
    let _ = std::fs::create_dir_all("/run/sshd");
    let mut command = Command::new(sshd);
    command.arg("-D").arg("-e").arg("-f").arg(&config_path);
    // A process group of its own: Ctrl-C in the terminal (which signals the whole foreground
    // group) must reach `vesemir`, not the lab's servers; the lab's guard stops them.
    command.process_group(0);
    Ok(ServerProcess::start(&format!("sshd-{name}"), command, dir))
}

/// Waits until sshd listens.
pub fn wait_sshd(server: &mut ServerProcess, address: Ipv4Addr, port: u16) {
    wait_for_tcp(SocketAddr::from((address, port)), Duration::from_secs(15), server);
}

/// One server line of a lab backend.
#[derive(Debug, Clone)]
pub struct BackendServer {
    /// The backend it is in ([`BACKEND`] or [`SECOND_BACKEND`]).
    pub backend: &'static str,
    /// The server (and host) name.
    pub name: String,
    /// Where the host's app listens.
    pub app: SocketAddr,
}

/// Starts one HAProxy box on `address`: a frontend per backend (`frontends`: the backend and
/// its frontend's port), runtime API on `api_port`, each backend with `retries 0`, no redispatch, HTTP health checks every 300 ms (every
/// 20 ms while a server is DOWN or changing, `downinter`/`fastinter`: the guidance for
/// `checks_while_out`, where a server marked DOWN after its changeset is seen UP by the first
/// check after it is healthy) and weights of 100 (a ramp to 50% of weight 1 would silently be 0). The runtime API socket takes
/// up to 200 connections at once: HAProxy's default for a stats socket is 10 (with a backlog as
/// small), and past it new connections' SYNs are dropped and retried by the kernel after 1 s,
/// which showed as a 1 s stall when 40 server lookups ran at once.
pub fn start_haproxy(
    name: &str,
    address: Ipv4Addr,
    api_port: u16,
    frontends: &[(&'static str, u16)],
    servers: &[BackendServer],
) -> LabResult<ServerProcess> {
    let binary = require_binary("haproxy", "haproxy");
    let dir = ServerProcess::temp_dir(&format!("lab-{name}"));
    let mut config = format!(
        "global\n    nbthread 1\n    maxconn 4000\n    stats socket ipv4@{address}:{api_port} level admin maxconn 200\n    stats timeout 30s\n\n\
         defaults\n    mode http\n    retries 0\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    timeout check 1s\n\n"
    );
    for (backend, port) in frontends {
        let frontend = if *backend == BACKEND { "fe_lab".to_owned() } else { format!("fe_{backend}") };
        config.push_str(&format!(
            "frontend {frontend}\n    bind {address}:{port}\n    default_backend {backend}\n\n"
        ));
    }
    for (i, (backend, _)) in frontends.iter().enumerate() {
        if i > 0 {
            config.push('\n');
        }
        config.push_str(&format!(
            "backend {backend}\n    balance roundrobin\n    option httpchk GET /health\n"
        ));
        for s in servers.iter().filter(|s| s.backend == *backend) {
            config.push_str(&format!(
                "    server {} {} weight 100 check inter 300ms fastinter 20ms downinter 20ms fall 2 rise 1\n",
                s.name, s.app
            ));
        }
    }
    let config_path = dir.path().join("haproxy.cfg");
    std::fs::write(&config_path, config).context(|| format!("cannot write {}", config_path.display()))?;
    let mut command = Command::new(binary);
    command.arg("-db").arg("-f").arg(&config_path);
    // Out of the terminal's process group, like sshd above.
    command.process_group(0);
    let mut process = ServerProcess::start(name, command, dir);
    let timeout = Duration::from_secs(10);
    wait_for_tcp(SocketAddr::from((address, api_port)), timeout, &mut process);
    for (_, port) in frontends {
        wait_for_tcp(SocketAddr::from((address, *port)), timeout, &mut process);
    }
    Ok(process)
}
