//! The directory adapter against a real OpenLDAP slapd (Debian's `slapd`), started by the test:
//! sign-in, groups, filter escaping, errors; and over TLS (a CA made by the test): LDAPS and
//! StartTLS with the CA file, a certificate from another CA refused, StartTLS against a
//! directory without TLS refused, never falling back to plain.

use std::time::{Duration, Instant};

use vesemir_ldap::{Directory, DirectoryConfig, DirectoryError, Secret, Transport};
use vesemir_testkit::slapd::{Slapd, SlapdUser};

fn people() -> Vec<SlapdUser> {
    vec![
        SlapdUser::new("alice", "alice-pw", &["team-a-deployers", "everyone"]),
        SlapdUser::new("bob", "bob-pw", &["team-b-readers", "everyone"]),
        SlapdUser::new("carol", "carol-pw", &[]),
        // A name with filter syntax in it: it must match itself only.
        SlapdUser::new("star*(x)", "star-pw", &["everyone"]),
    ]
}

fn config(slapd: &Slapd) -> DirectoryConfig {
    DirectoryConfig {
        bind_dn: Some(Slapd::SERVICE_DN.to_owned()),
        bind_password: Some(Secret::new(Slapd::SERVICE_PASSWORD)),
        timeout: Duration::from_secs(3),
        ..DirectoryConfig::new(&slapd.url(), Slapd::PEOPLE, Slapd::GROUPS)
    }
}

fn directory(slapd: &Slapd) -> Directory {
    Directory::new(config(slapd)).expect("a valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_the_right_password_and_gets_their_groups() {
    let slapd = Slapd::start(&people());
    let directory = directory(&slapd);
    let alice = directory.authenticate("alice", &Secret::new("alice-pw")).await.expect("alice signs in");
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.dn, Slapd::user_dn("alice"));
    assert_eq!(alice.groups, vec!["everyone".to_owned(), "team-a-deployers".to_owned()]);

    let carol = directory.authenticate("carol", &Secret::new("carol-pw")).await.expect("carol signs in");
    assert!(carol.groups.is_empty(), "carol is in no group: {:?}", carol.groups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_empty_password_are_the_same_error() {
    let slapd = Slapd::start(&people());
    let directory = directory(&slapd);
    let wrong = directory.authenticate("alice", &Secret::new("bob-pw")).await.expect_err("wrong password");
    let unknown = directory.authenticate("mallory", &Secret::new("alice-pw")).await.expect_err("unknown");
    // LDAP answers an empty password with a successful unauthenticated bind: never a sign-in.
    let empty = directory.authenticate("alice", &Secret::new("")).await.expect_err("empty password");
    for error in [&wrong, &unknown, &empty] {
        assert!(matches!(error, DirectoryError::InvalidCredentials), "{error:?}");
        assert_eq!(error.to_string(), "wrong username or password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_syntax_in_a_username_is_data() {
    let slapd = Slapd::start(&people());
    let directory = directory(&slapd);
    let star = directory.authenticate("star*(x)", &Secret::new("star-pw")).await.expect("the literal name");
    assert_eq!(star.dn, Slapd::user_dn("star*(x)"));
    // Unescaped, `st*` and `*` would match that entry (or every entry) and bind as it.
    for pattern in ["st*", "*", "star*", "alice)(uid=*", "*)(|(uid=*"] {
        let error = directory.authenticate(pattern, &Secret::new("star-pw")).await.expect_err(pattern);
        assert!(matches!(error, DirectoryError::InvalidCredentials), "{pattern}: {error:?}");
        assert!(!directory.lookup(pattern).await.expect("the directory answers"), "{pattern}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_says_whether_a_person_exists() {
    let slapd = Slapd::start(&people());
    let directory = directory(&slapd);
    assert!(directory.lookup("alice").await.expect("answers"));
    assert!(directory.lookup("star*(x)").await.expect("answers"));
    assert!(!directory.lookup("mallory").await.expect("answers"));
    assert!(!directory.lookup("").await.expect("answers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_account_is_the_operators_problem_not_a_wrong_password() {
    let slapd = Slapd::start(&people());
    let config = DirectoryConfig { bind_password: Some(Secret::new("not-the-service-pw")), ..config(&slapd) };
    let directory = Directory::new(config).expect("valid");
    let error = directory.authenticate("alice", &Secret::new("alice-pw")).await.expect_err("refused");
    assert!(matches!(error, DirectoryError::Refused { code: 49, .. }), "{error:?}");
    let error = directory.lookup("alice").await.expect_err("refused");
    assert!(matches!(error, DirectoryError::Refused { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_down_says_so_promptly() {
    let mut slapd = Slapd::start(&people());
    let directory = directory(&slapd);
    directory.authenticate("alice", &Secret::new("alice-pw")).await.expect("up first");
    slapd.stop();
    let started = Instant::now();
    let error = directory.authenticate("alice", &Secret::new("alice-pw")).await.expect_err("down");
    assert!(matches!(error, DirectoryError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().starts_with("the directory cannot be reached"), "{error}");
    let error = directory.lookup("alice").await.expect_err("down");
    assert!(matches!(error, DirectoryError::Unavailable { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// `config(slapd)` over `url`, StartTLS as given, trusting `ca_file`.
fn tls_config(slapd: &Slapd, url: String, starttls: bool, ca_file: std::path::PathBuf) -> DirectoryConfig {
    DirectoryConfig { url, starttls, ca_file: Some(ca_file), ..config(slapd) }
}

/// Panics unless the directory's `stats` log shows connections (`ACCEPT`) but no bind and no
/// search: nothing a client sends once the connection is set up reached it.
fn assert_connected_but_nothing_sent(slapd: &Slapd) {
    let log = slapd.server.log();
    assert!(log.contains(" ACCEPT from "), "no connection reached the directory:\n{log}");
    assert!(!log.contains(" BIND ") && !log.contains(" SRCH "), "sent without TLS:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_over_ldaps_and_over_starttls_with_the_ca_file() {
    let slapd = tokio::task::spawn_blocking(|| Slapd::start_tls(&people())).await.expect("starts");
    for (url, starttls, transport) in
        [(slapd.ldaps_url(), false, Transport::Ldaps), (slapd.url(), true, Transport::StartTls)]
    {
        let directory =
            Directory::new(tls_config(&slapd, url.clone(), starttls, slapd.ca_file())).expect("valid");
        assert_eq!(directory.transport(), transport);
        let alice = directory.authenticate("alice", &Secret::new("alice-pw")).await.unwrap_or_else(|e| {
            panic!("alice signs in over {transport:?} ({url}): {e}\n{}", slapd.server.log())
        });
        assert_eq!(alice.groups, vec!["everyone".to_owned(), "team-a-deployers".to_owned()]);
        let wrong =
            directory.authenticate("alice", &Secret::new("bob-pw")).await.expect_err("wrong password");
        assert!(matches!(wrong, DirectoryError::InvalidCredentials), "{transport:?}: {wrong:?}");
        assert!(directory.lookup("bob").await.expect("answers"), "{transport:?}");
    }
    // slapd's `stats` log: every bind (service account and people) came over TLS.
    let log = slapd.server.log();
    let binds: Vec<&str> = log.lines().filter(|l| l.contains("mech=SIMPLE")).collect();
    assert!(binds.len() >= 4, "{log}");
    assert!(binds.iter().all(|l| !l.ends_with(" ssf=0")), "a bind without TLS:\n{log}");
    assert!(log.contains("TLS established"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_no_configured_ca_signed_is_refused_before_anything_is_sent() {
    let slapd = tokio::task::spawn_blocking(|| Slapd::start_tls(&people())).await.expect("starts");
    let unrelated = slapd.write_unrelated_ca();
    for (url, starttls) in [(slapd.ldaps_url(), false), (slapd.url(), true)] {
        let directory =
            Directory::new(tls_config(&slapd, url.clone(), starttls, unrelated.clone())).expect("valid");
        let error = directory.authenticate("alice", &Secret::new("alice-pw")).await.expect_err("refused");
        match &error {
            DirectoryError::Unavailable { reason } => assert!(reason.contains("TLS"), "{url}: {reason}"),
            other => panic!("{url} starttls={starttls}: {other:?}"),
        }
        let error = directory.lookup("alice").await.expect_err("refused");
        assert!(matches!(error, DirectoryError::Unavailable { .. }), "{url}: {error:?}");
    }
    // Neither the service account's password nor alice's reached the directory.
    assert_connected_but_nothing_sent(&slapd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_against_a_directory_without_tls_is_refused_not_sent_in_plain() {
    let slapd = tokio::task::spawn_blocking(|| Slapd::start(&people())).await.expect("starts");
    let ca_file = slapd.write_unrelated_ca();
    let directory = Directory::new(tls_config(&slapd, slapd.url(), true, ca_file)).expect("valid");
    let error = directory.authenticate("alice", &Secret::new("alice-pw")).await.expect_err("refused");
    match &error {
        DirectoryError::Refused { message, .. } => assert!(message.contains("StartTLS"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("StartTLS"), "{error}");
    // StartTLS was asked (its extended operation), then nothing: no fall back to plain.
    assert!(slapd.server.log().contains("EXT oid=1.3.6.1.4.1.1466.20037"), "{}", slapd.server.log());
    assert_connected_but_nothing_sent(&slapd);
}
