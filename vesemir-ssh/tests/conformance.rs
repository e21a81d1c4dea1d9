//! The shared `Executor` conformance suite, against the SSH adapter on a real sshd and against
//! the core's fake.

mod common;

use vesemir_core::fake::FakeExecutor;
use vesemir_testkit::conformance::executor::{
    run_all, ExecutorFixture, FAILING_CODE, FAILING_SCRIPT, HANGING_SCRIPT,
};

use common::{host, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_executor_passes_the_executor_conformance_suite() {
    let lab = Lab::start();
    let source = lab.sshd.dir().join("conformance-source");
    std::fs::write(&source, "payload\n").expect("write source");
    let fixture = ExecutorFixture {
        host: lab.host(),
        // Same port, another loopback address where nothing listens.
        unreachable: host("web-02", "127.0.0.2"),
        // The same sshd under a name known_hosts does not list: strict mode refuses it.
        refused: host("web-03", "localhost"),
        upload_source: source,
        upload_destination: lab.sshd.dir().join("conformance-dest").display().to_string(),
        canary_dir: lab.sshd.dir().to_path_buf(),
    };
    // Locks in the test's own directory, not in the home of the user running the tests.
    let executor = lab.executor().with_lock_dir(lab.sshd.dir().join("lock").display().to_string());
    run_all(&executor, &fixture).await;
    let written = std::fs::read_to_string(lab.sshd.dir().join("conformance-dest")).expect("uploaded file");
    assert_eq!(written, "payload\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_executor_passes_the_executor_conformance_suite() {
    let fake = FakeExecutor::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = ExecutorFixture {
        host: host("web-01", "10.0.0.1"),
        unreachable: host("web-02", "10.0.0.2"),
        refused: host("web-03", "10.0.0.3"),
        upload_source: dir.path().join("source"),
        upload_destination: "/tmp/dest".into(),
        canary_dir: dir.path().to_path_buf(),
    };
    fake.set_unreachable(&fixture.unreachable.name);
    fake.set_unauthorized(&fixture.refused.name);
    fake.fail_command(&fixture.host.name, FAILING_SCRIPT, FAILING_CODE);
    fake.hang_command(&fixture.host.name, HANGING_SCRIPT);
    run_all(&fake, &fixture).await;
}
