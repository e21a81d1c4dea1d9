//! Real servers for tests: find the binary (or fail saying which Debian package to install),
//! pick a free loopback port, start the server in a temp dir, wait until it listens, and stop
//! it (by its own child handle, never by a pid read elsewhere) when the guard drops.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds `binary` on `PATH` or in the sbin folders.
pub fn find_binary(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut folders: Vec<PathBuf> = std::env::split_paths(&path).collect();
    folders.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    folders.into_iter().map(|folder| folder.join(binary)).find(|candidate| candidate.is_file())
}

/// Finds `binary` on `PATH` or in the sbin folders, or panics with the Debian package to
/// install. Tests never skip: a missing server is a failure that says how to fix it.
pub fn require_binary(binary: &str, debian_package: &str) -> PathBuf {
    find_binary(binary).unwrap_or_else(|| {
        panic!(
            "`{binary}` is not installed: this test runs a real server. Install it with \
                 `apt-get install -y {debian_package}` (.ci/run does this)"
        )
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("no local address: {e}"))
}

/// Waits until something accepts TCP connections at `address`, or panics after `timeout`
/// with `what` and the server's log.
pub fn wait_for_tcp(address: SocketAddr, timeout: Duration, server: &mut ServerProcess) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        server.assert_running();
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not listen on {address} within {timeout:?}\n{}", server.name, server.log());
}

/// Waits until `path` exists (a unix socket, a pid file), or panics after `timeout`.
pub fn wait_for_path(path: &Path, timeout: Duration, server: &mut ServerProcess) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return;
        }
        server.assert_running();
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not create {} within {timeout:?}\n{}", server.name, path.display(), server.log());
}

/// A server this test started. Dropping it kills and reaps the process; the temp dir (config,
/// data, logs) goes with it.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// A fresh temp dir for a server's files, before it starts.
    pub fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("vesemir-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir for {name}: {e}"))
    }

    /// Starts `command` with stdout and stderr going to `<dir>/<name>.log`.
    pub fn start(name: &str, mut command: Command, dir: tempfile::TempDir) -> Self {
        let log_path = dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let err = log.try_clone().unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        command.stdin(Stdio::null()).stdout(log).stderr(err).current_dir(dir.path());
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Self { name: name.to_owned(), child, log_path, dir }
    }

    /// The server's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's pid while it runs (not yet reaped), from its own child handle.
    pub fn pid(&mut self) -> Option<u32> {
        matches!(self.child.try_wait(), Ok(None)).then(|| self.child.id())
    }

    /// What the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics with the log if the server has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status})\n{}", self.name, self.log());
        }
    }

    /// Sends signal `name` (`INT`, `TERM`...) to this server's own process, by its child
    /// handle's pid (never a pid read elsewhere), while it has not been reaped.
    pub fn signal(&mut self, name: &str) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        }
    }

    /// Waits up to `timeout` for the server to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops the server now and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
