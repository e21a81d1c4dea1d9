//! The `Executor` conformance suite: what every executor (the SSH adapter, the core's fake)
//! must do, checked through `&dyn Executor` against a fixture that says which hosts exist.
//!
//! The scripts are fixed so a fake can be told what to do with them: a fake executor must make
//! [`FAILING_SCRIPT`] exit with [`FAILING_CODE`] printing on stderr, and [`HANGING_SCRIPT`] run
//! until its timeout, on [`ExecutorFixture::host`].
//!
//! The host lock checks ([`run_locks`], part of [`run_all`]) wait a few seconds of real time
//! to make a lock stale: the SSH adapter judges staleness to the second by the host's clock.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use vesemir_core::lock::{LockClaim, LockHolder, LockOutcome, RefreshOutcome, ReleaseOutcome};
use vesemir_core::name::EnvVarName;
use vesemir_core::ports::{Executor, FileUpload, OutputSink, OutputStream, RemoteCommand};
use vesemir_core::{Host, PortError};

/// A command that succeeds.
pub const OK_SCRIPT: &str = "true";
/// A command that prints a line on stderr and exits with [`FAILING_CODE`].
pub const FAILING_SCRIPT: &str = "echo vesemir-conformance-failure >&2; exit 3";
/// The exit code of [`FAILING_SCRIPT`].
pub const FAILING_CODE: i32 = 3;
/// A command that runs far longer than the suite's timeouts.
pub const HANGING_SCRIPT: &str = "sleep 30";

/// What exists for the suite to use.
#[derive(Debug, Clone)]
pub struct ExecutorFixture {
    /// A host that accepts the executor's credentials and runs commands.
    pub host: Host,
    /// A host nothing answers on.
    pub unreachable: Host,
    /// A host that answers but refuses the executor (its key is not trusted or its
    /// credentials are refused).
    pub refused: Host,
    /// A local file to upload.
    pub upload_source: PathBuf,
    /// Where on `host` it may be written.
    pub upload_destination: String,
    /// A local directory that the hostile lock holder values would create files in if a
    /// shell ever ran them (the SSH suite's host is this machine). Must exist.
    pub canary_dir: PathBuf,
}

/// A command with `script`, a 30 s timeout and a 64 KiB output cap.
pub fn command(script: &str) -> RemoteCommand {
    RemoteCommand {
        script: script.to_owned(),
        env: Vec::new(),
        timeout: Duration::from_secs(30),
        output_limit: 64 * 1024,
    }
}

/// Runs every check of the suite.
pub async fn run_all(executor: &dyn Executor, fixture: &ExecutorFixture) {
    connect_is_idempotent_and_close_is_harmless(executor, fixture).await;
    successful_command_exits_zero(executor, fixture).await;
    failing_command_is_ok_with_its_code_and_stderr(executor, fixture).await;
    hanging_command_times_out(executor, fixture).await;
    unreachable_host_is_unreachable(executor, fixture).await;
    refused_host_is_unauthorized(executor, fixture).await;
    invalid_env_name_is_rejected(executor, fixture).await;
    upload_succeeds(executor, fixture).await;
    one_host_failing_leaves_others_working(executor, fixture).await;
    run_locks(executor, fixture).await;
}

/// Runs every host lock check, on [`ExecutorFixture::host`] (whose lock they break first).
pub async fn run_locks(executor: &dyn Executor, fixture: &ExecutorFixture) {
    locks_contend_and_release(executor, fixture).await;
    stale_lock_is_taken_over(executor, fixture).await;
    refreshed_lock_is_not_stale(executor, fixture).await;
    hostile_holder_values_stay_literal(executor, fixture).await;
    locks_on_an_unreachable_host_are_unreachable(executor, fixture).await;
}

/// A holder of `deployment` that took its lock now, by this machine's clock.
pub fn lock_holder(deployment: &str) -> LockHolder {
    let since_unix =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    LockHolder {
        deployment: deployment.to_owned(),
        requested_by: "alice".to_owned(),
        application: "shop".to_owned(),
        environment: "production".to_owned(),
        machine: LockHolder::machine_of("ci-runner-7", std::process::id()),
        since_unix,
    }
}

/// A claim by `holder` that takes over locks idle for longer than `stale_after`.
pub fn lock_claim(holder: &LockHolder, stale_after: Duration) -> LockClaim {
    LockClaim { holder: holder.clone(), stale_after }
}

const HOUR: Duration = Duration::from_secs(3600);

async fn clear_lock(executor: &dyn Executor, host: &Host) {
    executor.break_lock(host).await.unwrap_or_else(|e| panic!("break the lock of {host}: {}", e.chain()));
}

/// The first claimant gets the lock; a second sees it held, naming the first; the holder
/// claiming again gets it as already ours; only the holder can release or refresh it; after
/// a release the second gets it; breaking says who held it.
pub async fn locks_contend_and_release(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.host;
    clear_lock(executor, host).await;
    let (first, second) = (lock_holder("1"), lock_holder("2"));
    let read = executor.read_lock(host).await.unwrap_or_else(|e| panic!("read: {}", e.chain()));
    assert_eq!(read, None, "a broken lock must be gone");

    let outcome = executor.acquire_lock(host, &lock_claim(&first, HOUR)).await;
    assert_eq!(outcome.ok(), Some(LockOutcome::Acquired), "the first claim of a free host");
    let read = executor.read_lock(host).await.unwrap_or_else(|e| panic!("read: {}", e.chain()));
    assert_eq!(read.map(|held| held.holder), Some(first.clone()));

    match executor.acquire_lock(host, &lock_claim(&second, HOUR)).await {
        Ok(LockOutcome::Held(held)) => {
            assert_eq!(held.holder, first, "the second claimant must be told who holds it");
            assert!(held.held_for < Duration::from_secs(60), "held for {:?}", held.held_for);
            assert!(held.idle_for < Duration::from_secs(60), "idle for {:?}", held.idle_for);
        }
        other => panic!("a second claimant must see the lock held, got {other:?}"),
    }
    let again = executor.acquire_lock(host, &lock_claim(&first, HOUR)).await;
    assert_eq!(again.ok(), Some(LockOutcome::AlreadyOurs), "the holder claiming again");

    match executor.release_lock(host, &second).await {
        Ok(ReleaseOutcome::HeldByOther(held)) => assert_eq!(held.holder, first),
        other => panic!("releasing someone else's lock must leave it alone, got {other:?}"),
    }
    match executor.refresh_lock(host, &second).await {
        Ok(RefreshOutcome::Lost { now_held_by: Some(held) }) => assert_eq!(held.holder, first),
        other => panic!("refreshing someone else's lock must say it is not ours, got {other:?}"),
    }
    let refreshed = executor.refresh_lock(host, &first).await;
    assert_eq!(refreshed.ok(), Some(RefreshOutcome::Refreshed));
    let read = executor.read_lock(host).await.unwrap_or_else(|e| panic!("read: {}", e.chain()));
    assert_eq!(read.map(|held| held.holder), Some(first.clone()), "still the first's after all that");

    assert_eq!(executor.release_lock(host, &first).await.ok(), Some(ReleaseOutcome::Released));
    assert_eq!(executor.release_lock(host, &first).await.ok(), Some(ReleaseOutcome::NotHeld));
    let refreshed = executor.refresh_lock(host, &first).await;
    assert_eq!(refreshed.ok(), Some(RefreshOutcome::Lost { now_held_by: None }));

    let outcome = executor.acquire_lock(host, &lock_claim(&second, HOUR)).await;
    assert_eq!(outcome.ok(), Some(LockOutcome::Acquired), "the second claims after the release");
    let broken = executor.break_lock(host).await.unwrap_or_else(|e| panic!("break: {}", e.chain()));
    assert_eq!(broken.map(|held| held.holder), Some(second), "break must say who held the lock");
    let read = executor.read_lock(host).await.unwrap_or_else(|e| panic!("read: {}", e.chain()));
    assert_eq!(read, None);
    let broken = executor.break_lock(host).await.unwrap_or_else(|e| panic!("break: {}", e.chain()));
    assert_eq!(broken, None, "breaking a free host");
}

/// A lock idle for longer than the claim's `stale_after` is taken over, naming the previous
/// holder, who can then neither release nor refresh it.
pub async fn stale_lock_is_taken_over(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.host;
    clear_lock(executor, host).await;
    let (first, second) = (lock_holder("1"), lock_holder("2"));
    let outcome = executor.acquire_lock(host, &lock_claim(&first, HOUR)).await;
    assert_eq!(outcome.ok(), Some(LockOutcome::Acquired));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    match executor.acquire_lock(host, &lock_claim(&second, Duration::from_secs(1))).await {
        Ok(LockOutcome::TookOverStale { previous }) => {
            assert_eq!(previous.holder, first);
            assert!(previous.idle_for >= Duration::from_secs(1), "idle for {:?}", previous.idle_for);
        }
        other => panic!("a lock idle past stale_after must be taken over, got {other:?}"),
    }
    let read = executor.read_lock(host).await.unwrap_or_else(|e| panic!("read: {}", e.chain()));
    assert_eq!(read.map(|held| held.holder), Some(second.clone()));
    match executor.release_lock(host, &first).await {
        Ok(ReleaseOutcome::HeldByOther(held)) => assert_eq!(held.holder, second),
        other => panic!("the previous holder must not release the new lock, got {other:?}"),
    }
    match executor.refresh_lock(host, &first).await {
        Ok(RefreshOutcome::Lost { now_held_by: Some(held) }) => assert_eq!(held.holder, second),
        other => panic!("the previous holder must learn it lost the lock, got {other:?}"),
    }
    clear_lock(executor, host).await;
}

/// A lock refreshed within `stale_after` is not stale, however old it is.
pub async fn refreshed_lock_is_not_stale(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.host;
    clear_lock(executor, host).await;
    let (first, second) = (lock_holder("1"), lock_holder("2"));
    let outcome = executor.acquire_lock(host, &lock_claim(&first, HOUR)).await;
    assert_eq!(outcome.ok(), Some(LockOutcome::Acquired));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(executor.refresh_lock(host, &first).await.ok(), Some(RefreshOutcome::Refreshed));
    // Idle for 2.5 s before the refresh, at most a second or so after it (the host's clock
    // counts whole seconds).
    match executor.acquire_lock(host, &lock_claim(&second, Duration::from_secs(2))).await {
        Ok(LockOutcome::Held(held)) => assert_eq!(held.holder, first),
        other => panic!("a lock refreshed just now must not be stale, got {other:?}"),
    }
    clear_lock(executor, host).await;
}

/// Holder fields with quotes, command substitutions, newlines and other shell syntax are
/// kept and compared literally: nothing of them runs, and the holder still recognises its
/// own lock.
pub async fn hostile_holder_values_stay_literal(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.host;
    clear_lock(executor, host).await;
    let canary = fixture.canary_dir.display();
    let hostile = LockHolder {
        deployment: format!("1'; touch '{canary}/pwned-quote'; echo '"),
        requested_by: format!("$(touch {canary}/pwned-dollar)"),
        application: format!("`touch {canary}/pwned-backtick`"),
        environment: "line one\\nline\ntwo\r\n\"double\" \\ %s %n; | & * ? ~ -x".to_owned(),
        machine: "ü 🦀 \u{7f}\t$HOME ${HOME} $((1+1))".to_owned(),
        ..lock_holder("hostile")
    };
    let outcome = executor.acquire_lock(host, &lock_claim(&hostile, HOUR)).await;
    assert_eq!(outcome.ok(), Some(LockOutcome::Acquired), "claim by a hostile holder");
    let read = executor.read_lock(host).await.unwrap_or_else(|e| panic!("read: {}", e.chain()));
    assert_eq!(read.map(|held| held.holder), Some(hostile.clone()), "the holder must come back exactly");
    match executor.acquire_lock(host, &lock_claim(&lock_holder("2"), HOUR)).await {
        Ok(LockOutcome::Held(held)) => assert_eq!(held.holder, hostile),
        other => panic!("a second claimant must see the hostile holder, got {other:?}"),
    }
    let again = executor.acquire_lock(host, &lock_claim(&hostile, HOUR)).await;
    assert_eq!(again.ok(), Some(LockOutcome::AlreadyOurs), "the hostile holder must recognise its lock");
    assert_eq!(executor.release_lock(host, &hostile).await.ok(), Some(ReleaseOutcome::Released));
    for name in ["pwned-quote", "pwned-dollar", "pwned-backtick"] {
        let path = fixture.canary_dir.join(name);
        assert!(!path.exists(), "a holder value ran as a command: {} exists", path.display());
    }
}

/// Lock operations on a host nothing answers on are [`PortError::Unreachable`].
pub async fn locks_on_an_unreachable_host_are_unreachable(
    executor: &dyn Executor,
    fixture: &ExecutorFixture,
) {
    let host = &fixture.unreachable;
    let error = executor
        .acquire_lock(host, &lock_claim(&lock_holder("1"), HOUR))
        .await
        .expect_err("claim on an unreachable host");
    assert!(error.is_unreachable(), "acquire: {}", error.chain());
    let error = executor.read_lock(host).await.expect_err("read on an unreachable host");
    assert!(error.is_unreachable(), "read: {}", error.chain());
}

/// Connecting twice is fine, closing twice (or a host never connected) is harmless, and a
/// step after `close` opens a new session by itself.
pub async fn connect_is_idempotent_and_close_is_harmless(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.host;
    executor.connect(host).await.unwrap_or_else(|e| panic!("first connect to {host}: {}", e.chain()));
    executor.connect(host).await.unwrap_or_else(|e| panic!("second connect to {host}: {}", e.chain()));
    executor.close(host).await;
    executor.close(host).await;
    executor.close(&fixture.unreachable).await;
    let (sink, _receiver) = OutputSink::channel();
    let status = executor
        .run(host, &command(OK_SCRIPT), sink)
        .await
        .unwrap_or_else(|e| panic!("run after close on {host}: {}", e.chain()));
    assert!(status.success(), "run after close: {status}");
    executor.close(host).await;
}

/// A command that exits 0 gives a successful status.
pub async fn successful_command_exits_zero(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let (sink, _receiver) = OutputSink::channel();
    let status = executor
        .run(&fixture.host, &command(OK_SCRIPT), sink)
        .await
        .unwrap_or_else(|e| panic!("{OK_SCRIPT}: {}", e.chain()));
    assert!(status.success(), "{OK_SCRIPT} gave {status}");
    assert_eq!(status.code, Some(0));
}

/// A non-zero exit is `Ok` with that code (not an error), and what it printed on stderr
/// reaches the sink as stderr lines.
pub async fn failing_command_is_ok_with_its_code_and_stderr(
    executor: &dyn Executor,
    fixture: &ExecutorFixture,
) {
    let (sink, mut receiver) = OutputSink::channel();
    let status = executor
        .run(&fixture.host, &command(FAILING_SCRIPT), sink)
        .await
        .unwrap_or_else(|e| panic!("a failing command must be Ok with its status, got {}", e.chain()));
    assert_eq!(status.code, Some(FAILING_CODE), "{status}");
    assert!(!status.success());
    let lines = receiver.drain();
    assert!(lines.iter().any(|l| l.stream == OutputStream::Stderr), "no stderr line in {lines:?}");
}

/// A command running past its timeout gives [`PortError::Timeout`], soon after the timeout.
pub async fn hanging_command_times_out(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let timeout = Duration::from_secs(1);
    let hanging = RemoteCommand { timeout, ..command(HANGING_SCRIPT) };
    let (sink, _receiver) = OutputSink::channel();
    let started = Instant::now();
    let result = executor.run(&fixture.host, &hanging, sink).await;
    let took = started.elapsed();
    match result {
        Err(e @ PortError::Timeout { .. }) => assert!(e.is_timeout()),
        other => panic!("{HANGING_SCRIPT} with a {timeout:?} timeout gave {other:?}, not a timeout"),
    }
    assert!(took >= timeout, "gave up after {took:?}, before its {timeout:?} timeout");
    assert!(took < timeout + Duration::from_secs(10), "took {took:?} for a {timeout:?} timeout");
    let (sink, _receiver) = OutputSink::channel();
    let status = executor
        .run(&fixture.host, &command(OK_SCRIPT), sink)
        .await
        .unwrap_or_else(|e| panic!("the host must work again after a timeout: {}", e.chain()));
    assert!(status.success());
}

/// A host nothing answers on is [`PortError::Unreachable`], for connect and for run.
pub async fn unreachable_host_is_unreachable(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.unreachable;
    let error = executor.connect(host).await.expect_err("connect to an unreachable host");
    assert!(error.is_unreachable(), "connect: {}", error.chain());
    let (sink, _receiver) = OutputSink::channel();
    let error = executor.run(host, &command(OK_SCRIPT), sink).await.expect_err("run on an unreachable host");
    assert!(error.is_unreachable(), "run: {}", error.chain());
}

/// A host that refuses the executor is [`PortError::Unauthorized`], for connect and for run.
pub async fn refused_host_is_unauthorized(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let host = &fixture.refused;
    let error = executor.connect(host).await.expect_err("connect to a refusing host");
    assert!(matches!(error, PortError::Unauthorized { .. }), "connect: {}", error.chain());
    let (sink, _receiver) = OutputSink::channel();
    let error = executor.run(host, &command(OK_SCRIPT), sink).await.expect_err("run on a refusing host");
    assert!(matches!(error, PortError::Unauthorized { .. }), "run: {}", error.chain());
}

/// An environment variable name that is not a shell identifier cannot reach an executor (names
/// reach a remote shell): [`EnvVarName`] refuses it. A valid one runs.
pub async fn invalid_env_name_is_rejected(executor: &dyn Executor, fixture: &ExecutorFixture) {
    for name in ["BAD NAME", "X;id", "1X", ""] {
        assert!(EnvVarName::new(name).is_err(), "{name:?} must be refused");
    }
    let name = EnvVarName::new("GOOD_NAME_1").unwrap_or_else(|e| panic!("{e}"));
    let good = RemoteCommand { env: vec![(name, "v".to_owned())], ..command(OK_SCRIPT) };
    let (sink, _receiver) = OutputSink::channel();
    let status = executor.run(&fixture.host, &good, sink).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success());
}

/// Uploading a file to a writable place succeeds.
pub async fn upload_succeeds(executor: &dyn Executor, fixture: &ExecutorFixture) {
    let upload = FileUpload {
        source: fixture.upload_source.clone(),
        destination: fixture.upload_destination.clone(),
        mode: 0o640,
        timeout: Duration::from_secs(30),
    };
    executor.upload(&fixture.host, &upload).await.unwrap_or_else(|e| panic!("upload: {}", e.chain()));
}

/// Failures on other hosts do not disturb a good host's session.
pub async fn one_host_failing_leaves_others_working(executor: &dyn Executor, fixture: &ExecutorFixture) {
    executor.connect(&fixture.host).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    let (unreachable, refused) =
        tokio::join!(executor.connect(&fixture.unreachable), executor.connect(&fixture.refused));
    assert!(unreachable.is_err() && refused.is_err());
    let (sink, _receiver) = OutputSink::channel();
    let status = executor
        .run(&fixture.host, &command(OK_SCRIPT), sink)
        .await
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success());
    executor.close(&fixture.host).await;
}
