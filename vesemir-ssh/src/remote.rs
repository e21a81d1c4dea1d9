//! One step on an open [`Connection`]: run a command with its output streamed line by line and
//! ended at its deadline, or upload a file atomically. Runs on a blocking thread.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ssh2::Channel;
use vesemir_core::ports::{ExitStatus, FileUpload, OutputSink, OutputStream, RemoteCommand};

use crate::command;
use crate::connection::Connection;
use crate::error::SshError;
use crate::output::{EndMarker, LineSplitter};
use crate::wait::{retry, Stop};

/// How long closing a channel may take after its command ended or was stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How a step on a connection ended, when it did not give a result.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The step failed; the connection is still good.
    Step(SshError),
    /// The step failed and the connection is no longer usable (timeout, broken transport).
    Broken(SshError),
    /// No channel could be opened: the connection went stale before the step started, so
    /// the step may be tried again on a fresh one.
    Stale(SshError),
}

/// Runs `command`, streaming its output to `sink`, until it ends, its timeout passes or
/// `cancel` is set. On timeout the channel is closed, which makes the remote watchdog kill the
/// command's process group.
pub(crate) fn run(
    connection: &mut Connection,
    command: &RemoteCommand,
    sink: OutputSink,
    cancel: &AtomicBool,
) -> Result<ExitStatus, StepError> {
    let marker = command::end_marker(&format!("{:016x}", unique()));
    let line = command::wrap(&command.script, &command.env, &marker);
    let deadline = Instant::now() + command.timeout;
    let timeout =
        || StepError::Broken(SshError::Timeout { operation: "command".into(), after: command.timeout });
    let mut channel = open_channel(connection, deadline, cancel, &timeout)?;
    retry(&mut connection.waiter, deadline, cancel, || channel.exec(&line))
        .map_err(|stop| stopped(stop, "starting the command", &timeout))?;

    let mut splitter = LineSplitter::new(sink, command.output_limit);
    let mut end = EndMarker::new(&marker);
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let mut progressed = false;
        for (stream, id) in [(OutputStream::Stdout, 0), (OutputStream::Stderr, ssh2::EXTENDED_DATA_STDERR)] {
            loop {
                match channel.stream(id).read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        match stream {
                            OutputStream::Stdout => splitter.push(stream, &buffer[..n]),
                            OutputStream::Stderr => splitter.push(stream, &end.filter(&buffer[..n])),
                        }
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        return Err(StepError::Broken(SshError::Io {
                            operation: "reading the command's output".into(),
                            source: e,
                        }))
                    }
                }
            }
        }
        if channel.eof() {
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            abandon(connection, &mut channel);
            return Err(StepError::Broken(SshError::Remote("the step was cancelled".into())));
        }
        if Instant::now() >= deadline {
            splitter.push(OutputStream::Stderr, &end.finish());
            splitter.finish();
            abandon(connection, &mut channel);
            return Err(timeout());
        }
        if !progressed {
            connection.waiter.wait(deadline);
        }
    }
    splitter.push(OutputStream::Stderr, &end.finish());
    splitter.finish();
    let grace = Instant::now() + CLOSE_GRACE;
    retry(&mut connection.waiter, grace, cancel, || channel.wait_close())
        .map_err(|stop| stopped(stop, "closing the channel", &timeout))?;
    let signal = channel.exit_signal().ok().and_then(|s| s.exit_signal);
    let code = channel.exit_status().map_err(|e| session_error("reading the exit status", e))?;
    match (signal, code) {
        (Some(signal), _) => Ok(ExitStatus { code: None, signal: Some(signal) }),
        (None, 0) if !end.seen() => Err(StepError::Step(SshError::NoExitStatus { what: "command" })),
        (None, code) => Ok(ExitStatus::code(code)),
    }
}

/// Copies `upload.source` to the host: written to a temporary file next to the destination,
/// size checked, mode set, renamed into place.
pub(crate) fn upload(
    connection: &mut Connection,
    upload: &FileUpload,
    cancel: &AtomicBool,
) -> Result<(), StepError> {
    let bytes = std::fs::read(&upload.source).map_err(|e| {
        StepError::Step(SshError::Invalid(format!(
            "cannot read the file to upload {}: {e}",
            upload.source.display()
        )))
    })?;
    let deadline = Instant::now() + upload.timeout;
    let timeout =
        || StepError::Broken(SshError::Timeout { operation: "upload".into(), after: upload.timeout });
    let nonce = format!("{}-{}", std::process::id(), unique());
    let line = command::upload(&upload.destination, upload.mode, bytes.len() as u64, &nonce);
    let mut channel = open_channel(connection, deadline, cancel, &timeout)?;
    retry(&mut connection.waiter, deadline, cancel, || channel.exec(&line))
        .map_err(|stop| stopped(stop, "starting the upload", &timeout))?;
    let mut written = 0;
    while written < bytes.len() {
        match channel.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    abandon(connection, &mut channel);
                    return Err(timeout());
                }
                // Drain what the remote says meanwhile, so its window updates get processed.
                let _ = channel.stderr().read(&mut [0u8; 1024]);
                connection.waiter.wait(deadline);
            }
            Err(e) => {
                return Err(StepError::Broken(SshError::Io {
                    operation: "sending the file".into(),
                    source: e,
                }))
            }
        }
    }
    retry(&mut connection.waiter, deadline, cancel, || channel.send_eof())
        .map_err(|stop| stopped(stop, "finishing the upload", &timeout))?;
    let mut stderr = Vec::new();
    let mut end = EndMarker::new(&command::end_marker(&nonce));
    let mut buffer = [0u8; 4096];
    loop {
        let mut progressed = false;
        for id in [0, ssh2::EXTENDED_DATA_STDERR] {
            match channel.stream(id).read(&mut buffer) {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    if id == 0 {
                        end.filter(&buffer[..n]);
                    } else if stderr.len() < 4096 {
                        stderr.extend_from_slice(&buffer[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    return Err(StepError::Broken(SshError::Io {
                        operation: "finishing the upload".into(),
                        source: e,
                    }))
                }
            }
        }
        if channel.eof() {
            break;
        }
        if Instant::now() >= deadline {
            abandon(connection, &mut channel);
            return Err(timeout());
        }
        if !progressed {
            connection.waiter.wait(deadline);
        }
    }
    retry(&mut connection.waiter, deadline, cancel, || channel.wait_close())
        .map_err(|stop| stopped(stop, "closing the channel", &timeout))?;
    let code = channel.exit_status().map_err(|e| session_error("reading the exit status", e))?;
    if let Some(signal) = channel.exit_signal().ok().and_then(|s| s.exit_signal) {
        return Err(StepError::Step(SshError::Remote(format!(
            "the upload to {} was ended by signal {signal}",
            upload.destination
        ))));
    }
    if code == 0 && !end.seen() {
        Err(StepError::Step(SshError::NoExitStatus { what: "upload" }))
    } else if code == 0 {
        Ok(())
    } else {
        let reason = String::from_utf8_lossy(&stderr).trim().to_owned();
        Err(StepError::Step(SshError::Remote(format!(
            "could not write {} (exit code {code}): {reason}; check that its directory exists and the user may write there",
            upload.destination
        ))))
    }
}

/// Ends a channel whose command must stop: EOF on its stdin and a close, which the remote
/// watchdog answers by killing the command's process group. Bounded; the caller drops the
/// connection afterwards in any case.
fn abandon(connection: &mut Connection, channel: &mut Channel) {
    let never = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(1);
    let _ = retry(&mut connection.waiter, deadline, &never, || channel.send_eof());
    let _ = retry(&mut connection.waiter, deadline, &never, || channel.close());
}

fn open_channel(
    connection: &mut Connection,
    deadline: Instant,
    cancel: &AtomicBool,
    timeout: &impl Fn() -> StepError,
) -> Result<Channel, StepError> {
    let session = connection.session.clone();
    retry(&mut connection.waiter, deadline, cancel, || session.channel_session()).map_err(|stop| match stop {
        Stop::Failed(source) => {
            StepError::Stale(SshError::Session { operation: "opening a channel".into(), source })
        }
        other => stopped(other, "opening a channel", timeout),
    })
}

fn stopped(stop: Stop, operation: &str, timeout: &impl Fn() -> StepError) -> StepError {
    match stop {
        Stop::Deadline => timeout(),
        Stop::Cancelled => StepError::Broken(SshError::Remote("the step was cancelled".into())),
        Stop::Failed(e) => session_error(operation, e),
    }
}

fn session_error(operation: &str, source: ssh2::Error) -> StepError {
    StepError::Broken(SshError::Session { operation: operation.into(), source })
}

/// A number unique within this process, for temporary file names.
fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (u64::from(nanos) << 20)
}
