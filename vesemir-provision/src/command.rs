//! Running a tool: arguments (never through a shell), optional stdin, a timeout after which
//! the process is killed (and it is killed too if the future is dropped), and its output.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use vesemir_core::PortError;

/// What a finished tool printed and whether it succeeded.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit code 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ToolOutput {
    /// stdout and stderr together, trimmed, for error messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr).trim().to_owned()
    }
}

/// Runs `program args...` with `stdin` written to it, for at most `timeout`. A missing program
/// or a timeout is an error; a non-zero exit is not (see [`ToolOutput::success`]).
pub async fn run<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<ToolOutput, PortError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| PortError::Adapter {
        adapter: "provision",
        source: format!("cannot run {program}: {e}").into(),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(|e| PortError::Adapter {
            adapter: "provision",
            source: format!("cannot write to {program}: {e}").into(),
        })?;
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| PortError::timeout(program.to_owned(), timeout))?
        .map_err(|e| PortError::Adapter { adapter: "provision", source: format!("{program}: {e}").into() })?;
    Ok(ToolOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
