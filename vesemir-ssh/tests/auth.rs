//! Authentication on a real sshd: ed25519 and RSA key files, an encrypted key, ssh-agent; wrong
//! credentials are refused at once, unreachable ports are retried then reported unreachable.

mod common;

use std::time::{Duration, Instant};

use vesemir_core::ports::Executor;
use vesemir_core::PortError;
use vesemir_ssh::{Passphrase, SshAuth, SshExecutor};
use vesemir_testkit::process::free_port;
use vesemir_testkit::sshd::{SshAgent, KEY_PASSPHRASE};

use common::{command, run, Lab};

fn with_auth(lab: &Lab, auth: SshAuth) -> SshExecutor {
    let mut config = lab.config();
    config.auth = auth;
    SshExecutor::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_and_rsa_key_files_log_in() {
    let lab = Lab::start();
    for key in [lab.sshd.ed25519_key(), lab.sshd.rsa_key()] {
        let executor = with_auth(&lab, SshAuth::KeyFile { path: key.clone(), passphrase: None });
        let (code, lines) = run(&executor, &lab.host(), &command("id -un")).await;
        assert_eq!(code, 0, "{}", key.display());
        assert_eq!(lines.first().map(|l| l.text.as_str()), Some(lab.sshd.user()));
    }
    assert!(lab.sshd.log().contains("Accepted publickey for") && lab.sshd.log().contains("RSA"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_logs_in_with_its_passphrase() {
    let lab = Lab::start();
    let auth = SshAuth::KeyFile {
        path: lab.sshd.encrypted_key(),
        passphrase: Some(Passphrase::new(KEY_PASSPHRASE)),
    };
    let (code, _) = run(&with_auth(&lab, auth), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_is_unauthorized_and_never_shown() {
    let lab = Lab::start();
    let secret = "not-the-passphrase-4711";
    let auth = SshAuth::KeyFile { path: lab.sshd.encrypted_key(), passphrase: Some(Passphrase::new(secret)) };
    let executor = with_auth(&lab, auth);
    let error = executor.connect(&lab.host()).await.expect_err("wrong passphrase");
    assert!(matches!(error, PortError::Unauthorized { .. }), "{}", error.chain());
    let shown = format!("{} {error:?} {executor:?}", error.chain());
    assert!(!shown.contains(secret), "the passphrase leaked: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_unauthorized_and_not_retried() {
    let lab = Lab::start();
    let mut config = lab.config();
    config.auth = SshAuth::KeyFile { path: lab.sshd.unauthorized_key(), passphrase: None };
    config.connect_retries = 3;
    config.retry_backoff = Duration::from_millis(300);
    let executor = SshExecutor::new(config);
    let started = Instant::now();
    let error = executor.connect(&lab.host()).await.expect_err("wrong key");
    assert!(started.elapsed() < Duration::from_millis(300), "waited for a retry");
    match &error {
        PortError::Unauthorized { reason, .. } => assert!(reason.contains("authorized_keys"), "{reason}"),
        other => panic!("expected Unauthorized, got {}", other.chain()),
    }
    // sshd logs asynchronously; give it a moment, then count logins tried (the harness's own
    // readiness probe connects too, but never gets to authentication).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = lab.sshd.log().matches("Failed publickey").count();
    assert_eq!(attempts, 1, "one login attempt, no retry:\n{}", lab.sshd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_file_is_unauthorized() {
    let lab = Lab::start();
    let auth = SshAuth::KeyFile { path: lab.sshd.dir().join("no-such-key"), passphrase: None };
    let error = with_auth(&lab, auth).connect(&lab.host()).await.expect_err("missing key");
    assert!(matches!(error, PortError::Unauthorized { .. }), "{}", error.chain());
    assert!(error.to_string().contains("no-such-key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_may_read_is_refused_like_ssh_does_before_any_login() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::start();
    let key = lab.sshd.dir().join("id_ed25519_open");
    std::fs::copy(lab.sshd.ed25519_key(), &key).expect("copy the authorized key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let auth = SshAuth::KeyFile { path: key.clone(), passphrase: None };
    let error = with_auth(&lab, auth).connect(&lab.host()).await.expect_err("too open");
    match &error {
        PortError::Unauthorized { reason, .. } => assert!(
            reason.contains(&format!("UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {}", key.display()))
                && reason.contains(&format!("run `chmod 600 {}`", key.display())),
            "{reason}"
        ),
        other => panic!("expected Unauthorized, got {}", other.chain()),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lab.sshd.log().matches("publickey").count(), 0, "no login tried:\n{}", lab.sshd.log());
    // The same key, 0600: it logs in.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let auth = SshAuth::KeyFile { path: key, passphrase: None };
    let (code, _) = run(&with_auth(&lab, auth), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_agent_logs_in() {
    let lab = Lab::start();
    let agent = SshAgent::start(&lab.sshd.ed25519_key());
    let auth = SshAuth::Agent { socket: Some(agent.socket().to_path_buf()) };
    let (code, _) = run(&with_auth(&lab, auth), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_the_right_key_is_unauthorized() {
    let lab = Lab::start();
    let agent = SshAgent::start(&lab.sshd.unauthorized_key());
    let auth = SshAuth::Agent { socket: Some(agent.socket().to_path_buf()) };
    let error = with_auth(&lab, auth).connect(&lab.host()).await.expect_err("refused");
    assert!(matches!(error, PortError::Unauthorized { .. }), "{}", error.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_port_is_retried_with_backoff_then_unreachable() {
    let lab = Lab::start();
    let mut config = lab.config();
    config.port = free_port();
    config.connect_retries = 2;
    config.retry_backoff = Duration::from_millis(200);
    let executor = SshExecutor::new(config);
    let started = Instant::now();
    let error = executor.connect(&lab.host()).await.expect_err("nothing listens");
    let took = started.elapsed();
    assert!(error.is_unreachable(), "{}", error.chain());
    let text = error.chain();
    assert!(text.contains("3 attempt(s)") && text.contains("refused"), "{text}");
    // Backoff 200 ms then 400 ms, each shortened by up to a fifth at random (jitter).
    assert!(took >= Duration::from_millis(480), "retried too fast: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_as_unreachable() {
    // Accepts TCP but never speaks SSH: the handshake must give up at the connect timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let lab = Lab::start();
    let mut config = lab.config();
    config.port = port;
    config.connect_timeout = Duration::from_millis(500);
    config.connect_retries = 0;
    let started = Instant::now();
    let error = SshExecutor::new(config).connect(&lab.host()).await.expect_err("silent");
    assert!(error.is_unreachable(), "{}", error.chain());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_host_is_unreachable_within_about_one_connect_timeout_retries_included() {
    // Accepts TCP but never sends the SSH banner. Every attempt waits for the banner, so the
    // whole connect (every attempt and pause) must stay within the configured connect timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let lab = Lab::start();
    let mut config = lab.config();
    config.port = port;
    config.connect_timeout = Duration::from_secs(1);
    config.connect_retries = 4;
    config.retry_backoff = Duration::from_millis(50);
    let executor = SshExecutor::new(config);
    for through in ["connect", "a step"] {
        let started = Instant::now();
        let error = if through == "connect" {
            executor.connect(&lab.host()).await.expect_err("no banner")
        } else {
            let (sink, _receiver) = vesemir_core::ports::OutputSink::channel();
            executor.run(&lab.host(), &common::command("true"), sink).await.expect_err("no banner")
        };
        let took = started.elapsed();
        println!("hung host through {through}: unreachable after {took:?} (connect timeout 1s, 4 retries)");
        assert!(error.is_unreachable(), "{through}: {}", error.chain());
        assert!(error.chain().contains("within 1s"), "{}", error.chain());
        assert!(took < Duration::from_secs(3), "{through}: the connect took {took:?}");
    }
    drop(listener);
}

/// A copy of `key` in a temp dir, which the test may then remove or replace.
fn copy_of(key: &std::path::Path, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let copy = dir.path().join("id");
    std::fs::copy(key, &copy).expect("copies the key");
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_key_logs_in_without_its_file_and_a_failed_reload_keeps_it() {
    let lab = Lab::start();
    let keys = [
        (lab.sshd.ed25519_key(), None),
        (lab.sshd.rsa_key(), None),
        (lab.sshd.encrypted_key(), Some(Passphrase::new(KEY_PASSPHRASE))),
    ];
    for (key, passphrase) in keys {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = copy_of(&key, &dir);
        let executor = with_auth(&lab, SshAuth::KeyFile { path: path.clone(), passphrase });
        executor.load_key().expect("the key loads");
        std::fs::remove_file(&path).expect("removes the key file");
        let (code, lines) = run(&executor, &lab.host(), &command("id -un")).await;
        assert_eq!(code, 0, "{}: {lines:?}", key.display());
        // A reload that cannot read the file fails and keeps the key read before.
        let error = executor.load_key().expect_err("the file is gone");
        assert!(error.chain().contains("cannot read key file"), "{}", error.chain());
        executor.close(&lab.host()).await;
        let (code, _) = run(&executor, &lab.host(), &command("true")).await;
        assert_eq!(code, 0, "{}: a new session with the key loaded before", key.display());
        assert!(!format!("{executor:?}").contains("PRIVATE KEY"), "the key is not in Debug");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_a_rotated_key() {
    let lab = Lab::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // The file holds a key sshd does not accept (the wrong one), then the right one.
    let path = copy_of(&lab.sshd.ed25519_key(), &dir);
    let wrong = dir.path().join("wrong");
    vesemir_testkit::sshd::generate_key(&wrong, "ed25519", "");
    std::fs::copy(&wrong, &path).expect("the wrong key in place");
    let executor = with_auth(&lab, SshAuth::KeyFile { path: path.clone(), passphrase: None });
    executor.load_key().expect("the key loads");
    let refused = executor.connect(&lab.host()).await.expect_err("not authorized");
    assert!(matches!(refused, PortError::Unauthorized { .. }), "{}", refused.chain());
    std::fs::copy(lab.sshd.ed25519_key(), &path).expect("the right key in place");
    let still = executor.connect(&lab.host()).await.expect_err("the file is read only by load_key");
    assert!(matches!(still, PortError::Unauthorized { .. }), "{}", still.chain());
    executor.load_key().expect("reloads");
    let (code, _) = run(&executor, &lab.host(), &command("true")).await;
    assert_eq!(code, 0, "the rotated key logs in after the reload");
}
