//! Host locks on a real sshd beyond the conformance suite: several deployers (each its own
//! executor, so its own SSH session) racing for one host, a lock directory that cannot be
//! written, a lock file that is not a holder.

mod common;

use std::time::Duration;

use vesemir_core::lock::{LockHolder, LockOutcome};
use vesemir_core::ports::Executor;
use vesemir_core::PortError;
use vesemir_testkit::conformance::executor::{lock_claim, lock_holder};

use common::Lab;

const RACERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claimants_exactly_one_gets_the_lock_and_one_takes_over_a_stale_one() {
    let lab = Lab::start();
    let dir = lab.sshd.dir().join("lock").display().to_string();
    let host = lab.host();

    // A free host: exactly one Acquired, every other claimant is told who won.
    let (holders, outcomes) = race(&lab, &dir, "race", Duration::from_secs(3600)).await;
    let winners: Vec<usize> = (0..RACERS).filter(|&i| outcomes[i] == LockOutcome::Acquired).collect();
    assert_eq!(winners.len(), 1, "exactly one claimant must win: {outcomes:#?}");
    let winner = holders[winners[0]].clone();
    for outcome in outcomes.iter().filter(|o| **o != LockOutcome::Acquired) {
        match outcome {
            LockOutcome::Held(held) => assert_eq!(held.holder, winner),
            other => panic!("a loser must see the winner's lock, got {other:?}"),
        }
    }

    // The winner's lock goes stale: its file was last touched an hour ago (the host is this
    // machine). Of the claimants racing for it, exactly one takes it over; the others, with a
    // `stale_after` far longer than the race, see the new holder.
    let file = std::fs::File::options().append(true).open(format!("{dir}/holder.json")).expect("lock file");
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)).expect("backdate");
    drop(file);
    let (holders, outcomes) = race(&lab, &dir, "stale", Duration::from_secs(600)).await;
    let takers: Vec<usize> =
        (0..RACERS).filter(|&i| matches!(outcomes[i], LockOutcome::TookOverStale { .. })).collect();
    assert_eq!(takers.len(), 1, "exactly one claimant must take over the stale lock: {outcomes:#?}");
    match &outcomes[takers[0]] {
        LockOutcome::TookOverStale { previous } => assert_eq!(previous.holder, winner),
        _ => unreachable!("filtered above"),
    }
    let taker = &holders[takers[0]];
    for outcome in outcomes.iter().filter(|o| !matches!(o, LockOutcome::TookOverStale { .. })) {
        match outcome {
            LockOutcome::Held(held) => assert_eq!(&held.holder, taker),
            other => panic!("a loser must see the new holder, got {other:?}"),
        }
    }
    let reader = lab.executor().with_lock_dir(&*dir);
    let read = reader.read_lock(&host).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(read.map(|held| held.holder).as_ref(), Some(taker));
    // Nothing is left behind but the lock itself.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("lock dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["holder.json"]);
}

/// Every racer claims `host` at once, each on its own tokio task and SSH session, with a
/// holder named `{prefix}-{i}`; gives the holders and the outcomes in racer order.
async fn race(
    lab: &Lab,
    dir: &str,
    prefix: &str,
    stale_after: Duration,
) -> (Vec<LockHolder>, Vec<LockOutcome>) {
    let holders: Vec<LockHolder> = (0..RACERS).map(|i| lock_holder(&format!("{prefix}-{i}"))).collect();
    let tasks: Vec<_> = holders
        .iter()
        .map(|holder| {
            let executor = lab.executor().with_lock_dir(dir);
            let (host, claim) = (lab.host(), lock_claim(holder, stale_after));
            tokio::spawn(async move { executor.acquire_lock(&host, &claim).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let outcome = task.await.expect("claim task");
        outcomes.push(outcome.unwrap_or_else(|e| panic!("claim: {}", e.chain())));
    }
    (holders, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_directory_that_cannot_be_written_is_refused_naming_it() {
    let lab = Lab::start();
    let executor = lab.executor().with_lock_dir("/proc/vesemir-lock");
    let error = executor
        .acquire_lock(&lab.host(), &lock_claim(&lock_holder("1"), Duration::from_secs(60)))
        .await
        .expect_err("/proc cannot hold a lock");
    assert!(matches!(error, PortError::Rejected { .. }), "{}", error.chain());
    assert!(error.to_string().contains("/proc/vesemir-lock"), "{}", error.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_file_that_is_not_a_holder_is_still_reported_and_breakable() {
    let lab = Lab::start();
    let dir = lab.sshd.dir().join("lock");
    std::fs::create_dir_all(&dir).expect("lock dir");
    std::fs::write(dir.join("holder.json"), "locked by bob for the migration\n").expect("write");
    let executor = lab.executor().with_lock_dir(dir.display().to_string());
    let host = lab.host();
    match executor.acquire_lock(&host, &lock_claim(&lock_holder("1"), Duration::from_secs(3600))).await {
        Ok(LockOutcome::Held(held)) => {
            assert_eq!(held.holder.deployment, "unknown");
            assert!(held.holder.machine.contains("locked by bob"), "{held}");
        }
        other => panic!("a hand-written lock must hold the host, got {other:?}"),
    }
    let broken = executor.break_lock(&host).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(broken.is_some_and(|held| held.holder.machine.contains("locked by bob")));
    assert!(!dir.join("holder.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_lock_directory_is_in_the_ssh_users_home() {
    let lab = Lab::start();
    let executor = lab.executor();
    assert_eq!(executor.lock_dir(), None);
    // Read only: the test must not leave a lock in the home of whoever runs it.
    executor.read_lock(&lab.host()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
}
