//! Host key verification against known_hosts on a real sshd: strict, hashed entries, changed
//! keys, accept-new, off.

mod common;

use vesemir_core::ports::Executor;
use vesemir_core::PortError;
use vesemir_ssh::{HostKeyMode, SshExecutor};
use vesemir_testkit::sshd::hash_known_hosts;

use common::{command, run, Lab};

fn unauthorized_reason(error: PortError) -> String {
    match error {
        PortError::Unauthorized { reason, .. } => reason,
        other => panic!("expected Unauthorized, got {}", other.chain()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_an_unknown_host_key() {
    let lab = Lab::start();
    std::fs::write(&lab.known_hosts, "").expect("empty known_hosts");
    let executor = lab.executor();
    let error = executor.connect(&lab.host()).await.expect_err("unknown key must be refused");
    let reason = unauthorized_reason(error);
    assert!(reason.contains("is not in"), "{reason}");
    assert!(reason.contains("SHA256:"), "the fingerprint to verify: {reason}");
    assert!(reason.contains("accept-new"), "says what to do: {reason}");
    assert_eq!(std::fs::read_to_string(&lab.known_hosts).expect("read"), "", "strict mode must not write");
    assert!(!lab.sshd.log().contains("Accepted publickey"), "must not log in to an unverified host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_when_known_hosts_is_missing() {
    let lab = Lab::start();
    std::fs::remove_file(&lab.known_hosts).expect("remove");
    let error = lab.executor().connect(&lab.host()).await.expect_err("refused");
    assert!(unauthorized_reason(error).contains("is not in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entries_are_accepted() {
    let lab = Lab::start();
    hash_known_hosts(&lab.known_hosts);
    let hashed = std::fs::read_to_string(&lab.known_hosts).expect("read");
    assert!(hashed.starts_with("|1|") && !hashed.contains("127.0.0.1"), "not hashed: {hashed}");
    let (code, _) = run(&lab.executor(), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_fails_the_host_saying_so() {
    let lab = Lab::start();
    std::fs::write(&lab.known_hosts, lab.sshd.wrong_known_hosts_line()).expect("write");
    for mode in [HostKeyMode::Strict, HostKeyMode::AcceptNew] {
        let mut config = lab.config();
        config.host_key_mode = mode;
        let error = SshExecutor::new(config).connect(&lab.host()).await.expect_err("changed key");
        let reason = unauthorized_reason(error);
        assert!(reason.contains("HOST KEY CHANGED"), "{mode}: {reason}");
        assert!(reason.contains("ssh-keygen -R"), "says how to fix: {reason}");
    }
    assert_eq!(
        std::fs::read_to_string(&lab.known_hosts).expect("read"),
        lab.sshd.wrong_known_hosts_line(),
        "accept-new must not replace a changed key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_trusts_on_first_use_and_appends_the_key() {
    let lab = Lab::start();
    let other =
        "[10.9.9.9]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n";
    std::fs::write(&lab.known_hosts, other).expect("write");
    let mut config = lab.config();
    config.host_key_mode = HostKeyMode::AcceptNew;
    let (code, _) = run(&SshExecutor::new(config), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
    let file = std::fs::read_to_string(&lab.known_hosts).expect("read");
    assert!(file.starts_with(other), "existing entries kept: {file}");
    let expected = lab.sshd.known_hosts_line();
    let key = expected.split_whitespace().nth(2).expect("key");
    let added: Vec<&str> = file.lines().skip(1).collect();
    assert_eq!(added.len(), 1, "{file}");
    assert!(added[0].starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 {key}", lab.sshd.port())), "{file}");
    // Now a strict executor trusts it.
    let (code, _) = run(&lab.executor(), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_connects_without_checking() {
    let lab = Lab::start();
    std::fs::write(&lab.known_hosts, lab.sshd.wrong_known_hosts_line()).expect("write");
    let mut config = lab.config();
    config.host_key_mode = HostKeyMode::Off;
    let (code, _) = run(&SshExecutor::new(config), &lab.host(), &command("true")).await;
    assert_eq!(code, 0);
}
