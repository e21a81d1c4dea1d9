//! The contract, checked by an independent fuzzer: schemathesis (from PyPI) reads
//! `/openapi.json` of a real server on a loopback socket (fake ports, the test catalog's units
//! over them, one of which the document's example request names, an admin token) and runs every check it has, stateful
//! runs along the document's links included, with a fixed seed and a bounded number of examples.
//! Any disagreement between what the document says and what the server does fails the test.
//! Its settings (seed, examples, per-operation expectations) are in `tests/schemathesis.toml`.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use support::*;
use vesemir_http::{FixedPorts, Server};

/// The schemathesis release this contract is checked with (`.ci/install-test-servers` installs it).
const SCHEMATHESIS: &str = "4.32.5";

/// The `schemathesis` command of version [`SCHEMATHESIS`]: `$SCHEMATHESIS` if set, else the one
/// on PATH, else the virtualenv `.ci/install-test-servers` makes; or a failure naming how to
/// install it.
fn schemathesis() -> String {
    let data = std::env::var("XDG_DATA_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|home| format!("{home}/.local/share")))
        .unwrap_or_default();
    let candidates = [
        std::env::var("SCHEMATHESIS").ok(),
        Some("schemathesis".to_owned()),
        Some(format!("{data}/vesemir/schemathesis-{SCHEMATHESIS}/bin/schemathesis")),
    ];
    let mut found = Vec::new();
    for command in candidates.into_iter().flatten() {
        let Ok(out) = Command::new(&command).arg("--version").output() else { continue };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && version.ends_with(SCHEMATHESIS) {
            return command;
        }
        found.push(format!("{command}: {version}"));
    }
    panic!(
        "schemathesis {SCHEMATHESIS} is not installed (found: {found:?}): \
         pip install schemathesis=={SCHEMATHESIS}, or run bash .ci/install-test-servers"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_between_the_document_and_the_server() {
    let command = schemathesis();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&dir.path().join("v.db"));
    config.limits.max_concurrent_deployments = 64;
    config.limits.max_queued_deployments = 64;
    // Paused deployments and canaries waiting for confirmation end soon, and so do the event
    // streams that follow them.
    config.limits.deployment_timeout = Duration::from_secs(3);
    // The test catalog's units find the fleet's hosts by tag and Chef environment.
    let fleet = Fleet::new(3);
    let server = Server::open(&config, Arc::new(FixedPorts(fleet.ports()))).await.expect("opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve_on(listener, async {
                    let _ = stopped.await;
                })
                .await
        })
    };

    // The document as served, kept for reading after the run.
    let document = call(&server.router(), Method::GET, "/openapi.json", None, None, &[]).await;
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi.json");
    std::fs::write(&kept, &document.text).expect("writes the document");
    println!("the document: {}", kept.display());

    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let report = dir.path().join("report");
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(command)
            .arg("--config-file")
            .arg(&settings)
            .args(["run", &format!("http://{address}/openapi.json")])
            .args(["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
            // One worker: hypothesis's lambda descriptions call `ast.parse`, which is not thread-safe
            // on CPython 3.11 ("AST constructor recursion depth mismatch").
            .args(["--workers", "1", "--request-timeout", "10", "--no-color", "--output-sanitize", "false"])
            .arg("--report-dir")
            .arg(&report)
            .output()
    })
    .await
    .expect("joins")
    .expect("schemathesis runs");
    let took = started.elapsed();
    let _ = stop.send(());
    let _ = serving.await;

    let output = String::from_utf8_lossy(&run.stdout);
    let errors = String::from_utf8_lossy(&run.stderr);
    println!("{output}\n{errors}\nschemathesis took {:.1} s", took.as_secs_f64());
    assert!(run.status.success(), "schemathesis found disagreements:\n{output}\n{errors}");
    let passed = output.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
    assert!(passed.contains(" passed"), "schemathesis ran no checks?\n{output}");
    assert!(output.contains("Stateful") && output.contains("API Links"), "no stateful run?\n{output}");
}
