//! The directory adapter against a real OpenLDAP slapd (Debian's `slapd`), started by the test.

use std::time::{Duration, Instant};

use vesemir_ldap::{Directory, DirectoryConfig, DirectoryError, Secret};
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
