//! Running commands on a real sshd: exit status, stdout and stderr lines streamed as they come,
//! environment, output cap, timeout that ends the remote command, hostile template values,
//! session reuse.

mod common;

use std::time::{Duration, Instant};

use vesemir_core::name::EnvVarName;
use vesemir_core::ports::{Executor, OutputSink, OutputStream, RemoteCommand};
use vesemir_core::request::{Quoting, Template};
use vesemir_core::PortError;

use common::{command, run, text, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_command_streams_stdout_lines_and_exits_zero() {
    let lab = Lab::start();
    let executor = lab.executor();
    let (code, lines) = run(&executor, &lab.host(), &command("echo one; echo two; printf three")).await;
    assert_eq!(code, 0);
    assert_eq!(text(&lines, OutputStream::Stdout), ["one", "two", "three"]);
    assert!(text(&lines, OutputStream::Stderr).is_empty(), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_is_ok_with_its_code() {
    let lab = Lab::start();
    let executor = lab.executor();
    let (code, _) = run(&executor, &lab.host(), &command("exit 7")).await;
    assert_eq!(code, 7);
    let (code, _) = run(&executor, &lab.host(), &command("false")).await;
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_lines_arrive_as_stderr() {
    let lab = Lab::start();
    let executor = lab.executor();
    let (code, lines) =
        run(&executor, &lab.host(), &command("echo out; echo err1 >&2; echo err2 >&2; exit 2")).await;
    assert_eq!(code, 2);
    assert_eq!(text(&lines, OutputStream::Stdout), ["out"]);
    assert_eq!(text(&lines, OutputStream::Stderr), ["err1", "err2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lines_arrive_while_the_command_runs() {
    let lab = Lab::start();
    let executor = lab.executor();
    let host = lab.host();
    let (sink, mut receiver) = OutputSink::channel();
    let started = Instant::now();
    let running = tokio::spawn({
        let executor = executor.clone();
        let host = host.clone();
        async move { executor.run(&host, &command("echo first; sleep 3; echo second"), sink).await }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("a line within 10 s")
        .expect("a line");
    let at = started.elapsed();
    assert_eq!(first.text, "first");
    assert!(!running.is_finished(), "the command had already finished when its first line arrived");
    assert!(at < Duration::from_millis(2500), "first line came after {at:?}, not while running");
    let status = running.await.expect("task").unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success());
    assert_eq!(receiver.recv().await.map(|l| l.text).as_deref(), Some("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_arrive_as_literal_values() {
    let lab = Lab::start();
    let executor = lab.executor();
    let hostile = "$(echo pwned) `id` ; rm -rf / ' \" \\ * $HOME";
    let cmd = RemoteCommand {
        env: vec![
            (EnvVarName::new("PLAIN").expect("name"), "v1".into()),
            (EnvVarName::new("HOSTILE").expect("name"), hostile.into()),
        ],
        ..command(r#"printf '%s|%s\n' "$PLAIN" "$HOSTILE""#)
    };
    let (code, lines) = run(&executor, &lab.host(), &cmd).await;
    assert_eq!(code, 0);
    assert_eq!(text(&lines, OutputStream::Stdout), [format!("v1|{hostile}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_template_values_arrive_as_literal_text() {
    let lab = Lab::start();
    let executor = lab.executor();
    let marker = lab.sshd.dir().join("pwned");
    let injected = format!("$(touch {m}) `touch {m}` ; touch {m}", m = marker.display());
    let values = [
        injected.as_str(),
        "$(id)",
        "`id`",
        "a; echo injected",
        "it's",
        "\"double\" 'single'",
        "line1\nline2\n\nline4",
        "$HOME ${PATH} $1 $@",
        "a && b || c | d & e > f < g",
        "\\ backslash \\n",
        "* ? [a-z] ~",
        "-n",
        "",
    ];
    let template = Template::parse("printf '%s<end>' {v}").expect("template");
    for value in values {
        let script = template.render(Quoting::Shell, |_| Some(value));
        let (code, lines) = run(&executor, &lab.host(), &command(&script)).await;
        assert_eq!(code, 0, "{script}");
        let received = text(&lines, OutputStream::Stdout).join("\n");
        assert_eq!(received, format!("{value}<end>"), "{script}");
    }
    assert!(!marker.exists(), "a value was executed as code: {} exists", marker.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_under_the_cap_arrives_whole() {
    let lab = Lab::start();
    let executor = lab.executor();
    let cmd = RemoteCommand { output_limit: 10 * 1024 * 1024, ..command("seq 1 200000; seq 1 1000 >&2") };
    let (code, lines) = run(&executor, &lab.host(), &cmd).await;
    assert_eq!(code, 0);
    let stdout = text(&lines, OutputStream::Stdout);
    assert_eq!(stdout.len(), 200_000);
    assert_eq!(stdout.first().map(String::as_str), Some("1"));
    assert_eq!(stdout.last().map(String::as_str), Some("200000"));
    assert_eq!(text(&lines, OutputStream::Stderr).len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_cap_is_dropped_after_one_notice_and_the_command_still_finishes() {
    let lab = Lab::start();
    let executor = lab.executor();
    // ~5 MB: far more than the cap and than SSH's channel window, so the remote would block if
    // the rest were not read.
    let cmd = RemoteCommand { output_limit: 1000, ..command("seq 1 700000; echo done >&2; exit 4") };
    let started = Instant::now();
    let (code, lines) = run(&executor, &lab.host(), &cmd).await;
    assert_eq!(code, 4, "the command must run to its end");
    assert!(started.elapsed() < Duration::from_secs(25));
    let sent: usize = lines[..lines.len() - 1].iter().map(|l| l.text.len() + 1).sum();
    assert!(sent <= 1000, "{sent} bytes sent past a 1000 byte cap");
    let notices: Vec<_> = lines.iter().filter(|l| l.text.contains("output truncated")).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(lines.last().is_some_and(|l| l.text.contains("output truncated")), "the notice comes last");
    assert!(!lines.iter().any(|l| l.text == "done"), "output after the cap was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_the_remote_command() {
    let lab = Lab::start();
    let executor = lab.executor();
    let host = lab.host();
    let marker = lab.sshd.dir().join("still-running");
    let pid_file = lab.sshd.dir().join("pid");
    let script = format!(
        "echo $$ > {pid}; sleep 3; touch {marker}",
        pid = pid_file.display(),
        marker = marker.display()
    );
    let cmd = RemoteCommand { timeout: Duration::from_secs(1), ..command(&script) };
    let started = Instant::now();
    let (sink, _receiver) = OutputSink::channel();
    let error = executor.run(&host, &cmd, sink).await.expect_err("must time out");
    let took = started.elapsed();
    assert!(matches!(error, PortError::Timeout { .. }), "{}", error.chain());
    assert!(error.to_string().contains("timed out after 1s"), "{error}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(3), "took {took:?}");
    // The shell that ran the script is gone (or a zombie waiting to be reaped) ...
    let pid = std::fs::read_to_string(&pid_file).expect("pid file").trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // No such process, or a zombie: either way it runs no more.
        let alive = !state.is_empty() && state.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z'));
        if !alive {
            break;
        }
        assert!(Instant::now() < deadline, "the remote shell {pid} still runs after the timeout");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and the rest of the script never runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists(), "the command went on running after its timeout");
    // The host works again afterwards.
    let (code, _) = run(&executor, &host, &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_is_reused_for_every_step() {
    let lab = Lab::start();
    let executor = lab.executor();
    let host = lab.host();
    executor.connect(&host).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    for i in 0..5 {
        let (code, _) = run(&executor, &host, &command(&format!("exit {i}"))).await;
        assert_eq!(code, i);
    }
    let source = lab.sshd.dir().join("f");
    std::fs::write(&source, "x").expect("write");
    let upload = vesemir_core::ports::FileUpload {
        source,
        destination: lab.sshd.dir().join("g").display().to_string(),
        mode: 0o600,
        timeout: Duration::from_secs(10),
    };
    executor.upload(&host, &upload).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(executor.sessions(), 1);
    let logins = lab.sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins, 1, "one login for all steps, sshd says:\n{}", lab.sshd.log());
    executor.close(&host).await;
    let (code, _) = run(&executor, &host, &command("true")).await;
    assert_eq!(code, 0);
    assert_eq!(lab.sshd.log().matches("Accepted publickey").count(), 2, "a new session after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_step_ends_the_remote_command() {
    let lab = Lab::start();
    let executor = lab.executor();
    let host = lab.host();
    let marker = lab.sshd.dir().join("still-running");
    let cmd = command(&format!("sleep 3; touch {}", marker.display()));
    let (sink, _receiver) = OutputSink::channel();
    // The rollout gives up on the step: its future is dropped mid-run.
    let gave_up = tokio::time::timeout(Duration::from_millis(800), executor.run(&host, &cmd, sink)).await;
    assert!(gave_up.is_err(), "the step should still have been running");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the command went on running after its step was cancelled");
    let (code, _) = run(&executor, &host, &command("true")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_died_between_steps_is_replaced() {
    let lab = Lab::start();
    let executor = lab.executor();
    let host = lab.host();
    // The step leaves behind a job that kills this connection's sshd process after the step
    // ended: $PPID is the wrapper shell, whose parent is sshd's session process.
    let script = "sshd_pid=$(cut -d' ' -f4 /proc/$PPID/stat); \
                  (sleep 0.5; kill -9 \"$sshd_pid\") </dev/null >/dev/null 2>&1 &";
    let (code, _) = run(&executor, &host, &command(script)).await;
    assert_eq!(code, 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, lines) = run(&executor, &host, &command("echo again")).await;
    assert_eq!(code, 0);
    assert_eq!(text(&lines, OutputStream::Stdout), ["again"]);
    assert_eq!(lab.sshd.log().matches("Accepted publickey").count(), 2, "{}", lab.sshd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_by_a_signal_fails_naming_the_signal() {
    let lab = Lab::start();
    let executor = lab.executor();
    for (script, signal) in [("kill -9 $$", "KILL"), ("echo going; kill -TERM $$; sleep 5", "TERM")] {
        let (sink, _receiver) = OutputSink::channel();
        let status = executor.run(&lab.host(), &command(script), sink).await.expect("the step ran");
        assert!(!status.success(), "{script}: {status:?}");
        assert_eq!(status.signal.as_deref(), Some(signal), "{script}: {status:?}");
        assert!(status.to_string().contains(&format!("signal {signal}")), "{script}: {status}");
    }
    // An ordinary failure keeps its code, and the session is still good after the signals.
    let (code, _) = run(&executor, &lab.host(), &command("exit 3")).await;
    assert_eq!(code, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_closed_without_an_exit_status_fails_the_step() {
    // sshd closes a command channel that stays silent for a second, without an exit status:
    // libssh2 reads that as exit code 0, which must not pass for success.
    let lab = Lab::start_with("ChannelTimeout session:command=1s");
    let executor = lab.executor();
    let (sink, mut receiver) = OutputSink::channel();
    let result = executor.run(&lab.host(), &command("sleep 3; echo finished"), sink).await;
    let error = result.expect_err("the channel was closed before the command ended");
    let text = error.chain();
    assert!(text.contains("closed without an exit status"), "{text}");
    assert!(text.contains("ChannelTimeout"), "{text}");
    assert!(receiver.drain().iter().all(|line| line.text != "finished"));
    // A command that ends in time on the same server succeeds, and the end marker stays out of
    // its output.
    let (code, lines) = run(&executor, &lab.host(), &command("echo out; echo err >&2")).await;
    assert_eq!(code, 0);
    assert_eq!(text_of(&lines), ["out", "err"]);
}

fn text_of(lines: &[vesemir_core::ports::OutputLine]) -> Vec<&str> {
    lines.iter().map(|line| line.text.as_str()).collect()
}
