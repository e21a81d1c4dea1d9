//! A real BIND 9 `named` for tests: a TSIG key, a forward zone and a reverse zone that accept
//! dynamic updates (RFC 2136) signed with that key only, on a free loopback port, as the current
//! user, with no rndc channel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{free_port, require_binary, wait_for_tcp, ServerProcess};

/// The Debian package that has `named` and `tsig-keygen`.
pub const NAMED_PACKAGE: &str = "bind9";
/// The Debian package that has `nsupdate` and `dig`.
pub const DNSUTILS_PACKAGE: &str = "bind9-dnsutils";
/// The TSIG key's name.
pub const KEY_NAME: &str = "vesemir-test";
/// The TSIG key's algorithm.
pub const KEY_ALGORITHM: &str = "hmac-sha256";

/// A running named. Dropping it stops named and removes its files.
#[derive(Debug)]
pub struct Named {
    server: ServerProcess,
    address: SocketAddr,
    zone: String,
    reverse_zone: String,
    secret: String,
}

impl Named {
    /// Starts named serving `zone` (e.g. `lab.test`) and `reverse_zone` (e.g.
    /// `55.127.in-addr.arpa`), both empty but for their SOA and NS, both updatable with the key.
    pub fn start(zone: &str, reverse_zone: &str) -> Self {
        let named = require_binary("named", NAMED_PACKAGE);
        let keygen = require_binary("tsig-keygen", NAMED_PACKAGE);
        let dir = ServerProcess::temp_dir("named");
        let path = dir.path().to_path_buf();
        let key = Command::new(&keygen)
            .args(["-a", KEY_ALGORITHM, KEY_NAME])
            .output()
            .unwrap_or_else(|e| panic!("cannot run tsig-keygen: {e}"));
        let key = String::from_utf8_lossy(&key.stdout).into_owned();
        let secret = key
            .lines()
            .find_map(|line| line.trim().strip_prefix("secret \"")?.strip_suffix("\";").map(str::to_owned))
            .unwrap_or_else(|| panic!("no secret in tsig-keygen's output: {key}"));
        write(&path.join("key.conf"), &key);
        let port = free_port();
        for (name, file) in [(zone, "forward.zone"), (reverse_zone, "reverse.zone")] {
            write(
                &path.join(file),
                &format!(
                    "$TTL 60\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\n{ns}",
                    ns = if name == zone { "ns IN A 127.0.0.1\n" } else { "" }
                ),
            );
        }
        let config = format!(
            "include \"{dir}/key.conf\";\n\
             options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n  session-keyfile \"{dir}/session.key\";\n\
               managed-keys-directory \"{dir}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
               recursion no;\n  dnssec-validation no;\n  allow-query {{ any; }};\n  notify no;\n}};\n\
             controls {{ }};\n\
             zone \"{zone}\" {{ type primary; file \"{dir}/forward.zone\"; allow-update {{ key \"{KEY_NAME}\"; }}; }};\n\
             zone \"{reverse_zone}\" {{ type primary; file \"{dir}/reverse.zone\"; allow-update {{ key \"{KEY_NAME}\"; }}; }};\n",
            dir = path.display()
        );
        write(&path.join("named.conf"), &config);
        let mut command = Command::new(named);
        // -g: foreground, logs to stderr; -n 1: one worker thread (2 cores are shared).
        command.args(["-g", "-n", "1", "-c"]).arg(path.join("named.conf"));
        let mut server = ServerProcess::start("named", command, dir);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_tcp(address, Duration::from_secs(20), &mut server);
        Self { server, address, zone: zone.to_owned(), reverse_zone: reverse_zone.to_owned(), secret }
    }

    /// Where named answers (UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The forward zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The reverse zone.
    pub fn reverse_zone(&self) -> &str {
        &self.reverse_zone
    }

    /// The TSIG key's secret (base64).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The key file in BIND's syntax (`key "NAME" { algorithm ...; secret "..."; };`), as
    /// `nsupdate -k` reads it.
    pub fn key_file(&self) -> PathBuf {
        self.server.dir().join("key.conf")
    }

    /// The server's temp dir.
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// What named logged so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Panics with the log if named has exited.
    pub fn assert_running(&mut self) {
        self.server.assert_running();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
