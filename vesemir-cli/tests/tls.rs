//! `vesemir serve` over HTTPS with a test CA made here: the CLI verifies the server with
//! `--ca-file` (a wrong CA is refused naming the option), the certificate is reloaded on SIGHUP
//! and when its files change (new connections see it, open ones stay), a broken new certificate
//! keeps the old one, plain HTTP off loopback is refused, and key files others may read are
//! refused by `config check` and `serve`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use vesemir_testkit::process::free_port;

const TOKEN: &str = "test-token-for-the-web-team";

/// A certificate authority of the test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, as a client's `--ca-file`.
    file: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("Vesemir test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let file = dir.join(format!("ca-{name}.pem"));
        std::fs::write(&file, issuer.pem()).expect("write the CA");
        Self { issuer, file }
    }

    /// A server certificate for 127.0.0.1 and localhost, written (atomically, by rename) as
    /// `cert` and `key` (mode 0600).
    fn issue(&self, cert: &Path, key: &Path) {
        self.issue_with_key_mode(cert, key, 0o600);
    }

    /// [`issue`](Self::issue), the key file with `mode`.
    fn issue_with_key_mode(&self, cert: &Path, key: &Path, mode: u32) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let signing_key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&signing_key, &self.issuer).expect("signed");
        write_atomically(key, &signing_key.serialize_pem(), mode);
        write_atomically(cert, &certificate.pem(), 0o644);
    }
}

fn write_atomically(path: &Path, text: &str, mode: u32) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write");
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&next, path).expect("rename");
}

/// A directory with `vesemir.toml` (an SSH key file of mode 0600) and a server config.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id_ed25519");
        // A real private key: `vesemir serve` reads the SSH key once at start (shared adapters);
        // no deployment runs here, so no sshd ever sees it.
        let ssh_key = KeyPair::generate().expect("a key pair");
        write_atomically(&key, &ssh_key.serialize_pem(), 0o600);
        std::fs::write(
            dir.path().join("vesemir.toml"),
            format!("[ssh]\nuser = \"deploy\"\nkey = \"{}\"\n", key.display()),
        )
        .expect("vesemir.toml");
        Self { dir, port: free_port() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the server's configuration: `listen` on this setup's port at `host`, then `extra`.
    fn server_config(&self, host: &str, extra: &str) {
        let config = format!(
            "listen = \"{host}:{port}\"\ndatabase = \"{db}\"\n{extra}\n\n[[tokens]]\nname = \"web-ci\"\nsha256 = \"{hash}\"\nteam = \"web\"\n",
            port = self.port,
            db = self.path("vesemir.db").display(),
            hash = vesemir_http::auth::sha256_hex(TOKEN.as_bytes()),
        );
        std::fs::write(self.path("vesemir-server.toml"), config).expect("server config");
    }

    /// `[tls]` with `cert.pem` and `key.pem` of this setup, checked every `watch`.
    fn tls_section(&self, watch: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nwatch_interval = \"{watch}\"",
            self.path("cert.pem").display(),
            self.path("key.pem").display()
        )
    }

    fn vesemir(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vesemir"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("VESEMIR_CONFIG")
            .env_remove("VESEMIR_SERVER")
            .env_remove("VESEMIR_CA_FILE")
            .env("VESEMIR_TOKEN", TOKEN);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.vesemir(args).output().expect("runs vesemir")
    }

    /// `vesemir serve`, its log in `serve.log`, once it listens.
    fn serve(&self) -> Served {
        let log = std::fs::File::create(self.path("serve.log")).expect("log");
        let child = self
            .vesemir(&["serve"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts vesemir serve");
        let mut served = Served { child, log: self.path("serve.log") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!("vesemir serve ended ({status}):\n{}", served.log());
            }
            assert!(Instant::now() < deadline, "vesemir serve did not listen:\n{}", served.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `vesemir list` against the server, trusting `ca`.
    fn list(&self, ca: &Ca) -> Output {
        let url = self.url();
        let ca = ca.file.display().to_string();
        self.run(&["list", "--server", &url, "--ca-file", &ca])
    }

    /// Waits until `vesemir list` trusting `ca` succeeds (a reload took effect).
    fn wait_until_trusted_by(&self, ca: &Ca, served: &Served, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = self.list(ca);
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the new certificate was not served: {}\n{}",
                text(&output),
                served.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `vesemir serve`, killed and reaped when dropped.
struct Served {
    child: Child,
    log: PathBuf,
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill (procps) runs");
        assert!(status.success(), "kill -HUP");
    }

    fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < count {
            assert!(Instant::now() < deadline, "no {needle:?} ({count}) in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A client that trusts `ca` only (besides the system's roots) and keeps its connection open.
struct KeepAlive {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl KeepAlive {
    fn new(ca: &Ca) -> Self {
        let pem = std::fs::read(&ca.file).expect("read the CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Self { runtime, client }
    }

    /// GET `url`: its status, or why it failed.
    fn get(&self, url: &str) -> Result<reqwest::StatusCode, String> {
        self.runtime.block_on(async {
            let response = self.client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
            Ok(response.status())
        })
    }
}

#[test]
fn the_cli_calls_the_api_over_https_with_its_ca_file_and_refuses_another_ca_naming_the_option() {
    let setup = Setup::new();
    let (ca, other) = (Ca::new(setup.dir.path(), "a"), Ca::new(setup.dir.path(), "b"));
    ca.issue(&setup.path("cert.pem"), &setup.path("key.pem"));
    setup.server_config("127.0.0.1", &setup.tls_section("5s"));
    let served = setup.serve();

    let output = setup.list(&ca);
    assert!(output.status.success(), "{}\n{}", text(&output), served.log());
    assert!(text(&output).contains("no deployments"), "{}", text(&output));
    let url = setup.url();
    let by_env =
        setup.vesemir(&["list", "--server", &url]).env("VESEMIR_CA_FILE", &ca.file).output().expect("runs");
    assert!(by_env.status.success(), "VESEMIR_CA_FILE: {}", text(&by_env));

    let refused = setup.list(&other);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!(
            "the server's TLS certificate is not signed by the CA in --ca-file {}",
            other.file.display()
        )) && said.contains("give the CA that signed it with --ca-file (or VESEMIR_CA_FILE)"),
        "{said}"
    );
    let without = setup.run(&["list", "--server", &url]);
    let said = text(&without);
    assert_eq!(without.status.code(), Some(3), "{said}");
    assert!(said.contains("give its certificate with --ca-file FILE (or VESEMIR_CA_FILE)"), "{said}");
    let plain = setup.run(&["list", "--server", &format!("http://127.0.0.1:{}", setup.port)]);
    assert_ne!(plain.status.code(), Some(0), "plain HTTP to the HTTPS port: {}", text(&plain));
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_open_ones_stay() {
    let setup = Setup::new();
    let (first, second) = (Ca::new(setup.dir.path(), "first"), Ca::new(setup.dir.path(), "second"));
    first.issue(&setup.path("cert.pem"), &setup.path("key.pem"));
    // The files are polled hourly: only SIGHUP reloads them during this test.
    setup.server_config("127.0.0.1", &setup.tls_section("1h"));
    let mut served = setup.serve();
    let open = KeepAlive::new(&first);
    let healthz = format!("{}/healthz", setup.url());
    assert!(open.get(&healthz).expect("over the first certificate").is_success());

    second.issue(&setup.path("cert.pem"), &setup.path("key.pem"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(setup.list(&first).status.success(), "nothing reloads before SIGHUP");
    served.hangup();
    setup.wait_until_trusted_by(&second, &served, "after SIGHUP");
    assert!(served.is_running(), "SIGHUP ended the server:\n{}", served.log());
    assert!(!setup.list(&first).status.success(), "a new connection gets the new certificate");
    // The connection opened before the reload is still served (a new one would not trust the
    // new certificate).
    let again = open.get(&healthz).expect("the open connection still works");
    assert!(again.is_success());
    assert!(served.log().contains("SIGHUP: reloading"), "{}", served.log());
}

#[test]
fn a_changed_certificate_file_is_reloaded_without_a_signal_and_a_broken_one_keeps_the_old() {
    let setup = Setup::new();
    let (first, second) = (Ca::new(setup.dir.path(), "first"), Ca::new(setup.dir.path(), "second"));
    first.issue(&setup.path("cert.pem"), &setup.path("key.pem"));
    setup.server_config("127.0.0.1", &setup.tls_section("200ms"));
    let mut served = setup.serve();
    assert!(setup.list(&first).status.success(), "{}", served.log());

    // A certificate that is not PEM: logged, the old one is served still, on a file change
    // and on SIGHUP alike.
    write_atomically(&setup.path("cert.pem"), "not a certificate\n", 0o644);
    served.wait_for_log("TLS certificate not reloaded", 1);
    served.hangup();
    served.wait_for_log("not reloaded: keeping what was loaded before", 1);
    let still = setup.list(&first);
    assert!(still.status.success(), "the old certificate is still served: {}", text(&still));
    let log = served.log();
    assert!(log.contains("tls.cert:") && log.contains("holds no certificate"), "{log}");

    // A key that others may read: refused the same way, with ssh's words.
    second.issue_with_key_mode(&setup.path("cert.pem"), &setup.path("key.pem"), 0o644);
    served.wait_for_log("UNPROTECTED PRIVATE KEY FILE", 1);
    assert!(setup.list(&first).status.success(), "the old certificate is still served");

    // Fixed: the change is seen without a signal.
    std::fs::set_permissions(setup.path("key.pem"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    setup.wait_until_trusted_by(&second, &served, "after the files changed");
    assert!(served.log().contains("the certificate or key file changed"), "{}", served.log());
    assert!(served.is_running());
}

#[test]
fn plain_http_on_loopback_survives_sighup() {
    let setup = Setup::new();
    setup.server_config("127.0.0.1", "");
    let mut served = setup.serve();
    served.hangup();
    served.wait_for_log("SIGHUP: reloading", 1);
    served.hangup();
    served.wait_for_log("SIGHUP: reloading", 2);
    assert!(served.is_running(), "SIGHUP ended the server:\n{}", served.log());
    let url = format!("http://127.0.0.1:{}", setup.port);
    let output = setup.run(&["list", "--server", &url]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn plain_http_off_loopback_is_refused_by_config_check_and_by_serve_naming_listen_and_the_fix() {
    let setup = Setup::new();
    setup.server_config("0.0.0.0", "");
    let check = setup.run(&["config", "check", "--server-config", "vesemir-server.toml"]);
    let said = text(&check);
    assert_eq!(check.status.code(), Some(2), "{said}");
    let expected = format!("listen: is 0.0.0.0:{}, not a loopback address, and [tls] is not set", setup.port);
    assert!(said.contains(&expected) && said.contains("allow_plain_http = true"), "{said}");

    let serve = setup.run(&["serve"]);
    let said = text(&serve);
    assert_ne!(serve.status.code(), Some(0), "{said}");
    assert!(said.contains(&expected), "{said}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", setup.port)).is_err(), "nothing listens");

    // Said explicitly, it is allowed.
    setup.server_config("0.0.0.0", "allow_plain_http = true");
    let check = setup.run(&["config", "check", "--server-config", "vesemir-server.toml"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

#[test]
fn key_files_others_may_read_are_refused_by_config_check_and_serve_with_file_mode_and_fix() {
    let setup = Setup::new();
    let ca = Ca::new(setup.dir.path(), "a");
    ca.issue(&setup.path("cert.pem"), &setup.path("key.pem"));
    std::fs::set_permissions(setup.path("key.pem"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    setup.server_config("127.0.0.1", &setup.tls_section("5s"));
    let key = setup.path("key.pem").display().to_string();
    let expected = format!(
        "tls.key: UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {key} are too open (any user of the machine may use it); a private key must not be accessible by others: run `chmod 600 {key}`"
    );

    let check = setup.run(&["config", "check", "--server-config", "vesemir-server.toml"]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(text(&check).contains(&expected), "{}", text(&check));
    let serve = setup.run(&["serve"]);
    assert_ne!(serve.status.code(), Some(0), "{}", text(&serve));
    assert!(text(&serve).contains(&expected), "{}", text(&serve));

    // The SSH key of vesemir.toml: refused by config check and at serve's start.
    std::fs::set_permissions(setup.path("key.pem"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(setup.path("id_ed25519"), std::fs::Permissions::from_mode(0o604))
        .expect("chmod");
    let ssh_key = setup.path("id_ed25519").display().to_string();
    let expected =
        format!("ssh.key: UNPROTECTED PRIVATE KEY FILE: permissions 0604 for {ssh_key} are too open");
    let check = setup.run(&["config", "check"]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(
        text(&check).contains(&expected) && text(&check).contains(&format!("chmod 600 {ssh_key}")),
        "{}",
        text(&check)
    );
    let serve = setup.run(&["serve"]);
    assert_ne!(serve.status.code(), Some(0), "{}", text(&serve));
    assert!(text(&serve).contains(&expected), "{}", text(&serve));
}
