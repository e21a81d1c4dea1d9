//! The `Executor` conformance suite: what every executor (the SSH adapter, the core's fake)
//! must do, checked through `&dyn Executor` against a fixture that says which hosts exist.
//!
//! The scripts are fixed so a fake can be told what to do with them: a fake executor must make
//! [`FAILING_SCRIPT`] exit with [`FAILING_CODE`] printing on stderr, and [`HANGING_SCRIPT`] run
//! until its timeout, on [`ExecutorFixture::host`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

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
