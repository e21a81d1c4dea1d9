//! A real OpenSSH `sshd` for tests: its own host key, client keys (ed25519, RSA, ed25519 with a
//! passphrase) in authorized_keys, on a free loopback port, as the current user; and an
//! `ssh-agent` holding a key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{free_port, require_binary, wait_for_path, wait_for_tcp, ServerProcess};

/// The Debian package that has `sshd`.
pub const SSHD_PACKAGE: &str = "openssh-server";
/// The Debian package that has `ssh-keygen` and `ssh-agent`.
pub const CLIENT_PACKAGE: &str = "openssh-client";
/// The passphrase of [`Sshd::encrypted_key`].
pub const KEY_PASSPHRASE: &str = "correct horse battery staple";

/// A running sshd. Dropping it stops sshd and removes its files.
#[derive(Debug)]
pub struct Sshd {
    server: ServerProcess,
    port: u16,
    user: String,
}

impl Sshd {
    /// Starts sshd with a fresh ed25519 host key and three authorized client keys.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts sshd like [`start`](Self::start), with `extra` appended to its `sshd_config`
    /// (whole lines, such as `ChannelTimeout session:command=1s`).
    pub fn start_with(extra: &str) -> Self {
        let sshd = require_binary("sshd", SSHD_PACKAGE);
        let dir = ServerProcess::temp_dir("sshd");
        let path = dir.path().to_path_buf();
        generate_key(&path.join("ssh_host_ed25519_key"), "ed25519", "");
        generate_key(&path.join("id_ed25519"), "ed25519", "");
        generate_key(&path.join("id_rsa"), "rsa", "");
        generate_key(&path.join("id_ed25519_pass"), "ed25519", KEY_PASSPHRASE);
        generate_key(&path.join("id_unknown"), "ed25519", "");
        let mut authorized = String::new();
        for key in ["id_ed25519", "id_rsa", "id_ed25519_pass"] {
            authorized.push_str(&read(&path.join(format!("{key}.pub"))));
        }
        write(&path.join("authorized_keys"), &authorized);
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/ssh_host_ed25519_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             MaxStartups 1000\nMaxSessions 100\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n\
             SetEnv HOME={dir}/home\n{extra}\n",
            dir = path.display()
        );
        // Sessions get an empty HOME of their own: the machine user's shell rc files (which may
        // be slow, or print) stay out of the tests.
        std::fs::create_dir_all(path.join("home")).unwrap_or_else(|e| panic!("cannot create home: {e}"));
        let config_path = path.join("sshd_config");
        write(&config_path, &config);
        // sshd's privilege separation directory; Debian creates it only when the service starts.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut command = Command::new(sshd);
        command.arg("-D").arg("-e").arg("-f").arg(&config_path);
        let mut server = ServerProcess::start("sshd", command, dir);
        wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(10), &mut server);
        Self { server, port, user: current_user() }
    }

    /// The port sshd listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to connect to.
    pub fn address(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The user sshd runs as, who logs in.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// sshd's temp dir (keys, config, log); files a test creates there go with it.
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// An authorized ed25519 key without passphrase.
    pub fn ed25519_key(&self) -> PathBuf {
        self.dir().join("id_ed25519")
    }

    /// An authorized RSA key without passphrase.
    pub fn rsa_key(&self) -> PathBuf {
        self.dir().join("id_rsa")
    }

    /// An authorized ed25519 key encrypted with [`KEY_PASSPHRASE`].
    pub fn encrypted_key(&self) -> PathBuf {
        self.dir().join("id_ed25519_pass")
    }

    /// A valid key that is not in authorized_keys.
    pub fn unauthorized_key(&self) -> PathBuf {
        self.dir().join("id_unknown")
    }

    /// The known_hosts line for this server: `[127.0.0.1]:port ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let public = read(&self.dir().join("ssh_host_ed25519_key.pub"));
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// A known_hosts line naming this server with another (freshly generated) key.
    pub fn wrong_known_hosts_line(&self) -> String {
        let other = self.dir().join("other_host_key");
        if !other.exists() {
            generate_key(&other, "ed25519", "");
        }
        let public = read(&other.with_extension("pub"));
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// A running `ssh-agent` holding one key, on its own socket.
#[derive(Debug)]
pub struct SshAgent {
    /// Held for its `Drop`, which stops the agent and removes its socket's folder.
    _server: ServerProcess,
    socket: PathBuf,
}

impl SshAgent {
    /// Starts an agent and adds the unencrypted private key `key` to it.
    pub fn start(key: &Path) -> Self {
        let agent = require_binary("ssh-agent", CLIENT_PACKAGE);
        let add = require_binary("ssh-add", CLIENT_PACKAGE);
        let dir = ServerProcess::temp_dir("ssh-agent");
        let socket = dir.path().join("agent.sock");
        let mut command = Command::new(agent);
        command.arg("-D").arg("-a").arg(&socket);
        let mut server = ServerProcess::start("ssh-agent", command, dir);
        wait_for_path(&socket, Duration::from_secs(10), &mut server);
        let status = Command::new(add)
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh-add: {e}"));
        assert!(status.status.success(), "ssh-add failed: {}", String::from_utf8_lossy(&status.stderr));
        Self { _server: server, socket }
    }

    /// The agent's socket (what `SSH_AUTH_SOCK` would be).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Generates a private key of `kind` (`ed25519`, `rsa`) at `path` (public key at `path.pub`).
pub fn generate_key(path: &Path, kind: &str, passphrase: &str) {
    let keygen = require_binary("ssh-keygen", CLIENT_PACKAGE);
    let mut command = Command::new(keygen);
    command.args(["-q", "-t", kind, "-N", passphrase, "-C", "vesemir-test", "-f"]).arg(path);
    if kind == "rsa" {
        command.args(["-b", "2048"]);
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
    assert!(
        output.status.success(),
        "ssh-keygen -t {kind} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Hashes the host names of a known_hosts file in place (`ssh-keygen -H`).
pub fn hash_known_hosts(path: &Path) {
    let keygen = require_binary("ssh-keygen", CLIENT_PACKAGE);
    let output = Command::new(keygen)
        .arg("-H")
        .arg("-f")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen -H: {e}"));
    assert!(output.status.success(), "ssh-keygen -H failed: {}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_file(path.with_extension("old"));
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap_or_else(|e| panic!("cannot run id -un: {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
