//! A real PostgreSQL for tests: a fresh cluster made by `initdb` in its own temp dir, served by
//! `postgres` on a free loopback port (and a unix socket in the same dir), trust authentication,
//! stopped (fast shutdown, by its own child handle) when the guard drops.
//!
//! `initdb` and `postgres` refuse to run as root. Run as root (as on CI machines and in
//! containers), the cluster runs as `nobody`: the temp dir is given to it and every command is
//! started through `setpriv`. Run as another user, it runs as that user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{find_binary, free_port, wait_for_tcp, ServerProcess};

/// The Debian package with PostgreSQL's server binaries.
const PACKAGE: &str = "postgresql";
/// The role every test connects as (a superuser, trusted on loopback).
pub const ROLE: &str = "vesemir";

/// A running PostgreSQL cluster. Dropping it stops it and removes its files.
#[derive(Debug)]
pub struct Postgres {
    /// The server process (and its temp dir, which holds the data directory).
    pub server: ServerProcess,
    /// The port it listens on at 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    run_as: Option<u32>,
    databases: AtomicU32,
}

impl Postgres {
    /// Makes a cluster with `initdb` and starts it, or panics naming the Debian package when
    /// the binaries are missing, or with the server's log when it does not start.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = ServerProcess::temp_dir("postgres");
        let run_as = run_as_nobody(dir.path());
        let data = dir.path().join("data");
        let init_log = dir.path().join("initdb.log");
        let mut initdb = as_user(run_as, &bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", ROLE, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .current_dir(dir.path());
        let output = initdb.output().unwrap_or_else(|e| panic!("cannot run initdb ({initdb:?}): {e}"));
        if !output.status.success() {
            let _ = std::fs::write(&init_log, &output.stderr);
            panic!(
                "initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let port = free_port();
        let mut postgres = as_user(run_as, &bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"]);
        let mut server = ServerProcess::start("postgres", postgres, dir);
        wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(30), &mut server);
        let cluster = Self { server, port, bin, run_as, databases: AtomicU32::new(0) };
        cluster.wait_ready();
        cluster
    }

    /// A new, empty database of its own, as a `postgres://` URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("test{n}");
        let mut createdb = as_user(self.run_as, &self.bin.join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE, &name]);
        let output = createdb.output().unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            output.status.success(),
            "createdb {name} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.server.log()
        );
        self.url(&name)
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// Waits until the server accepts sessions (it listens a moment before it does).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = as_user(self.run_as, &self.bin.join("pg_isready"));
            ready.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE, "-d", "postgres"]);
            if ready.output().is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not accept sessions\n{}", self.server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT) ends the backends and frees shared memory; SIGKILL (the
        // process guard's fallback) would leave them to notice the postmaster's death.
        self.server.signal("INT");
        self.server.wait_exit(Duration::from_secs(10));
    }
}

/// PostgreSQL's binaries: the newest `/usr/lib/postgresql/<version>/bin` with `initdb`, else
/// `initdb` on `PATH`; panics naming the Debian package when there is none.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    match find_binary("initdb").and_then(|p| p.parent().map(Path::to_owned)) {
        Some(bin) => bin,
        None => panic!(
            "PostgreSQL's `initdb` is not installed: this test runs a real server. Install it with \
             `apt-get install -y {PACKAGE}` (.ci/run does this)"
        ),
    }
}

/// As root, gives `dir` to `nobody` and answers its uid (every command then runs as it);
/// otherwise `None` (commands run as the current user).
pub(crate) fn run_as_nobody(dir: &Path) -> Option<u32> {
    let uid = current_uid();
    if uid != Some(0) {
        return None;
    }
    let (nobody_uid, nobody_gid) = nobody();
    std::os::unix::fs::chown(dir, Some(nobody_uid), Some(nobody_gid))
        .unwrap_or_else(|e| panic!("cannot give {} to nobody: {e}", dir.display()));
    Some(nobody_uid)
}

/// `program`, started as `uid` through `setpriv` when given.
pub(crate) fn as_user(uid: Option<u32>, program: &Path) -> Command {
    match uid {
        None => Command::new(program),
        Some(uid) => {
            let setpriv = find_binary("setpriv").unwrap_or_else(|| {
                panic!("`setpriv` is missing: install it with `apt-get install -y util-linux`")
            });
            let mut command = Command::new(setpriv);
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={}", nobody().1))
                .arg("--clear-groups")
                .arg("--reset-env")
                .arg(program);
            command
        }
    }
}

/// This process's real uid, from `/proc/self/status`.
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `nobody`'s uid and gid from `/etc/passwd` (65534 when it is not listed).
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"nobody") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or((65534, 65534))
}
