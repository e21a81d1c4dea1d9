//! Plain text for people: one line per event, and a summary of the report, written for the
//! product developer who wants to know what happened to their deploy and why.

use std::fmt::Write as _;
use std::time::Duration;

use crate::event::{Event, EventKind, HostOutcome, Rotation, WaitReason};
use crate::ports::OutputStream;
use crate::report::DeploymentReport;

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `mm:ss.mmm` since the start.
pub fn clock(elapsed: Duration) -> String {
    let millis = elapsed.as_millis();
    format!("{:02}:{:02}.{:03}", millis / 60_000, (millis / 1000) % 60, millis % 1000)
}

/// The event as one line (without the time), or `None` for events not worth a line.
pub fn describe(event: &Event) -> Option<String> {
    Some(match &event.kind {
        EventKind::DeploymentStarted { hosts, batches, concurrency, max_failures } => format!(
            "rolling out to {hosts} {} in {batches} {}: at most {concurrency} out of rotation at once, {}",
            plural(*hosts, "host", "hosts"),
            plural(*batches, "batch", "batches"),
            match max_failures {
                0 => "stopping at the first failure".to_owned(),
                n => format!("stopping after {} failures", n + 1),
            }
        ),
        EventKind::BatchStarted { batch, hosts } => {
            let names: Vec<&str> = hosts.iter().map(|h| h.as_str()).collect();
            format!("batch {batch}: {}", names.join(", "))
        }
        EventKind::HostPhase { host, phase } => format!("{host}: {phase}"),
        EventKind::HostOutput { host, step, stream, line } => {
            let mark = match stream {
                OutputStream::Stdout => "|",
                OutputStream::Stderr => "!",
            };
            format!("{host} {mark} [{step}] {line}")
        }
        EventKind::HostFinished { host, outcome, phase, error, rotation, out_of_rotation_ms } => match outcome {
            HostOutcome::Succeeded => match out_of_rotation_ms {
                Some(ms) => format!("{host}: deployed, {rotation} (out of rotation {:.2}s)", *ms as f64 / 1000.0),
                None => format!("{host}: deployed, {rotation}"),
            },
            HostOutcome::Skipped if *phase == crate::event::Phase::Pending => {
                format!("{host}: {outcome} ({}), {rotation}", error.as_deref().unwrap_or(""))
            }
            HostOutcome::Skipped | HostOutcome::Cancelled if *rotation == Rotation::InRotation => {
                format!("{host}: {outcome} ({}), {rotation}", error.as_deref().unwrap_or(""))
            }
            _ => format!(
                "{host}: {} during {phase}: {}; {rotation}",
                outcome.to_string().to_uppercase(),
                error.as_deref().unwrap_or("no reason given")
            ),
        },
        EventKind::BatchFinished { batch, succeeded, failed } => {
            format!("batch {batch} done: {succeeded} succeeded, {failed} failed")
        }
        EventKind::Waiting { reason } => match reason {
            WaitReason::CanaryHold { duration } => {
                format!(
                    "canary deployed: watching it for {} before going on",
                    humantime::format_duration(*duration)
                )
            }
            WaitReason::CanaryConfirmation => "canary deployed: waiting for confirmation to go on".to_owned(),
            WaitReason::Pause { duration } => {
                format!("pausing {} before the next batch", humantime::format_duration(*duration))
            }
            WaitReason::BackendBudget { out, concurrency } => format!(
                "waiting: {out} servers of the backend are out of rotation and concurrency is {concurrency}: no host leaves rotation until one comes back"
            ),
        },
        EventKind::StepRetry { host, step, attempt, attempts, reason, delay } => format!(
            "{host}: step {step:?} failed ({reason}), try {attempt} of {attempts}: trying again in {}",
            humantime::format_duration(*delay)
        ),
        EventKind::HostRetry { host, attempt, reason } => format!(
            "{host}: trying it again (attempt {attempt}, strategy.retry_unreachable): its first attempt ended unreachable: {reason}"
        ),
        EventKind::Warning { host: Some(host), message } => format!("warning: {host}: {message}"),
        EventKind::Warning { host: None, message } => format!("warning: {message}"),
        EventKind::Paused { in_flight: 0 } => "paused: no new host starts until resumed".to_owned(),
        EventKind::Paused { in_flight } => format!(
            "paused: no new host starts until resumed; {in_flight} {} in flight finish",
            plural(*in_flight, "host", "hosts")
        ),
        EventKind::Resumed => "resumed: hosts start again".to_owned(),
        EventKind::Handover { from, to, epoch, action } => format!(
            "handover: {} stopped renewing its lease; {to} took the deployment over (lease epoch {epoch}) and will {action} it",
            from.as_deref().unwrap_or("no instance")
        ),
        EventKind::Stopping { reason, .. } => format!("stopping: {reason}"),
        EventKind::DeploymentFinished { outcome, totals } => format!(
            "deployment {outcome}: {} succeeded, {} failed, {} unreachable, {} skipped, {} cancelled",
            totals.succeeded, totals.failed, totals.unreachable, totals.skipped, totals.cancelled
        ),
    })
}

/// The event as a timestamped line.
pub fn line(event: &Event) -> Option<String> {
    describe(event).map(|text| format!("[{}] {text}", clock(event.elapsed)))
}

/// A summary: one row per host that did not succeed (with the reason and the last output
/// lines), the hosts out of rotation, and the totals.
pub fn summary(report: &DeploymentReport) -> String {
    let mut out = String::new();
    let outcome = report.outcome.map_or_else(|| "still running".to_owned(), |o| o.to_string());
    let t = &report.totals;
    let _ = writeln!(
        out,
        "Deployment {outcome} in {}: {} succeeded, {} failed, {} unreachable, {} skipped, {} cancelled (of {}).",
        humantime::format_duration(Duration::from_millis(report.elapsed.as_millis() as u64)),
        t.succeeded,
        t.failed,
        t.unreachable,
        t.skipped,
        t.cancelled,
        report.hosts.len()
    );
    if let Some((p50, p99)) = report.out_of_rotation_percentiles() {
        let _ = writeln!(
            out,
            "Time out of rotation per host: p50 {:.2}s, p99 {:.2}s.",
            p50.as_secs_f64(),
            p99.as_secs_f64()
        );
    }
    let problems: Vec<_> = report
        .hosts
        .iter()
        .filter(|h| matches!(h.outcome, Some(HostOutcome::Failed | HostOutcome::Unreachable)))
        .collect();
    for host in &problems {
        let outcome = host.outcome.map_or_else(String::new, |o| o.to_string().to_uppercase());
        let attempts = match host.attempts {
            0 | 1 => String::new(),
            n => format!(" (attempt {n} of {n})"),
        };
        let _ = writeln!(out, "\n{} ({}) {outcome} during {}{attempts}", host.name, host.address, host.phase);
        let _ = writeln!(out, "  why: {}", host.error.as_deref().unwrap_or("no reason given"));
        let _ = writeln!(out, "  now: {}", host.rotation);
        if !host.last_output.is_empty() {
            let _ = writeln!(out, "  last output:");
            for line in &host.last_output {
                let _ = writeln!(out, "    {}", line.text);
            }
        }
    }
    let retried: Vec<String> = report
        .hosts
        .iter()
        .filter(|h| h.attempts > 1)
        .map(|h| match h.outcome {
            Some(HostOutcome::Succeeded) => format!("{} updated on attempt {}", h.name, h.attempts),
            Some(outcome) => format!("{} {outcome} on attempt {}", h.name, h.attempts),
            None => format!("{} still running attempt {}", h.name, h.attempts),
        })
        .collect();
    if !retried.is_empty() {
        let _ = writeln!(
            out,
            "\nTried again after ending unreachable (strategy.retry_unreachable): {}.",
            retried.join(", ")
        );
    }
    let out_of_rotation: Vec<String> =
        report.out_of_rotation().map(|h| format!("{} ({})", h.name, h.rotation)).collect();
    if !out_of_rotation.is_empty() {
        let _ = writeln!(
            out,
            "\nOut of rotation now: {}. Fix them and deploy again, or put them back by hand.",
            out_of_rotation.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_format() {
        assert_eq!(clock(Duration::from_millis(61_234)), "01:01.234");
    }
}
